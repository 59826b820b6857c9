"""Sphinx configuration of graphseg's documentation (``make docs``).

Sphinx rather than MkDocs: graphseg's docstrings are written for autodoc and napoleon
(Google-style sections, ``.. math::`` blocks, ``:func:`` cross-references), which mkdocstrings
does not render. Pages are Markdown (MyST); the notebooks are executed and rendered with their
figures by myst-nb. The tables of methods, presets and command-line options are generated here
from the code (the registry of recipes, the presets, the argument parser), so they cannot fall
out of date.
"""

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import graphseg  # noqa: E402

project = "graphseg"
author = "the graphseg developers"
release = version = graphseg.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx.ext.viewcode", "myst_nb"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "README.md", "_generated/*.md"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shapes"]
html_theme = "furo"
html_title = f"graphseg {release}"
nitpicky = False
suppress_warnings = ["mystnb.unknown_mime_type"]
if (ROOT.parent / "shared" / "data").is_dir():  # the notebooks' data, when it is beside us
    os.environ.setdefault("GRAPHSEG_DATA", str(ROOT.parent / "shared" / "data"))


def _generate(app) -> None:
    """The generated pages: methods, presets, command line, and the notebooks."""
    from graphseg.cli import _parser
    from graphseg.pipelines import PRESET_SOURCES, PRESETS, source_preset
    from graphseg.pipelines.registry import methods_table

    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    (out / "methods.md").write_text(methods_table())
    for source in PRESET_SOURCES:
        rows = ["| weak kind | seeds | default method | finishing | recipe configs that "
                "differ from the recipes' defaults |", "|---|---|---|---|---|"]
        for weak in PRESETS:
            preset = source_preset(weak, source)
            configs = "<br>".join(f"`{c!r}`" for c in preset.configs) or "–"
            rows.append(f"| {weak} | `{preset.seeds!r}` | `{preset.method}` | "
                        f"`{preset.finish!r}` | {configs} |")
        (out / f"presets_{source}.md").write_text("\n".join(rows) + "\n")
    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = [f"```text\n{parser.format_help()}```\n"]
    for name, sub in commands.items():
        text.append(f"## graphseg {name}\n\n```text\n{sub.format_help()}```\n")
    (out / "cli.md").write_text("\n".join(text))
    notebooks = out / "notebooks"
    notebooks.mkdir(exist_ok=True)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copyfile(notebook, notebooks / notebook.name)


def setup(app):
    app.connect("builder-inited", _generate)
