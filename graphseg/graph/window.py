"""The windowed pixel graph (DESIGN §3).

A pixel graph whose edges all come from one table of K offsets is stored densely:
``weight[b, k, y, x]`` is the weight of the edge between pixel p = (y, x) and its neighbour
p + o_k. ``aggregate`` computes ``y_p = Σ_k w_k(p) v(p + o_k) + s(p) v(p)``: row p of the adjacency
matrix holds pixel p's window. Edges leaving the image do not exist (the ``drop`` border rule) and
their weights are 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import opposite_offsets, window_offsets
from graphseg.ops import window_aggregate_transpose
from graphseg.ops.reference import gather_neighbours, valid_box
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked

__all__ = ["KERNELS", "WindowGraph", "feature_graph", "pixel_graph"]

KERNELS = ("gaussian", "l1", "cosine")
NORMALIZATIONS = ("row", "sym", "col")
DENSE_MAX_ENTRIES = 2**26
# (B, K, H, W) weights above this (8 GiB in float32) come from a window as wide as the image: a
# dense graph in disguise, refused before allocation
WINDOW_MAX_ENTRIES = 2**31


@functools.lru_cache(maxsize=8)
def _valid_mask(height: int, width: int, offsets: tuple, device: str) -> Tensor:
    """``(K, H, W)`` bool: whether p + o_k lies inside the image."""
    mask = torch.zeros(len(offsets), height, width, dtype=torch.bool)
    for k, (dy, dx) in enumerate(offsets):
        y0, y1, x0, x1 = valid_box(dy, dx, height, width)
        if y1 > y0 and x1 > x0:
            mask[k, y0:y1, x0:x1] = True
    return mask.to(device)


@functools.lru_cache(maxsize=4)  # one 512x512 disk(5) layout holds ~340 MB
def _edge_layout(height: int, width: int, offsets: tuple, with_self: bool):
    """Edges of one image in target-sorted order, built without a sort.

    Entries are emitted pixel by pixel (row-major), the self loop first, then offset by offset.
    Returns ``valid``, a bool mask over the flattened ``(H, W, K')`` weights (K' = K + with_self),
    and the ``(2, E)`` edge index (source, target) of the kept entries."""
    table = ([(0, 0)] if with_self else []) + list(offsets)
    delta = torch.tensor([dy * width + dx for dy, dx in table], dtype=torch.int64)
    valid = _valid_mask(height, width, tuple(table), "cpu").permute(1, 2, 0).reshape(-1)
    pixels = torch.arange(height * width, dtype=torch.int64).unsqueeze(1)
    target = pixels.expand(-1, len(table)).reshape(-1)[valid]
    source = (pixels + delta).reshape(-1)[valid]
    return valid, torch.stack([source, target])


def _power(weight: Tensor, beta: float) -> Tensor:
    """``weight ** beta``; a power of two (β = 8, 16, … as the presets use) by squaring in place
    when no gradient is needed: three multiplications for β = 8 cost a third of ``pow``'s
    exp/log per element (84 MB of weights: 30 against 50 ms on 2 cores). With β < 1 the
    gradient at a zero weight (a dropped edge) is 0 rather than ``pow``'s ∞ · 0 = NaN."""
    if torch.is_grad_enabled() and weight.requires_grad:
        if beta >= 1:
            return weight.pow(beta)
        positive = weight > 0
        return torch.where(positive, torch.where(positive, weight, 1.0).pow(beta), 0.0)
    squarings = math.log2(beta)
    if beta < 2 or squarings != int(squarings):
        return weight.pow(beta)
    out = weight * weight
    for _ in range(int(squarings) - 1):
        out.mul_(out)
    return out


class WindowGraph:
    r"""A batch of pixel graphs whose edges come from one table of window offsets.

    Args:
        weight: ``(B, K, H, W)`` floating-point edge weights; ``weight[b, k, y, x]`` belongs to
            the edge between (y, x) and (y + dy_k, x + dx_k). Entries whose neighbour leaves the
            image are ignored (set to 0).
        offsets: ``(K, 2)`` int64 (dy, dx), see :func:`graphseg.window_offsets`.
        self_weight: weight of each pixel's self loop: None (no self loops), a number, or a
            ``(B, 1, H, W)`` / ``(B, H, W)`` tensor.
        x: optional ``(B, F, H, W)`` node features, carried into :meth:`to_pyg`.

    Shapes:
        weight ``(B, K, H, W)``; ``num_nodes`` = B·H·W over the batch.

    Example:
        >>> g = WindowGraph(torch.rand(1, 8, 4, 5), window_offsets(1, "square"))
        >>> g.aggregate(torch.rand(1, 3, 4, 5)).shape
        torch.Size([1, 3, 4, 5])
    """

    def __init__(
        self,
        weight: Tensor,
        offsets: Tensor,
        *,
        self_weight: float | Tensor | None = None,
        x: Tensor | None = None,
    ) -> None:
        _checks.check_tensor4d("weight", weight, what="(B, K, H, W)")
        offsets = _checks.check_offsets(offsets)
        if weight.shape[1] != offsets.shape[0]:
            raise ValueError(f"weight has {weight.shape[1]} offsets (dim 1) but offsets has "
                             f"{offsets.shape[0]} rows")
        batch, _, height, width = weight.shape
        mask = _valid_mask(height, width, tuple(map(tuple, offsets.tolist())), str(weight.device))
        if not bool(mask.all()):
            weight = weight * mask
        self.weight = weight
        self.offsets = offsets
        self.self_weight = self._check_self_weight(self_weight, weight)
        if x is not None:
            _checks.check_tensor4d("x", x, what="(B, F, H, W)")
            _checks.same_batch("x", x, "weight", weight)
        self.x = x

    @staticmethod
    def _check_self_weight(self_weight, weight: Tensor) -> Tensor | None:
        batch, _, height, width = weight.shape
        if self_weight is None:
            return None
        if isinstance(self_weight, (int, float)) and not isinstance(self_weight, bool):
            if not math.isfinite(self_weight):
                raise ValueError(f"self_weight must be finite, got {self_weight}")
            return weight.new_full((1, 1, 1, 1), float(self_weight)).expand(
                batch, 1, height, width)
        if not isinstance(self_weight, Tensor):
            raise TypeError(f"self_weight must be None, a number or a tensor, got "
                            f"{type(self_weight).__name__}")
        if self_weight.dim() == 3:
            self_weight = self_weight.unsqueeze(1)
        if tuple(self_weight.shape) != (batch, 1, height, width):
            raise ValueError(f"self_weight must have shape ({batch}, 1, {height}, {width}), got "
                             f"{tuple(self_weight.shape)}")
        if self_weight.device != weight.device:
            raise ValueError(f"self_weight must be on the weight's device {weight.device}, got "
                             f"{self_weight.device}")
        _checks.check_finite("self_weight", self_weight)
        return self_weight.to(weight.dtype)

    # -- shape -----------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.weight.shape[0]

    @property
    def num_offsets(self) -> int:
        return self.weight.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def num_nodes(self) -> int:
        """Pixels over the whole batch."""
        height, width = self.image_size
        return self.batch_size * height * width

    @property
    def num_edges(self) -> int:
        """In-image window edges over the whole batch (self loops not counted)."""
        return self.batch_size * int(self._mask().sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by the weights (and self weights and node features when stored)."""
        total = self.weight.numel() * self.weight.element_size()
        if self.self_weight is not None and self.self_weight.stride(0) != 0:
            total += self.self_weight.numel() * self.self_weight.element_size()
        if self.x is not None:
            total += self.x.numel() * self.x.element_size()
        return total

    def _offsets_key(self) -> tuple:
        return tuple(map(tuple, self.offsets.tolist()))

    def _mask(self) -> Tensor:
        height, width = self.image_size
        return _valid_mask(height, width, self._offsets_key(), str(self.weight.device))

    def _with(self, weight: Tensor, self_weight: Tensor | None) -> WindowGraph:
        graph = WindowGraph.__new__(WindowGraph)
        graph.weight, graph.offsets, graph.self_weight, graph.x = (
            weight, self.offsets, self_weight, self.x)
        return graph

    def __repr__(self) -> str:
        height, width = self.image_size
        return (f"WindowGraph(batch={self.batch_size}, size={height}x{width}, "
                f"offsets={self.num_offsets}, edges={self.num_edges}, "
                f"self_loops={self.self_weight is not None}, dtype={self.weight.dtype}, "
                f"device={self.weight.device})")

    def to(self, *args, **kwargs) -> WindowGraph:
        """Moves or casts the weights like :meth:`torch.Tensor.to`."""
        graph = self._with(self.weight.to(*args, **kwargs),
                           None if self.self_weight is None
                           else self.self_weight.to(*args, **kwargs))
        graph.x = None if self.x is None else self.x.to(*args, **kwargs)
        return graph

    # -- algebra ---------------------------------------------------------------------------

    def degree(self) -> Tensor:
        """Row sums ``d(p) = Σ_k w_k(p) + s(p)`` as a ``(B, H, W)`` tensor."""
        degree = self.weight.sum(1)
        if self.self_weight is not None:
            degree = degree + self.self_weight[:, 0]
        return degree

    def in_degree(self) -> Tensor:
        """Column sums ``Σ_p A[p, q]`` as a ``(B, H, W)`` tensor (equal to :meth:`degree` for a
        symmetric graph)."""
        ones = self.weight.new_ones(self.batch_size, 1, *self.image_size)
        degree = window_aggregate_transpose(self.weight, ones, self.offsets)[:, 0]
        if self.self_weight is not None:
            degree = degree + self.self_weight[:, 0]
        return degree

    def normalize(self, mode: str = "row") -> WindowGraph:
        r"""Returns the normalised graph.

        - ``"row"``: :math:`D^{-1} A` (rows sum to 1; a random-walk transition matrix).
        - ``"sym"``: :math:`D^{-1/2} A D^{-1/2}` (label spreading, spectral methods).
        - ``"col"``: :math:`A D_{in}^{-1}` (columns sum to 1), the psa/irn convention.

        Pixels of degree 0 keep zero weights instead of dividing by zero.
        """
        _checks.check_choice("mode", mode, NORMALIZATIONS)
        degree = self.in_degree() if mode == "col" else self.degree()
        inverse = torch.where(degree > 0, 1.0 / degree.clamp_min(torch.finfo(degree.dtype).tiny),
                              torch.zeros_like(degree))
        if mode == "row":
            weight = self.weight * inverse.unsqueeze(1)
        elif mode == "col":
            weight = self.weight * gather_neighbours(inverse.unsqueeze(1), self.offsets)
        else:
            root = inverse.sqrt()
            weight = (self.weight * root.unsqueeze(1)
                      * gather_neighbours(root.unsqueeze(1), self.offsets))
        self_weight = (None if self.self_weight is None
                       else self.self_weight * inverse.unsqueeze(1))
        return self._with(weight, self_weight)

    def without_self_loops(self) -> WindowGraph:
        """The graph with its self weights removed (as in the Laplacian)."""
        return self._with(self.weight, None)

    def symmetrize(self) -> WindowGraph:
        """``(A + Aᵀ) / 2``: each weight averaged with its reverse edge. Needs an offset table
        closed under negation (every family of :func:`window_offsets` is)."""
        opposite = opposite_offsets(self.offsets).tolist()
        if -1 in opposite:
            raise ValueError("symmetrize() needs an offset table closed under negation; offset "
                             f"{self.offsets[opposite.index(-1)].tolist()} has no opposite")
        reverse = gather_neighbours(self.weight, self.offsets, opposite)
        return self._with((self.weight + reverse) / 2, self.self_weight)

    def power(self, beta: float) -> WindowGraph:
        """Element-wise power ``A^β`` of every weight (AffinityNet's β sharpening)."""
        _checks.check_positive("beta", beta)
        self_weight = None if self.self_weight is None else _power(self.self_weight, beta)
        return self._with(_power(self.weight, beta), self_weight)

    def aggregate(self, values: Tensor) -> Tensor:
        r"""The mat-vec :math:`y = A v`: ``y_p = Σ_k w_k(p) v(p + o_k) + s(p) v(p)``.

        Shapes:
            values ``(B, C, H, W)`` → ``(B, C, H, W)``.
        """
        _checks.check_tensor4d("values", values)
        _checks.same_batch("values", values, "graph weight", self.weight)
        return self._aggregate(values.to(self.weight.dtype))

    def _aggregate(self, values: Tensor) -> Tensor:
        """:meth:`aggregate` without input checks, for the propagation loops."""
        out = aggregate_unchecked(self.weight, values, self.offsets)
        if self.self_weight is not None:
            out = out + self.self_weight * values
        return out

    # -- conversions -----------------------------------------------------------------------

    def _image_edges(self, remove_zeros: bool) -> list[tuple[Tensor, Tensor]]:
        """Per image: the ``(2, E)`` edge index (source, target; nodes numbered y·W + x, sorted
        by target) and the ``(E,)`` weights."""
        height, width = self.image_size
        valid, edge_index = _edge_layout(height, width, self._offsets_key(),
                                         self.self_weight is not None)
        weights = self.weight
        if self.self_weight is not None:
            weights = torch.cat([self.self_weight.expand(-1, 1, -1, -1), weights], dim=1)
        valid = valid.to(weights.device)
        edge_index = edge_index.to(weights.device)
        edges = []
        for b in range(self.batch_size):
            weight = weights[b].permute(1, 2, 0).reshape(-1)[valid]
            if remove_zeros:
                keep = weight != 0
                edges.append((edge_index[:, keep], weight[keep]))
            else:
                edges.append((edge_index.clone(), weight))
        return edges

    def _edges(self, remove_zeros: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(source, target, weight) over the batch, image b's nodes numbered from b·H·W."""
        nodes = self.image_size[0] * self.image_size[1]
        edges = self._image_edges(remove_zeros)
        edge_index = torch.cat([index + b * nodes for b, (index, _) in enumerate(edges)], dim=1)
        return edge_index[0], edge_index[1], torch.cat([weight for _, weight in edges])

    def _pos(self) -> Tensor:
        height, width = self.image_size
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).to(self.weight.dtype)
        return pos.to(self.weight.device)

    def to_pyg(self, *, remove_zeros: bool = False):
        """Converts to PyTorch Geometric.

        Follows PyG's ``source_to_target`` flow: ``edge_index[0]`` is the neighbour p + o_k (source
        j), ``edge_index[1]`` the pixel p (target i), so a sum-aggregating ``MessagePassing`` of
        ``edge_weight · x_j`` equals :meth:`aggregate`. Edges come sorted by target without a sort;
        the index is cached per (H, W, offsets). Self weights become self loops. ``pos`` holds
        (x, y) pixel coordinates (y pointing down), ``x`` the node features when the graph has them.

        Returns:
            ``torch_geometric.data.Data`` for a batch of one image, a ``Batch`` otherwise.
        """
        from torch_geometric.data import Batch, Data

        height, width = self.image_size
        pos = self._pos()
        graphs = []
        for b, (edge_index, weight) in enumerate(self._image_edges(remove_zeros)):
            data = Data(edge_index=edge_index, edge_weight=weight, pos=pos,
                        num_nodes=height * width)
            if self.x is not None:
                data.x = self.x[b].reshape(self.x.shape[1], -1).t()
            graphs.append(data)
        return graphs[0] if self.batch_size == 1 else Batch.from_data_list(graphs)

    def _crow(self, target: Tensor) -> Tensor:
        counts = torch.bincount(target, minlength=self.num_nodes)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def to_sparse_csr(self, *, remove_zeros: bool = False) -> Tensor:
        """The ``(N, N)`` adjacency as a torch sparse CSR tensor with ``A @ v == aggregate(v)``
        (N = B·H·W; a batch is block-diagonal)."""
        source, target, weight = self._edges(remove_zeros)
        return torch.sparse_csr_tensor(self._crow(target), source, weight,
                                       size=(self.num_nodes, self.num_nodes),
                                       check_invariants=False)

    def to_scipy(self, *, remove_zeros: bool = False):
        """The ``(N, N)`` adjacency as a ``scipy.sparse.csr_matrix`` (same layout as
        :meth:`to_sparse_csr`); float16 and bfloat16 weights become float32, which SciPy
        holds."""
        import scipy.sparse

        source, target, weight = self._edges(remove_zeros)
        if weight.dtype in (torch.float16, torch.bfloat16):
            weight = weight.float()
        return scipy.sparse.csr_matrix(
            (weight.detach().cpu().numpy(), source.cpu().numpy(),
             self._crow(target).cpu().numpy()),
            shape=(self.num_nodes, self.num_nodes))

    def to_networkx(self, *, directed: bool = True, remove_zeros: bool = False):
        """A ``networkx.DiGraph`` with edges source → target carrying ``weight`` and nodes
        carrying ``pos`` (x, y); ``directed=False`` gives an undirected ``Graph``."""
        import networkx as nx

        graph = nx.DiGraph() if directed else nx.Graph()
        height, width = self.image_size
        for node in range(self.num_nodes):
            rest = node % (height * width)
            graph.add_node(node, pos=(rest % width, rest // width))
        source, target, weight = self._edges(remove_zeros)
        graph.add_weighted_edges_from(zip(source.tolist(), target.tolist(),
                                          weight.detach().cpu().tolist(), strict=True))
        return graph

    def to_dgl(self, *, remove_zeros: bool = False):
        """A DGL graph with edges source → target and ``edata["weight"]``. DGL is optional."""
        try:
            import dgl
        except Exception as exc:  # DGL fails at import beside current torch releases
            raise ImportError(
                "to_dgl() needs DGL, which could not be imported "
                f"({type(exc).__name__}: {exc}). Install it with `pip install graphseg[dgl]` "
                "beside a torch release that DGL supports, or use to_pyg()."
            ) from exc
        source, target, weight = self._edges(remove_zeros)
        graph = dgl.graph((source, target), num_nodes=self.num_nodes)
        graph.edata["weight"] = weight
        return graph

    def to_dense(self, *, max_entries: int = DENSE_MAX_ENTRIES) -> Tensor:
        """The ``(N, N)`` dense adjacency, refused above ``max_entries`` entries."""
        entries = self.num_nodes**2
        if entries > max_entries:
            gib = entries * self.weight.element_size() / 2**30
            raise ValueError(
                f"to_dense() would allocate a {self.num_nodes}x{self.num_nodes} matrix "
                f"({gib:.1f} GiB), above max_entries={max_entries}; use aggregate(), "
                "to_sparse_csr() or to_scipy() instead")
        return self.to_sparse_csr().to_dense()


# -- construction ----------------------------------------------------------------------------


WINDOW_PEAK_COPIES = 4
"""Peak memory of building a windowed graph, in copies of its weights: distances, exponent
and result (measured: 3.4–3.6 times the weights on the astronaut, r = 5 and 12)."""
DENSE_FLOOR_ENTRIES = 2**24
"""Windows below this many weights are never called dense (tiny images, small windows)."""


def check_window_size(batch: int, num_offsets: int, height: int, width: int,
                      advice: str, *, dtype: torch.dtype = torch.float32,
                      device=None) -> None:
    """Refuses (B, K, H, W) weights before they are allocated: above ``WINDOW_MAX_ENTRIES``
    (indexing), with more neighbours per pixel than the image has pixels (a dense kernel
    stored less compactly than the dense matrix), or with an estimated peak above
    :func:`graphseg._checks.memory_limit`."""
    entries = batch * num_offsets * height * width
    if entries > WINDOW_MAX_ENTRIES:
        raise ValueError(
            f"the window of {num_offsets} offsets over {batch} image(s) of {height}x{width} would "
            f"hold {entries:.3g} weights, above WINDOW_MAX_ENTRIES={WINDOW_MAX_ENTRIES}: {advice}")
    if num_offsets > height * width and entries > DENSE_FLOOR_ENTRIES:
        raise ValueError(
            f"the window of {num_offsets} offsets is larger than the {height}x{width} image "
            f"({height * width} pixels): its weights would exceed the dense matrix: {advice}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    _checks.check_memory(WINDOW_PEAK_COPIES * entries * itemsize,
                         f"a window of {num_offsets} offsets over {batch} image(s) of "
                         f"{height}x{width}", advice, device)


def _resolve_offsets(radius, shape, offsets, dilations, height: int, width: int) -> Tensor:
    if offsets is not None:
        return _checks.check_offsets(offsets)
    if shape == "rings":
        return window_offsets(None, "rings", dilations)
    offsets = window_offsets(radius, shape)
    fits = (offsets[:, 0].abs() < height) & (offsets[:, 1].abs() < width)
    if not bool(fits.any()):
        raise ValueError(f"radius={radius} is too large for the {height}x{width} image: no "
                         "window neighbour lies inside it")
    return offsets


def _kernel_weight(features: Tensor, offsets: Tensor, kernel: str, *, sigma_xy: float,
                   sigma_rgb: float) -> Tensor:
    if kernel == "cosine":
        unit = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return affinity_unchecked(unit, offsets, "dot")
    if kernel == "l1":
        distance = affinity_unchecked(features, offsets, "l1") / features.shape[1]
        return torch.exp(-distance)
    squared = affinity_unchecked(features, offsets, "l2")
    position = offsets.square().sum(1).to(features.dtype).to(features.device)
    # 2σ² as s·s (no OverflowError for a huge σ) and at least the dtype's smallest normal, so
    # that a tiny σ gives exp(-0/tiny) = 1 for equal colours instead of exp(-0/0) = NaN
    tiny = torch.finfo(features.dtype).tiny
    return torch.exp(-position.view(1, -1, 1, 1) / max(2 * sigma_xy * sigma_xy, tiny)
                     - squared / max(2 * sigma_rgb * sigma_rgb, tiny))


def _build(features: Tensor, *, radius, shape, offsets, dilations, kernel, sigma_xy, sigma_rgb,
           threshold, self_weight, x=None) -> WindowGraph:
    _checks.check_choice("kernel", kernel, KERNELS)
    if kernel == "gaussian":
        _checks.check_positive("sigma_xy", sigma_xy)
        _checks.check_positive("sigma_rgb", sigma_rgb)
    height, width = features.shape[2:]
    offsets = _resolve_offsets(radius, shape, offsets, dilations, height, width)
    check_window_size(features.shape[0], offsets.shape[0], height, width,
                      "lower radius, or use shape='rings' with a few dilations for long-range "
                      "edges", dtype=features.dtype, device=features.device)
    weight = _kernel_weight(features, offsets, kernel,
                            sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    if threshold is not None:
        _checks.check_positive("threshold", threshold, allow_zero=True)
        weight = torch.where(weight > threshold, weight, torch.zeros_like(weight))
    return WindowGraph(weight, offsets, self_weight=self_weight, x=x)


def pixel_graph(
    image,
    *,
    radius: int = 5,
    shape: str = "disk",
    offsets: Tensor | None = None,
    dilations: Sequence[int] | None = None,
    kernel: str = "gaussian",
    sigma_xy: float = 6.0,
    sigma_rgb: float = 0.1,
    normalize: str | None = None,
    threshold: float | None = None,
    self_weight: float | Tensor | None = None,
) -> WindowGraph:
    r"""Builds a windowed pixel graph from an image's colours.

    Kernels between pixel i and its window neighbour j (DESIGN §3):

    - ``"gaussian"`` (default): colour and position bandwidth with squared norms (thesis Eq. 2.18,
      4.6; Eq. 3.13 prints them unsquared, a misprint)

      .. math::
          w_{ij} = \exp\Big(-\frac{\|p_i - p_j\|^2}{2\sigma_{xy}^2}
                            - \frac{\|c_i - c_j\|^2}{2\sigma_{rgb}^2}\Big)

      Defaults σ_xy = 6 and σ_rgb = 0.1 are A²GNN's L_Ar values (thesis §3.3.3), where colour is
      ImageNet-normalised: pass ``normalize="imagenet"`` to reproduce those units exactly. Other
      sources: RRM's dense energy uses σ_d = 100, σ_r = 15 on 0–255 colour (σ_rgb = 15/255 here);
      DFR σ₁ = 6, σ₂ = 0.5 (thesis §4.3).
    - ``"l1"``: :math:`\exp(-\tfrac{1}{C}\|c_i - c_j\|_1)` (AffinityNet, A²GNN feature affinity).
    - ``"cosine"``: :math:`\cos(c_i, c_j)`.

    Args:
        image: ``(B, 3, H, W)`` or ``(3, H, W)`` float tensor in [0, 1], or any image form of
            docs/images.md (a channel-last numpy array or PIL image, uint8 divided by 255).
        radius: window radius in pixels (ignored when ``offsets`` is given or for ``"rings"``).
        shape: offset family, see :func:`graphseg.window_offsets`.
        offsets: explicit ``(K, 2)`` offset table.
        dilations: ring distances for ``shape="rings"``.
        kernel: ``"gaussian"``, ``"l1"`` or ``"cosine"``.
        sigma_xy: position bandwidth in pixels (Gaussian kernel).
        sigma_rgb: colour bandwidth in the units of the (normalised) image (Gaussian kernel).
        normalize: None (colours in [0, 1]) or ``"imagenet"`` (mean/std normalisation of the
            A²GNN and AffinityNet code).
        threshold: keep only weights above it (A²GNN Eq. 3.14, σ = 1e-3; the paper's rule, the
            official code keeps every window entry).
        self_weight: self-loop weight (None: no self loops).

    Returns:
        :class:`WindowGraph` with weights ``(B, K, H, W)``.

    Example:
        >>> g = pixel_graph(torch.rand(3, 32, 32), radius=5)
        >>> g.weight.shape
        torch.Size([1, 80, 32, 32])
    """
    image = _checks.normalize_image(_checks.as_image_batch(image, "image"), normalize)
    return _build(image, radius=radius, shape=shape, offsets=offsets, dilations=dilations,
                  kernel=kernel, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, threshold=threshold,
                  self_weight=self_weight)


def feature_graph(
    features: Tensor,
    *,
    radius: int = 5,
    shape: str = "disk",
    offsets: Tensor | None = None,
    dilations: Sequence[int] | None = None,
    kind: str = "l1",
    threshold: float | None = None,
    self_weight: float | Tensor | None = None,
    keep_features: bool = False,
) -> WindowGraph:
    r"""Builds a windowed graph from CNN feature maps.

    ``kind="l1"``: :math:`D_{ij} = \exp(-\|f_i - f_j\|_1 / d)` with d the channel count
    (AffinityNet; A²GNN Eq. 3.14 before thresholding). ``kind="cosine"``: :math:`\cos(f_i, f_j)`
    (A²GNN attention). Differentiable in ``features``.

    Args:
        features: ``(B, C, H, W)`` float feature maps.
        radius, shape, offsets, dilations: the window, as in :func:`pixel_graph`.
        kind: ``"l1"`` or ``"cosine"``.
        threshold: keep only weights above it (A²GNN Eq. 3.14 uses 1e-3).
        self_weight: self-loop weight (AffinityNet: 1, the affinity of a pixel with itself).
        keep_features: store ``features`` as node features ``x`` of the graph.

    Returns:
        :class:`WindowGraph` with weights ``(B, K, H, W)``.
    """
    _checks.check_tensor4d("features", features)
    _checks.check_choice("kind", kind, ("l1", "cosine"))
    return _build(features, radius=radius, shape=shape, offsets=offsets, dilations=dilations,
                  kernel=kind, sigma_xy=None, sigma_rgb=None, threshold=threshold,
                  self_weight=self_weight, x=features if keep_features else None)
