"""IAL's confident-region mining (IAL review; DESIGN §6 "IAL")."""

from __future__ import annotations

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.seeds.expand import global_regions, region_labels

__all__ = ["mine_confident_regions"]

UNKNOWN = 255


def mine_confident_regions(prediction, regions, *, ratio: float = 0.8,
                           classified: Tensor | None = None) -> Tensor:
    """Confident regions Y for the pairwise network (IAL's confident-region mining): a
    superpixel becomes a sample of class c when at least ``ratio`` of its pixels are predicted
    c, and, given the region classifier's classes ``classified``, when the classifier also
    predicts c for it (IAL drops the regions whose predicted class disagrees; the classifier
    is :class:`graphseg.nn.unary.RegionClassifier`, mask pooling over the unary features).

    The share counts every pixel of the region, unknown (255) predictions included.

    Args:
        prediction: ``(B, H, W)`` int64 labels (255 = no prediction) or ``(B, C, H, W)`` class
            scores (argmax taken), e.g. from α_u.
        regions: ``(B, H, W)`` region labels or a :class:`graphseg.graph.SuperpixelGraph`.
        ratio: least share of a region's pixels, in (0.5, 1] so that at most one class
            qualifies (IAL: 0.8).
        classified: optional ``(B, H, W)`` int64, the region classifier's class of each
            pixel's region; a region is kept only when every one of its pixels carries its
            mined class here.

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
    if classified is not None:
        classified = _checks.as_label_batch(classified, "classified").to(labels.device)
        _checks.same_size("classified", classified, "regions", regions)
        disagree = (classified.reshape(-1) != region_label[node]).to(torch.int64)
        dropped = torch.zeros(num_nodes, dtype=torch.int64, device=labels.device)
        dropped.index_add_(0, node, disagree)
        region_label[dropped > 0] = UNKNOWN
    return region_label[node].view_as(prediction)
