"""A small segmentation network trained from scratch: the unary network of IAL and of the
regularized-loss recipe; IAL's region classifier over its features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg.nn.backbone import ResNetBackbone
from graphseg.seeds.expand import UNKNOWN, global_regions

__all__ = ["RegionClassifier", "UnaryNet", "region_loss", "region_pool"]


class UnaryNet(nn.Module):
    """A small from-scratch segmentation network: :class:`ResNetBackbone` and a 1×1 classifier
    on its concatenated maps. Any module mapping ``(B, 3, H, W)`` to ``(B, C, h, w)`` logits
    can replace it.

    Shapes:
        image ``(B, 3, H, W)`` → logits ``(B, num_classes, H / stride, W / stride)``.
    """

    def __init__(self, num_classes: int, *, stride: int = 2, widths=(16, 32, 32)) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(widths=widths, stem_width=16, stride=stride)
        self.features = sum(widths)
        self.classifier = nn.Conv2d(self.features, num_classes, 1)

    def embed(self, image: Tensor) -> Tensor:
        """The concatenated backbone maps ``(B, features, h, w)``."""
        return torch.cat(self.backbone(image), dim=1)

    def forward(self, image: Tensor) -> Tensor:
        return self.classifier(self.embed(image))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.classifier.out_channels}, "
                f"features={self.features})")


def region_pool(features: Tensor, regions: Tensor) -> Tensor:
    """Mask pooling: the mean feature of each region, ``(R, F)``.

    Shapes:
        features ``(B, F, h, w)``, regions ``(B, h, w)`` int64 labels (made unique over the
        batch as :func:`graphseg.seeds.expand.global_regions` does) → ``(R, F)``, R the number
        of global region ids (an id without pixels pools to 0).
    """
    node, count = global_regions(regions)
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    node = node.reshape(-1)
    sums = flat.new_zeros(count, flat.shape[1]).index_add(0, node, flat)
    size = torch.bincount(node, minlength=count).to(flat.dtype).clamp_min(1)
    return sums / size[:, None]


def region_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""IAL's region classification loss :math:`L_m`: the cross-entropy of the region
    classifier :math:`f^m` over the mined regions Y,
    :math:`L_m = -\frac{1}{|Y|} \sum_{R \in Y} \log \mathrm{softmax}(f^m(\bar F_R))_{y_R}`,
    :math:`\bar F_R` the mask-pooled unary features of region R and :math:`y_R` its mined class.

    Shapes:
        logits ``(R, C)``, labels ``(R,)`` int64 (255 = not a mined region) → scalar (0 when no
        region is mined).
    """
    known = labels != UNKNOWN
    if not bool(known.any()):
        return logits.sum() * 0
    return F.cross_entropy(logits[known], labels[known])


class RegionClassifier(nn.Module):
    r"""IAL's region classifier :math:`f^m`: mask pooling of the unary network's features over
    each region (:func:`region_pool`) and a linear classifier, trained with :func:`region_loss`
    on the mined regions; mining drops the regions whose predicted class disagrees with their
    mined class (:func:`graphseg.seeds.mine_confident_regions`).

    Shapes:
        features ``(B, F, h, w)``, regions ``(B, h, w)`` → logits ``(R, num_classes)``.
    """

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, features: Tensor, regions: Tensor) -> Tensor:
        return self.linear(region_pool(features, regions))

    def fit(self, features: Tensor, regions: Tensor, labels: Tensor, *, steps: int = 50,
            lr: float = 1e-2) -> RegionClassifier:
        """Trains on the detached ``features`` with Adam on :func:`region_loss` of the region
        ``labels`` ``(R,)`` (255 = not mined); returns ``self`` in eval mode."""
        return self.fit_pooled(region_pool(features.detach(), regions), labels, steps=steps,
                               lr=lr)

    def fit_pooled(self, pooled: Tensor, labels: Tensor, *, steps: int = 50,
                   lr: float = 1e-2) -> RegionClassifier:
        """:meth:`fit` on mask-pooled features ``(R, F)`` (:func:`region_pool`), e.g. pooled
        a batch of images at a time over a whole folder."""
        pooled = pooled.detach()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        with torch.enable_grad():
            for _ in range(steps):
                loss = region_loss(self.linear(pooled), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return self.eval()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(features={self.linear.in_features}, "
                f"num_classes={self.linear.out_features})")
