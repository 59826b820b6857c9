"""The README's Python examples run as written, and every ``graphseg.NAME`` it mentions exists
(a name written as top-level that is not, such as ``graphseg.save_graph`` once, fails here)."""

import re
from pathlib import Path

import pytest

import graphseg

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("index", range(README.count("```python")))
def test_python_example_runs(index):
    block = README.split("```python")[index + 1].split("```")[0]
    namespace: dict = {}
    exec(compile(block, f"README.md python example {index}", "exec"), namespace)


def test_every_graphseg_name_in_the_readme_exists():
    names = set(re.findall(r"\bgraphseg\.([A-Za-z_][\w.]*)", README))
    assert {"pixel_graph", "harmonic"} <= {n.split(".")[0] for n in names}
    for dotted in sorted(names):
        target = graphseg
        for part in dotted.rstrip(".").split("."):
            assert hasattr(target, part), f"README mentions graphseg.{dotted}"
            target = getattr(target, part)
