"""Graph files: pixel and superpixel graphs saved for later scripts, loaded back safely.

Three formats, chosen by ``format`` (or the file suffix):

- ``"pyg"`` (``.pt``): the PyG ``Data`` as a dict of tensors (``edge_index``, ``edge_weight``,
  ``pos``, ``x`` …), so that ``torch.load(path, weights_only=True)`` reads it without trusting
  pickled classes; :func:`load_graph` turns it back into a ``Data``;
- ``"window"`` (``.pt``): a pixel graph in its windowed form (``weight``, ``offsets``,
  ``self_weight``, ``x``), about five times smaller than its edge list; loads as a
  :class:`~graphseg.WindowGraph`;
- ``"npz"`` (``.npz``): the edge list as NumPy arrays, for tools without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphseg import _checks
from graphseg._io import atomic_path, load_state
from graphseg.graph.superpixel import SuperpixelGraph
from graphseg.graph.window import WindowGraph

__all__ = ["GRAPH_FORMATS", "load_graph", "save_graph"]

GRAPH_FORMATS = ("pyg", "window", "npz")
_KIND = "graphseg_graph"


def _pyg(graph):
    if isinstance(graph, (WindowGraph, SuperpixelGraph)):
        return graph.to_pyg()
    if hasattr(graph, "edge_index") and hasattr(graph, "num_nodes"):
        return graph
    raise TypeError(f"graph must be a WindowGraph, a SuperpixelGraph or a PyG Data, got "
                    f"{type(graph).__name__}")


def save_graph(graph, path: str | os.PathLike, *, format: str | None = None) -> Path:
    """Writes ``graph`` to ``path`` atomically (no partial file on failure).

    Args:
        graph: a :class:`~graphseg.WindowGraph` (one image), a
            :class:`~graphseg.graph.SuperpixelGraph` or a PyG ``Data``.
        path: the file; its suffix picks the format when ``format`` is None (``.npz`` →
            ``"npz"``, otherwise ``"pyg"``).
        format: ``"pyg"``, ``"window"`` (WindowGraph only) or ``"npz"``.

    Returns:
        The path written.
    """
    path = Path(path)
    if format is None:
        format = "npz" if path.suffix == ".npz" else "pyg"
    _checks.check_choice("format", format, GRAPH_FORMATS)
    if format == "window":
        if not isinstance(graph, WindowGraph):
            raise TypeError(f"format='window' needs a WindowGraph, got {type(graph).__name__}; "
                            "use 'pyg' or 'npz'")
        state = {"kind": _KIND, "format": "window", "weight": graph.weight.detach().cpu(),
                 "offsets": graph.offsets.cpu()}
        if graph.self_weight is not None:
            state["self_weight"] = graph.self_weight.detach().cpu()
        if graph.x is not None:
            state["x"] = graph.x.detach().cpu()
    else:
        data = _pyg(graph)
        if getattr(data, "num_graphs", 1) != 1 and hasattr(data, "to_data_list"):
            raise ValueError("graph holds a batch of images: save one file per image")
        state = {key: value.detach().cpu() if isinstance(value, Tensor) else value
                 for key, value in data.to_dict().items()}
        state["num_nodes"] = int(data.num_nodes)
    with atomic_path(path) as temporary:
        if format == "npz":
            arrays = {key: value.numpy() for key, value in state.items()
                      if isinstance(value, Tensor)}
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, num_nodes=np.int64(state["num_nodes"]), **arrays)
        else:
            state.setdefault("kind", _KIND)
            state.setdefault("format", "pyg")
            torch.save(state, temporary)
    return path


def load_graph(path: str | os.PathLike):
    """Reads a file of :func:`save_graph`: a PyG ``Data`` (``"pyg"``, ``"npz"``) or a
    :class:`~graphseg.WindowGraph` (``"window"``). ``.pt`` files load with
    ``weights_only=True``; any other file is refused with a ``ValueError`` that says why."""
    from torch_geometric.data import Data

    path = Path(path)
    what = "graph file written by graphseg.save_graph"
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                state = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
        except Exception as error:  # zip, header and pickle errors alike
            raise ValueError(f"{path} is not a {what}: NumPy could not read it "
                             f"({type(error).__name__}: {error})") from None
        if "num_nodes" not in state or "edge_index" not in state:
            raise ValueError(f"{path} is not a {what}: it lacks num_nodes or edge_index "
                             f"(holds {sorted(state)})")
        num_nodes = int(state.pop("num_nodes"))
        return Data(num_nodes=num_nodes, **state)
    state = load_state(path, what)
    if state.get("kind") != _KIND or state.get("format") not in ("pyg", "window"):
        raise ValueError(f"{path} is not a {what}: its 'kind' and 'format' entries are "
                         f"{state.get('kind')!r} and {state.get('format')!r}")
    try:
        if state["format"] == "window":
            return WindowGraph(state["weight"], state["offsets"],
                               self_weight=state.get("self_weight"), x=state.get("x"))
        fields = {key: value for key, value in state.items() if key not in ("kind", "format")}
        if not isinstance(fields.get("edge_index"), Tensor):
            raise ValueError("it has no edge_index tensor")
        return Data(**fields)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid {what}: {error}") from None
