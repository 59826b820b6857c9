"""IAL's confident-region mining (IAL review; DESIGN §6 "IAL")."""

from __future__ import annotations

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.seeds.expand import global_regions, region_labels

__all__ = ["mine_confident_regions"]

UNKNOWN = 255


def mine_confident_regions(prediction, regions, *, ratio: float = 0.8) -> Tensor:
    """Confident regions Y for the pairwise network: a superpixel becomes a sample of class c
    when at least ``ratio`` of its pixels are predicted c.

    The share counts every pixel of the region, unknown (255) predictions included. IAL then
    drops regions that its region classifier (mask pooling over the unary features) assigns to
    another class; that step needs the learned model and is not part of this function.

    Args:
        prediction: ``(B, H, W)`` int64 labels (255 = no prediction) or ``(B, C, H, W)`` class
            scores (argmax taken), e.g. from α_u.
        regions: ``(B, H, W)`` region labels or a :class:`graphseg.graph.SuperpixelGraph`.
        ratio: least share of a region's pixels, in (0.5, 1] so that at most one class
            qualifies (IAL: 0.8).

    Returns:
        ``(B, H, W)`` int64: each confident region filled with its class, 255 elsewhere.
    """
    if isinstance(prediction, Tensor) and prediction.dim() == 4:
        _checks.check_tensor4d("prediction", prediction, what="(B, C, H, W)")
        prediction = prediction.argmax(dim=1)
    else:
        prediction = _checks.as_label_batch(prediction, "prediction")
    _checks.check_seed_values("prediction", prediction, None)
    _checks.check_positive("ratio", ratio)
    if not 0.5 < ratio <= 1:
        raise ValueError(f"ratio must lie in (0.5, 1] so that one class at most qualifies, "
                         f"got {ratio!r}")
    regions = region_labels(regions).to(prediction.device)
    _checks.same_size("prediction", prediction, "regions", regions)
    node, num_nodes = global_regions(regions)
    node = node.reshape(-1)
    labels = prediction.reshape(-1)
    size = torch.bincount(node, minlength=num_nodes)
    known = labels != UNKNOWN
    span = int(labels[known].max()) + 1 if known.any() else 1
    pairs, counts = torch.unique(node[known] * span + labels[known], return_counts=True)
    pair_node, pair_cls = pairs // span, pairs % span
    confident = counts >= ratio * size[pair_node]
    region_label = torch.full((num_nodes,), UNKNOWN, dtype=torch.int64, device=labels.device)
    region_label[pair_node[confident]] = pair_cls[confident]
    return region_label[node].view_as(prediction)
