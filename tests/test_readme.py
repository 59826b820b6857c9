"""The README's Python examples run as written, and every ``graphseg.NAME`` it mentions exists
(a name written as top-level that is not, such as ``graphseg.save_graph`` once, fails here)."""

import re
from pathlib import Path

import graphseg

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_examples_run_in_order():
    # the examples build on each other, as a reader runs them
    namespace: dict = {}
    blocks = [part.split("```")[0] for part in README.split("```python")[1:]]
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md python example {index}", "exec"), namespace)
    assert namespace["mask"].shape == (512, 512)


def test_every_graphseg_name_in_the_readme_exists():
    names = set(re.findall(r"\bgraphseg\.([A-Za-z_][\w.]*)", README))
    assert {"pixel_graph", "harmonic"} <= {n.split(".")[0] for n in names}
    for dotted in sorted(names):
        target = graphseg
        for part in dotted.rstrip(".").split("."):
            assert hasattr(target, part), f"README mentions graphseg.{dotted}"
            target = getattr(target, part)
