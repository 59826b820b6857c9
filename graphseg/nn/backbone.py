"""Backbones of the affinity CNN: a small ResNet-style network trained from scratch, and an
adapter for any module that returns three feature maps."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from graphseg import _checks

__all__ = ["STRIDES", "BackboneAdapter", "ResNetBackbone"]

STRIDES = (2, 4, 8, 16)


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block (He et al., CVPR 2016), with a 1×1 projection
    when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation,
                               dilation=dilation, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """A small ResNet-style backbone in plain torch, trainable from scratch on CPU.

    A 3×3 stem and stride-2 blocks bring the image to ``stride``; three stages at that stride
    follow, the second and third dilated (2, 4) to widen the receptive field without
    downsampling further, as the dilated ResNet-38 of AffinityNet and A²GNN does. The three stage
    outputs (after ReLU, so non-negative) are the feature maps of the affinity CNN.

    Args:
        in_channels: image channels.
        widths: channels of the three returned stages.
        stem_width: channels of the stem.
        stride: total stride, one of 2, 4, 8 (default), 16.

    Shapes:
        ``(B, in_channels, H, W)`` → three ``(B, widths[i], ⌈H/stride⌉, ⌈W/stride⌉)`` maps.
    """

    def __init__(self, in_channels: int = 3, *, widths: Sequence[int] = (64, 128, 256),
                 stem_width: int = 32, stride: int = 8) -> None:
        super().__init__()
        _checks.check_choice("stride", stride, STRIDES)
        widths = tuple(widths)
        if len(widths) != 3:
            raise ValueError(f"widths must give 3 stage widths, got {widths}")
        for width in (*widths, stem_width, in_channels):
            _checks.check_positive("widths", width, integer=True)
        self.stride = stride
        self.out_channels = widths
        layers = [nn.Conv2d(in_channels, stem_width, 3, 2, padding=1, bias=False),
                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)]
        channels, reached = stem_width, 2
        while reached < stride:
            layers.append(BasicBlock(channels, widths[0], stride=2))
            channels, reached = widths[0], reached * 2
        self.stem = nn.Sequential(*layers)
        self.stages = nn.ModuleList()
        for width, dilation in zip(widths, (1, 2, 4), strict=True):
            self.stages.append(BasicBlock(channels, width, dilation=dilation))
            channels = width

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.stem(image)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(widths={self.out_channels}, stride={self.stride})")


class BackboneAdapter(nn.Module):
    """Wraps any module that maps an image to a list of three feature maps (e.g. the stages of a
    torchvision or timm network) and checks its output.

    Args:
        module: the network; ``module(image)`` must return a list or tuple of three
            ``(B, C_i, H_i, W_i)`` tensors.
        out_channels: the channel counts C_1, C_2, C_3 (the affinity head is built from them).
    """

    def __init__(self, module: nn.Module, out_channels: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        out_channels = tuple(out_channels)
        if len(out_channels) != 3:
            raise ValueError(f"out_channels must give the channels of 3 maps, got {out_channels}")
        for channels in out_channels:
            _checks.check_positive("out_channels", channels, integer=True)
        self.module = module
        self.out_channels = out_channels

    def forward(self, image: Tensor) -> list[Tensor]:
        maps = self.module(image)
        if not isinstance(maps, (list, tuple)) or len(maps) != 3:
            raise ValueError("the backbone must return a list of 3 feature maps, got "
                             f"{type(maps).__name__}"
                             + (f" of length {len(maps)}" if isinstance(maps, (list, tuple))
                                else ""))
        for i, (feature, channels) in enumerate(zip(maps, self.out_channels, strict=True)):
            if not isinstance(feature, Tensor) or feature.dim() != 4 or (
                    feature.shape[1] != channels):
                raise ValueError(f"backbone map {i} must have shape (B, {channels}, H, W), got "
                                 f"{_checks._describe(feature)}")
        return list(maps)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({type(self.module).__name__}, "
                f"out_channels={self.out_channels})")
