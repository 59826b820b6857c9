"""Superpixel graphs (DESIGN §4).

Nodes are the regions of an over-segmentation (SLIC or Felzenszwalb), edges join regions that
touch. The adjacency comes from the unique label pairs of shifted label maps in a few vectorised
array operations; scikit-image's ``graph.rag_mean_color`` calls back into Python for every pixel.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

from graphseg import _checks

__all__ = [
    "CONNECTIVITIES",
    "EDGE_KERNELS",
    "FEATURE_NAMES",
    "SUPERPIXEL_METHODS",
    "WITH_FAST_SLIC",
    "SuperpixelGraph",
    "region_adjacency",
    "rgb_to_lab",
    "superpixel_graph",
    "superpixels",
]

SUPERPIXEL_METHODS = ("slic", "felzenszwalb")
EDGE_KERNELS = ("rgb", "lab", "feature", "boundary")
CONNECTIVITIES = (4, 8)
FEATURE_NAMES = ("red", "green", "blue", "lab_l", "lab_a", "lab_b", "x", "y", "size")
WITH_FAST_SLIC = importlib.util.find_spec("fast_slic") is not None

DEFAULT_SEGMENTS = 800
DEFAULT_BANDWIDTH = {"rgb": 0.1, "lab": 10.0, "boundary": 0.1}

# (dy, dx) shifts that visit every unordered pair of neighbouring pixels once.
_SHIFTS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}

# sRGB (D65) → XYZ, and the D65 white point with the 2° observer, as in skimage.color.rgb2lab.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def rgb_to_lab(image: Tensor) -> Tensor:
    """CIE Lab (D65, 2° observer) of a ``(B, 3, H, W)`` sRGB image in [0, 1].

    Same formula and constants as ``skimage.color.rgb2lab``, batched and differentiable.
    L lies in [0, 100], a and b roughly in [-128, 127].
    """
    linear = torch.where(image > 0.04045, ((image + 0.055) / 1.055).pow(2.4), image / 12.92)
    matrix = image.new_tensor(_RGB_TO_XYZ)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    xyz = xyz / image.new_tensor(_WHITE_D65).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12).pow(1 / 3), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness, a, b], dim=1)


# -- segmentation ----------------------------------------------------------------------------


def _fast_slic(rgb: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    import cv2
    from fast_slic import Slic

    # fast-slic clusters the raw channels; Lab matches scikit-image's convert2lab default.
    lab = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB))
    return np.asarray(Slic(num_components=n_segments, compactness=compactness).iterate(lab))


def superpixels(
    image,
    *,
    method: str = "slic",
    n_segments: int | None = None,
    compactness: float = 10.0,
    sigma: float | None = None,
    scale: float = 100.0,
    min_size: int = 50,
    use_fast_slic: bool | None = None,
) -> Tensor:
    """Over-segments each image of a batch into superpixels.

    Args:
        image: ``(B, 3, H, W)`` / ``(3, H, W)`` float in [0, 1], or any image form of
            docs/images.md.
        method: ``"slic"`` (k-means in Lab + position; Achanta et al., TPAMI 2012,
            DOI 10.1109/TPAMI.2012.120) or ``"felzenszwalb"`` (graph-based merging;
            Felzenszwalb & Huttenlocher, IJCV 2004, DOI 10.1023/B:VISI.0000022288.19776.77).
        n_segments: approximate number of SLIC regions (default 800). Felzenszwalb has no target
            count: its region size follows ``scale`` and ``min_size``, so giving ``n_segments``
            with it is an error.
        compactness: SLIC balance of colour against position (higher: squarer regions).
        sigma: Gaussian pre-smoothing width (default 0 for SLIC, 0.8 for Felzenszwalb, the
            scikit-image defaults).
        scale: Felzenszwalb's observation scale (higher: larger regions).
        min_size: Felzenszwalb's smallest region in pixels.
        use_fast_slic: SLIC through fast-slic (Lab input, much faster) instead of scikit-image.
            None: fast-slic when it is installed (:data:`WITH_FAST_SLIC`).

    Returns:
        ``(B, H, W)`` int64 region labels, numbered 0..n_b−1 in each image.
    """
    image = _checks.as_image_batch(image, "image", channels=3)
    _checks.check_choice("method", method, SUPERPIXEL_METHODS)
    if method == "felzenszwalb" and n_segments is not None:
        raise ValueError("n_segments applies to method='slic' only; Felzenszwalb's region size "
                         f"is set by scale and min_size, got n_segments={n_segments!r}")
    n_segments = DEFAULT_SEGMENTS if n_segments is None else n_segments
    _checks.check_positive("n_segments", n_segments, integer=True)
    _checks.check_positive("compactness", compactness)
    if sigma is not None:
        _checks.check_positive("sigma", sigma, allow_zero=True)
    if method == "felzenszwalb":
        _checks.check_positive("scale", scale)
        _checks.check_positive("min_size", min_size, integer=True)
    if use_fast_slic is None:
        use_fast_slic = WITH_FAST_SLIC and method == "slic"
    if use_fast_slic and not WITH_FAST_SLIC:
        raise ImportError("use_fast_slic=True needs fast-slic: `pip install fast-slic`")

    from skimage import segmentation

    pixels = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    labels = []
    for rgb in pixels.permute(0, 2, 3, 1).cpu().numpy():
        if method == "felzenszwalb":
            region = segmentation.felzenszwalb(rgb, scale=scale, min_size=min_size,
                                               sigma=0.8 if sigma is None else sigma)
        elif use_fast_slic:
            region = _fast_slic(rgb, n_segments, compactness)
        else:
            region = segmentation.slic(rgb, n_segments=n_segments, compactness=compactness,
                                       sigma=0 if sigma is None else sigma, start_label=0,
                                       channel_axis=-1)
        labels.append(_contiguous(np.asarray(region, dtype=np.int64)))
    return torch.from_numpy(np.stack(labels)).to(image.device)


def _contiguous(labels: np.ndarray) -> np.ndarray:
    """Renumbers the labels present to 0..n−1 keeping their order (a lookup table, no sort,
    unless the label values are sparse)."""
    if labels.size and int(labels.max()) > 4 * labels.size:
        return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    counts = np.bincount(labels.reshape(-1))
    present = counts > 0
    if present.all():
        return labels
    return (np.cumsum(present) - 1)[labels]


# -- adjacency -------------------------------------------------------------------------------


def _shifted(dy: int, dx: int, height: int, width: int):
    """Slices (rows, columns) of the pixels p and of their neighbours p + (dy, dx), dy >= 0."""
    cols_p = slice(max(0, -dx), width - max(0, dx))
    cols_q = slice(max(0, dx), width + min(0, dx))
    return (slice(0, height - dy), cols_p), (slice(dy, height), cols_q)


def _boundary_pairs(labels: np.ndarray, connectivity: int, strength: np.ndarray | None):
    """Every pair of neighbouring pixels with different labels in one ``(H, W)`` map.

    Returns the smaller and larger label of each pair and, when ``strength`` (an ``(H, W, C)``
    array) is given, the Euclidean distance of its values across the pair."""
    height, width = labels.shape
    low, high, contrast = [], [], []
    for dy, dx in _SHIFTS[connectivity]:
        if dy >= height or abs(dx) >= width:
            continue
        at_p, at_q = _shifted(dy, dx, height, width)
        a, b = labels[at_p], labels[at_q]
        cut = a != b
        a, b = a[cut], b[cut]
        low.append(np.minimum(a, b))
        high.append(np.maximum(a, b))
        if strength is not None:
            diff = strength[at_p][cut] - strength[at_q][cut]
            contrast.append(np.sqrt((diff * diff).sum(-1)))
    if not low:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, None if strength is None else np.zeros(0)
    return (np.concatenate(low), np.concatenate(high),
            np.concatenate(contrast) if strength is not None else None)


def _unique_pairs(low: np.ndarray, high: np.ndarray, num_labels: int, values=None):
    """Unique (low, high) pairs sorted lexicographically, with the count of each and the sum of
    ``values`` over each."""
    key = low * num_labels + high
    if num_labels * num_labels <= max(4 * key.size, 1 << 22):
        # a dense bincount avoids the sort when the label space is small
        counts = np.bincount(key, minlength=num_labels * num_labels)
        unique = np.flatnonzero(counts)
        counts = counts[unique]
        sums = (None if values is None
                else np.bincount(key, weights=values, minlength=num_labels**2)[unique])
    else:
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        sums = None if values is None else np.bincount(inverse, weights=values)
    return unique // num_labels, unique % num_labels, counts, sums


def region_adjacency(
    labels, *, connectivity: int = 4, return_counts: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Region adjacency graph of a label map, from the label pairs of shifted label maps.

    Two regions are adjacent when a pixel of one is a neighbour of a pixel of the other:
    horizontal and vertical neighbours for ``connectivity=4``, diagonals too for 8. The latter
    is the neighbourhood of scikit-image's ``graph.rag_mean_color`` default (``connectivity=2``);
    ``connectivity=4`` matches its ``connectivity=1``.

    Args:
        labels: ``(H, W)`` or ``(B, H, W)`` non-negative integer labels. In a batch, image b's
            labels are shifted by the number of labels (max + 1) of the images before it.
        connectivity: 4 or 8.
        return_counts: also return how many neighbouring pixel pairs cross each boundary.

    Returns:
        ``(2, E)`` int64 pairs (i < j, sorted), and ``(E,)`` int64 counts when asked.

    Example:
        >>> region_adjacency(torch.tensor([[0, 0, 1], [2, 2, 1]]))
        tensor([[0, 0, 1],
                [1, 2, 2]])
    """
    labels = _checks.as_label_batch(labels, "labels")
    _checks.check_choice("connectivity", connectivity, CONNECTIVITIES)
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be non-negative, got the value {int(labels.min())}")
    pairs, counts, offset = [], [], 0
    for label_map in labels.cpu().numpy():
        num_labels = int(label_map.max()) + 1
        low, high, _ = _boundary_pairs(label_map, connectivity, None)
        i, j, count, _ = _unique_pairs(low, high, num_labels)
        pairs.append(np.stack([i, j]) + offset)
        counts.append(count)
        offset += num_labels
    edge_index = torch.from_numpy(np.concatenate(pairs, axis=1).astype(np.int64))
    if return_counts:
        return edge_index, torch.from_numpy(np.concatenate(counts).astype(np.int64))
    return edge_index


# -- the graph -------------------------------------------------------------------------------


class SuperpixelGraph:
    r"""A batch of region adjacency graphs with node features and edge weights (DESIGN §4).

    Nodes of image b are numbered from ``ptr[b]`` (PyG's batching); ``labels[b]`` holds each
    pixel's region in image b, numbered from 0.

    Node data (pixel means over each region):

    - ``mean_rgb`` ``(N, 3)`` in [0, 1], ``mean_lab`` ``(N, 3)`` (CIE Lab, D65),
    - ``centroid`` ``(N, 2)`` (x, y) in pixels, ``size`` ``(N,)`` pixel counts,
    - ``features`` ``(N, F)``: deep features averaged over each region (None when not given).
      Feature maps of another resolution are pooled as if nearest-upsampled to the image, without
      building the upsampled map.

    :attr:`x` stacks them as :data:`FEATURE_NAMES` (+ the deep features), scaled to comparable
    ranges: RGB in [0, 1], L/100, a/128, b/128, centroid divided by the image width and height,
    size as a fraction of the image.

    Edge data, each undirected edge stored in both directions (PyG's convention), sorted by
    target then source:

    - ``boundary_length`` ``(E,)``: neighbouring pixel pairs across the shared boundary;
    - ``boundary_strength`` ``(E,)``: mean over those pairs of the RGB distance ‖c_p − c_q‖, or of
      max(B_p, B_q) when a boundary map B (e.g. IRN's) is given;
    - ``edge_weight`` ``(E,)``: a Gaussian of a distance d_ij between the two regions,

      .. math::
          w_{ij} = \exp\Big(-\frac{d_{ij}^2}{2\sigma^2}\Big),

      with d_ij the distance of mean RGB (``kernel="rgb"``, σ = 0.1), mean Lab (``"lab"``,
      σ = 10), pooled deep features (``"feature"``, σ = the median distance over the edges: deep
      features have no fixed scale), or the boundary strength (``"boundary"``, σ = 0.1).

    Args:
        image: ``(B, 3, H, W)`` / ``(3, H, W)`` float in [0, 1], or any image form of
            docs/images.md.
        labels: ``(B, H, W)`` or ``(H, W)`` non-negative integer region labels; regions are
            renumbered 0..n_b−1 per image, keeping their order.
        features: optional ``(B, F, h, w)`` deep features (any resolution).
        connectivity: 4 or 8, the pixel neighbourhood that makes regions adjacent.
        kernel: ``"rgb"``, ``"lab"``, ``"feature"`` or ``"boundary"``.
        bandwidth: σ of the kernel (None: the default named above).
        boundary: optional ``(B, H, W)`` or ``(B, 1, H, W)`` boundary map for the boundary
            strength.

    Shapes:
        ``x`` ``(N, 9 + F)``, ``edge_index`` ``(2, E)``, ``edge_weight`` ``(E,)``, ``pos``
        ``(N, 2)``, ``batch`` ``(N,)``.

    Example:
        >>> g = SuperpixelGraph(torch.rand(3, 8, 8), torch.arange(4).repeat_interleave(16)
        ...                     .view(8, 8))
        >>> g.num_nodes, g.edge_index.shape
        (4, torch.Size([2, 6]))
    """

    def __init__(
        self,
        image,
        labels,
        *,
        features: Tensor | None = None,
        connectivity: int = 4,
        kernel: str = "rgb",
        bandwidth: float | None = None,
        boundary: Tensor | None = None,
    ) -> None:
        image = _checks.as_image_batch(image, "image", channels=3)
        labels = _checks.as_label_batch(labels, "labels")
        batch, _, height, width = image.shape
        if labels.shape != (batch, height, width):
            raise ValueError(f"labels must have shape ({batch}, {height}, {width}) to match "
                             f"image {tuple(image.shape)}, got {tuple(labels.shape)}")
        if int(labels.min()) < 0:
            raise ValueError(f"labels must be non-negative, got the value {int(labels.min())}")
        _checks.check_choice("connectivity", connectivity, CONNECTIVITIES)
        _checks.check_choice("kernel", kernel, EDGE_KERNELS)
        if bandwidth is not None:
            _checks.check_positive("bandwidth", bandwidth)
        if features is not None:
            _checks.check_tensor4d("features", features, what="(B, F, h, w)")
            if features.shape[0] != batch:
                raise ValueError(f"features must have batch size {batch} like image, "
                                 f"got shape {tuple(features.shape)}")
        elif kernel == "feature":
            raise ValueError("kernel='feature' needs features: pass a (B, F, h, w) feature map")
        if boundary is not None:
            boundary = self._check_boundary(boundary, batch, height, width)

        device = image.device
        label_maps = [_contiguous(m) for m in labels.cpu().numpy()]
        self.labels = torch.from_numpy(np.stack(label_maps)).to(device)
        counts = [int(m.max()) + 1 for m in label_maps]
        self.ptr = torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.int64,
                                device=device)
        self.batch = torch.repeat_interleave(torch.arange(batch, device=device),
                                             torch.tensor(counts, device=device))
        self.connectivity = connectivity
        self.kernel = kernel
        self._node_ids = (self.labels + self.ptr[:-1].view(-1, 1, 1)).reshape(-1)
        self._image_size = (height, width)

        self.size = torch.bincount(self._node_ids, minlength=self.num_nodes).to(image.dtype)
        ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=image.dtype),
                                torch.arange(width, device=device, dtype=image.dtype),
                                indexing="ij")
        grid = torch.stack([xs, ys]).unsqueeze(0).expand(batch, -1, -1, -1)
        # one scatter pass for colour, Lab and position
        pooled = self._pool(torch.cat([image, rgb_to_lab(image), grid], dim=1))
        self.mean_rgb, self.mean_lab, self.centroid = pooled.split([3, 3, 2], dim=1)
        self.features = None if features is None else self._pool_features(features)

        self._build_edges(image, label_maps, boundary)
        self.bandwidth = bandwidth
        self.edge_weight = self._edge_weight(kernel, bandwidth)

    @staticmethod
    def _check_boundary(boundary, batch: int, height: int, width: int) -> Tensor:
        if not isinstance(boundary, Tensor):
            raise TypeError(f"boundary must be a ({batch}, {height}, {width}) float tensor, "
                            f"got {type(boundary).__name__}")
        if boundary.dim() == 4 and boundary.shape[1] == 1:
            boundary = boundary[:, 0]
        if tuple(boundary.shape) != (batch, height, width):
            raise ValueError(f"boundary must have shape ({batch}, {height}, {width}) or "
                             f"({batch}, 1, {height}, {width}), got {tuple(boundary.shape)}")
        _checks.check_finite("boundary", boundary)
        return boundary.float()

    # -- shape -----------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @property
    def num_regions(self) -> list[int]:
        """Regions per image."""
        return (self.ptr[1:] - self.ptr[:-1]).tolist()

    @property
    def num_edges(self) -> int:
        """Directed edges (each adjacency counted twice)."""
        return self.edge_index.shape[1]

    @property
    def pos(self) -> Tensor:
        """Region centroids (x, y) in pixels, ``(N, 2)``."""
        return self.centroid

    @property
    def x(self) -> Tensor:
        """Node features ``(N, 9 + F)`` in the column order of :data:`FEATURE_NAMES`."""
        height, width = self.image_size
        lab = self.mean_lab / self.mean_lab.new_tensor([100.0, 128.0, 128.0])
        centroid = self.centroid / self.centroid.new_tensor([float(width), float(height)])
        size = (self.size / (height * width)).unsqueeze(1)
        columns = [self.mean_rgb, lab, centroid, size]
        if self.features is not None:
            columns.append(self.features.to(self.mean_rgb.dtype))
        return torch.cat(columns, dim=1)

    def __repr__(self) -> str:
        height, width = self.image_size
        return (f"SuperpixelGraph(batch={self.batch_size}, size={height}x{width}, "
                f"nodes={self.num_nodes}, edges={self.num_edges // 2}, "
                f"connectivity={self.connectivity}, kernel={self.kernel!r}, "
                f"features={0 if self.features is None else self.features.shape[1]})")

    # -- pixels <-> regions ----------------------------------------------------------------

    def pool(self, values: Tensor) -> Tensor:
        """Region means of pixel values: ``(B, C, H, W)`` → ``(N, C)``, ``(B, H, W)`` → ``(N,)``.

        Sums run in float64, so a region of constant float32 values pools to exactly that value
        and ``pool(unpool(v)) == v``. Differentiable in ``values``.
        """
        squeeze = isinstance(values, Tensor) and values.dim() == 3
        if squeeze:
            values = values.unsqueeze(1)
        _checks.check_tensor4d("values", values)
        if values.shape[0] != self.batch_size or tuple(values.shape[2:]) != self.image_size:
            raise ValueError(f"values must have shape ({self.batch_size}, C, "
                             f"{self.image_size[0]}, {self.image_size[1]}) to match the "
                             f"graph's labels, got {tuple(values.shape)}")
        means = self._pool(values)
        return means[:, 0] if squeeze else means

    def _pool(self, values: Tensor) -> Tensor:
        channels = values.shape[1]
        flat = values.permute(0, 2, 3, 1).reshape(-1, channels).to(torch.float64)
        node_ids = self._node_ids.to(values.device)
        sums = flat.new_zeros(self.num_nodes, channels).index_add_(0, node_ids, flat)
        return (sums / self.size.to(flat).unsqueeze(1)).to(values.dtype)

    def unpool(self, node_values: Tensor) -> Tensor:
        """Paints region values back onto pixels: ``(N, C)`` → ``(B, C, H, W)``,
        ``(N,)`` → ``(B, H, W)``. Differentiable in ``node_values``."""
        if not isinstance(node_values, Tensor):
            raise TypeError(f"node_values must be a tensor of shape ({self.num_nodes}, C), "
                            f"got {type(node_values).__name__}")
        if node_values.dim() not in (1, 2) or node_values.shape[0] != self.num_nodes:
            raise ValueError(f"node_values must have shape ({self.num_nodes}, C) or "
                             f"({self.num_nodes},), got {tuple(node_values.shape)}")
        height, width = self.image_size
        pixels = node_values[self._node_ids.to(node_values.device)]
        if node_values.dim() == 1:
            return pixels.view(self.batch_size, height, width)
        return pixels.view(self.batch_size, height, width, -1).permute(0, 3, 1, 2)

    def _pool_features(self, features: Tensor) -> Tensor:
        """Region means of the nearest-neighbour upsampling of ``features`` to the image size
        (F.interpolate's ``nearest`` rule: source cell floor(dst · in / out))."""
        batch, channels, rows, cols = features.shape
        height, width = self.image_size
        device = features.device
        cell_y = (torch.arange(height, device=device) * rows) // height
        cell_x = (torch.arange(width, device=device) * cols) // width
        cell = (cell_y.view(-1, 1) * cols + cell_x.view(1, -1)).reshape(-1)
        cell = (cell.view(1, -1) + torch.arange(batch, device=device).view(-1, 1) * rows * cols)
        # each (region, cell) overlap enters once, weighted by its pixel count
        key = self._node_ids.to(device) * (batch * rows * cols) + cell.reshape(-1)
        unique, counts = torch.unique(key, return_counts=True)
        node, source = unique // (batch * rows * cols), unique % (batch * rows * cols)
        flat = features.permute(0, 2, 3, 1).reshape(-1, channels)
        weighted = flat[source].to(torch.float64) * counts.unsqueeze(1).to(torch.float64)
        sums = weighted.new_zeros(self.num_nodes, channels).index_add_(0, node, weighted)
        size = self.size.to(device=device, dtype=torch.float64).unsqueeze(1)
        return (sums / size).to(features.dtype)

    # -- edges -----------------------------------------------------------------------------

    def _build_edges(self, image: Tensor, label_maps: list[np.ndarray],
                     boundary: Tensor | None) -> None:
        if boundary is None:
            strength_maps = image.detach().permute(0, 2, 3, 1).to(torch.float64).cpu().numpy()
        else:
            strength_maps = boundary.detach().to(torch.float64).cpu().numpy()
        sources, targets, lengths, strengths = [], [], [], []
        for b, label_map in enumerate(label_maps):
            offset = int(self.ptr[b])
            num_labels = int(self.ptr[b + 1]) - offset
            if boundary is None:
                low, high, contrast = _boundary_pairs(label_map, self.connectivity,
                                                      strength_maps[b])
            else:
                low, high, _ = _boundary_pairs(label_map, self.connectivity, None)
                contrast = self._boundary_max(label_map, strength_maps[b])
            i, j, count, total = _unique_pairs(low, high, num_labels, contrast)
            # both directions, then a stable sort by target gives (target, source) order
            source = np.concatenate([i, j]) + offset
            target = np.concatenate([j, i]) + offset
            order = np.lexsort((source, target))
            sources.append(source[order])
            targets.append(target[order])
            lengths.append(np.concatenate([count, count])[order])
            strengths.append(np.concatenate([total / count, total / count])[order])
        device = image.device
        self.edge_index = torch.from_numpy(
            np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)
        ).to(device)
        self.boundary_length = torch.from_numpy(np.concatenate(lengths).astype(np.int64)).to(
            device)
        self.boundary_strength = torch.from_numpy(np.concatenate(strengths)).to(
            device=device, dtype=image.dtype)

    def _boundary_max(self, label_map: np.ndarray, boundary: np.ndarray) -> np.ndarray:
        """max(B_p, B_q) over the boundary pixel pairs, in the order of ``_boundary_pairs``."""
        height, width = label_map.shape
        values = []
        for dy, dx in _SHIFTS[self.connectivity]:
            if dy >= height or abs(dx) >= width:
                continue
            at_p, at_q = _shifted(dy, dx, height, width)
            cut = label_map[at_p] != label_map[at_q]
            values.append(np.maximum(boundary[at_p][cut], boundary[at_q][cut]))
        return np.concatenate(values) if values else np.zeros(0)

    def _edge_weight(self, kernel: str, bandwidth: float | None) -> Tensor:
        source, target = self.edge_index
        if kernel == "boundary":
            distance = self.boundary_strength
        else:
            node = {"rgb": self.mean_rgb, "lab": self.mean_lab, "feature": self.features}[kernel]
            distance = (node[source] - node[target]).norm(dim=1)
        if bandwidth is None:
            if kernel == "feature":
                positive = distance[distance > 0]
                bandwidth = float(positive.median()) if positive.numel() else 1.0
            else:
                bandwidth = DEFAULT_BANDWIDTH[kernel]
        return torch.exp(-distance.square() / (2 * bandwidth**2))

    # -- conversions -----------------------------------------------------------------------

    def to_pyg(self):
        """Converts to PyTorch Geometric: ``Data(x, edge_index, edge_weight, edge_attr, pos)``
        for one image, a ``Batch`` of them otherwise. ``edge_attr`` holds (boundary length,
        boundary strength); ``edge_index[0]`` is the source j, ``edge_index[1]`` the target i,
        sorted by target."""
        from torch_geometric.data import Batch, Data

        x, pos = self.x, self.pos
        edge_attr = torch.stack([self.boundary_length.to(x.dtype), self.boundary_strength],
                                dim=1)
        graphs = []
        for b in range(self.batch_size):
            start, stop = int(self.ptr[b]), int(self.ptr[b + 1])
            keep = (self.edge_index[1] >= start) & (self.edge_index[1] < stop)
            graphs.append(Data(x=x[start:stop], edge_index=self.edge_index[:, keep] - start,
                               edge_weight=self.edge_weight[keep], edge_attr=edge_attr[keep],
                               pos=pos[start:stop], num_nodes=stop - start))
        return graphs[0] if self.batch_size == 1 else Batch.from_data_list(graphs)

    def to_networkx(self):
        """An undirected ``networkx.Graph`` over the whole batch: nodes carry ``mean_rgb``,
        ``mean_lab``, ``centroid``, ``size`` and ``image`` (batch index); edges carry ``weight``,
        ``boundary_length`` and ``boundary_strength``."""
        import networkx as nx

        graph = nx.Graph()
        rgb, lab = self.mean_rgb.tolist(), self.mean_lab.tolist()
        centroid, size, image = self.centroid.tolist(), self.size.tolist(), self.batch.tolist()
        graph.add_nodes_from(
            (n, {"mean_rgb": rgb[n], "mean_lab": lab[n], "centroid": centroid[n],
                 "size": size[n], "image": image[n]})
            for n in range(self.num_nodes))
        source, target = self.edge_index.tolist()
        weight = self.edge_weight.tolist()
        length = self.boundary_length.tolist()
        strength = self.boundary_strength.tolist()
        graph.add_edges_from(
            (s, t, {"weight": weight[e], "boundary_length": length[e],
                    "boundary_strength": strength[e]})
            for e, (s, t) in enumerate(zip(source, target, strict=True)) if s < t)
        return graph


def superpixel_graph(
    image,
    *,
    n_segments: int | None = None,
    method: str = "slic",
    compactness: float = 10.0,
    features: Tensor | None = None,
    labels=None,
    connectivity: int = 4,
    kernel: str = "rgb",
    bandwidth: float | None = None,
    boundary: Tensor | None = None,
    sigma: float | None = None,
    scale: float = 100.0,
    min_size: int = 50,
) -> SuperpixelGraph:
    """Over-segments a batch of images and builds its :class:`SuperpixelGraph`.

    Args:
        image: ``(B, 3, H, W)`` / ``(3, H, W)`` float in [0, 1], or any image form of
            docs/images.md.
        n_segments, method, compactness, sigma, scale, min_size: the over-segmentation, see
            :func:`superpixels` (fast-slic runs SLIC when it is installed).
        features: optional ``(B, F, h, w)`` deep features pooled into the node features.
        labels: precomputed ``(B, H, W)`` region labels; the segmentation options are then
            unused.
        connectivity, kernel, bandwidth, boundary: see :class:`SuperpixelGraph`.

    Returns:
        :class:`SuperpixelGraph`.

    Example:
        >>> g = superpixel_graph(torch.rand(3, 64, 64), n_segments=50)
        >>> g.to_pyg().x.shape[1]
        9
    """
    image = _checks.as_image_batch(image, "image", channels=3)
    if labels is None:
        labels = superpixels(image, method=method, n_segments=n_segments,
                             compactness=compactness, sigma=sigma, scale=scale,
                             min_size=min_size)
    return SuperpixelGraph(image, labels, features=features, connectivity=connectivity,
                           kernel=kernel, bandwidth=bandwidth, boundary=boundary)
