"""A small segmentation network trained from scratch: the unary network of IAL and of the
regularized-loss recipe."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphseg.nn.backbone import ResNetBackbone

__all__ = ["UnaryNet"]


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
