"""The pinned set (constraints.txt, what `make` installs) covers every package the project
imports and every dependency of graphseg[test], and in a `make` environment it is the installed
set. Nothing is installed here: the checks read the sources and the installed metadata."""

import ast
import importlib.metadata as metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"graphseg", "graphseg_ext"}
# imported only inside the functions that need them, with an install hint: module -> extra
# (None: detected when present, in no extra)
OPTIONAL = {"dgl": "dgl", "torch_scatter": "scatter", "pyamg": "bench", "pydensecrf": "bench",
            "fast_slic": None}
STAMP = ".graphseg-installed"  # written by the Makefile once it has installed the pins


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def _imports(paths) -> dict[str, set[str]]:
    """Third-party top-level modules imported by the files, with the files importing each."""
    local = {path.stem for folder in ("tests", "benchmarks")
             for path in (ROOT / folder).rglob("*.py")}
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY | local:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _extras() -> set[str]:
    return set(metadata.metadata("graphseg").get_all("Provides-Extra") or [])


def test_every_import_is_pinned_or_an_optional_extra():
    pins, extras = _pins(), _extras()
    distributions = metadata.packages_distributions()
    files = [*(ROOT / "graphseg").rglob("*.py"), *(ROOT / "graphseg_ext").rglob("*.py"),
             *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
             ROOT / "setup.py"]
    imports = _imports(files)
    assert {"torch", "numpy", "cv2", "PIL", "torch_geometric"} <= imports.keys()
    for module, where in sorted(imports.items()):
        if module in OPTIONAL:
            extra = OPTIONAL[module]
            assert extra is None or extra in extras, (module, extra)
            continue
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"{module} (imported by {sorted(where)[:3]}) is not installed"
        assert names & pins.keys(), (f"{module} (distribution {sorted(names)}, imported by "
                                     f"{sorted(where)[:3]}) is not pinned in constraints.txt")


def _closure(root: str, extras: set[str]) -> set[str]:
    """The installed distributions that ``root[extras]`` needs, transitively."""
    seen, todo = set(), [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if requirement.marker is not None and not any(requirement.marker.evaluate(e)
                                                          for e in environments):
                continue
            key = canonicalize_name(requirement.name)
            if key not in seen:
                seen.add(key)
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_the_dependencies_of_graphseg_test_docs_are_pinned_and_installed_at_their_pins():
    pins = _pins()
    needed = _closure("graphseg", {"test", "docs"})
    assert {"torch", "numpy", "pytest"} <= needed
    unpinned = sorted(needed - pins.keys())
    assert not unpinned, f"constraints.txt lacks {unpinned}: run make lock"
    if not (Path(sys.prefix) / STAMP).exists():
        pytest.skip("not an environment installed by make from constraints.txt")
    for name in sorted(needed - {"torch"}):  # TORCH= may name another torch on purpose
        assert metadata.version(name) == pins[name], name
