"""Backbones of the affinity CNN: a small ResNet-style network trained from scratch, an
adapter for any module that returns three feature maps, and :func:`build_backbone`, which
builds one from a torchvision, timm or user network named by a string."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg._io import load_state

__all__ = ["RESNET_FAMILIES", "STRIDES", "BackboneAdapter", "ResNetBackbone", "build_backbone"]

STRIDES = (2, 4, 8, 16)
RESNET_FAMILIES = ("resnet", "resnext", "wide_resnet")
"""The torchvision model families :func:`build_backbone` takes (their ``layer2``–``layer4``)."""
PROBE_SIZE = 64
"""Side of the zero image :func:`build_backbone` runs once through a network to check its
maps (and read their channels): a multiple of 32, the stride of the deepest ResNet stage."""


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


class _BuiltBackbone(BackboneAdapter):
    """The adapter :func:`build_backbone` returns: it records its ``spec`` in its state dict
    (the entry ``_extra_state``), so that a checkpoint names the network it needs."""

    def __init__(self, module: nn.Module, out_channels: Sequence[int], spec: str) -> None:
        super().__init__(module, out_channels)
        self.spec = spec

    def get_extra_state(self) -> str:
        return self.spec

    def set_extra_state(self, state) -> None:
        if state != self.spec:
            raise ValueError(f"the state dict was saved with backbone {state!r}, and this "
                             f"model has backbone {self.spec!r}: build it with that backbone")

    def __repr__(self) -> str:
        return f"BackboneAdapter({self.spec!r}, out_channels={self.out_channels})"


class _ResNetStages(nn.Module):
    """A torchvision ResNet up to ``layer4``, returning the outputs of ``layer2``–``layer4``
    (strides 8, 16, 32). Its modules keep the ResNet's names, so the ResNet's state dict loads
    into it once the classifier ``fc`` is left out."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                     "layer4"):
            self.add_module(name, getattr(resnet, name))

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(image)))))
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


def build_backbone(spec: str, weights: str | os.PathLike | None = None) -> BackboneAdapter:
    """A backbone of the affinity CNN built from a network that ``spec`` names, with its
    weights read from a local file. Nothing is ever downloaded.

    ``spec`` is one of:

    - ``"torchvision:NAME"``: ``torchvision.models.get_model(NAME, weights=None)`` of the
      ResNet families (:data:`RESNET_FAMILIES`: ``resnet18``–``resnet152``,
      ``resnext50_32x4d``, ``wide_resnet50_2``, ...); the three maps are the outputs of
      ``layer2``, ``layer3`` and ``layer4`` (strides 8, 16, 32).
    - ``"timm:NAME"``: ``timm.create_model(NAME, pretrained=False, features_only=True,
      out_indices=(-3, -2, -1))``, the last three feature levels, with the channels of its
      ``feature_info``.
    - ``"package.module:callable"``: the module is imported and the callable called with no
      arguments; it returns an ``nn.Module`` mapping a ``(B, 3, H, W)`` image to a list of
      three ``(B, C_i, H_i, W_i)`` maps, whose channels are its ``out_channels`` attribute
      when it has one.

    Every network is run once on a square zero image of side :data:`PROBE_SIZE`, in eval
    mode (so batch norm statistics are untouched), to check that it returns three maps of the
    expected channels (and to read them where nothing declares them).

    ``weights`` is a file of ``torch.save`` read with ``torch.load(..., weights_only=True)``:
    the state dict of the network (or a dict holding it under ``"state_dict"`` or
    ``"model"``), e.g. ``torchvision.models.resnet50().state_dict()`` or a timm model's
    checkpoint. Entries of layers the backbone leaves out (the classifier head and final
    pooling: keys whose first module is not one of the network's) are ignored; a timm
    ``features_only`` network's ``stages_0`` is read from the checkpoint's ``stages.0``. Any
    other missing or unexpected entry, or a shape that differs, is an error.

    The returned adapter records ``spec`` in its state dict, so a saved model names the
    network it needs (:func:`graphseg.pipelines.load_affinity` rebuilds it from there), and
    loading a state dict of another ``spec`` into it raises ``ValueError``.

    Notes:
        :class:`~graphseg.nn.AffinityCNN` hands its backbone the image ImageNet-normalised:
        RGB in [0, 1], minus the mean (0.485, 0.456, 0.406), divided by the standard
        deviation (0.229, 0.224, 0.225) (its ``normalize="imagenet"``, the default), the
        input torchvision's ImageNet weights and most of timm's expect; weights trained with
        another normalisation (timm models whose ``pretrained_cfg`` gives mean 0.5, for
        instance) see shifted colours. The node features (Eq. 3.15) divide each pixel's
        features by their sum, which assumes non-negative maps, as a ResNet's stages give
        (they end with a ReLU); a network whose stages end otherwise (ConvNeXt's, for
        instance) gives maps of either sign.

    Args:
        spec: the network, as above.
        weights: a local state-dict file, or None to keep the random initialisation.

    Returns:
        :class:`BackboneAdapter` with the network as ``module`` (in the mode it was built
        in) and its three channel counts as ``out_channels``.

    Raises:
        ValueError: a malformed or unknown ``spec``, a network that does not return three
            maps, or ``weights`` that are not a state dict of the network.
        ImportError: torchvision or timm cannot be imported.
        FileNotFoundError: ``weights`` does not exist.
    """
    source, name = _parse_spec(spec)
    if source == "torchvision":
        network, channels = _torchvision_network(spec, name), None
    elif source == "timm":
        network = _timm_network(spec, name)
        channels = tuple(network.feature_info.channels())
    else:
        network = _user_network(spec, source, name)
        channels = getattr(network, "out_channels", None)
    if weights is not None:
        _load_weights(network, weights, spec)
    maps = _probe(network, spec)
    if channels is None:
        channels = tuple(m.shape[1] for m in maps)
    channels = tuple(channels)
    if len(channels) != 3 or tuple(m.shape[1] for m in maps) != channels:
        raise ValueError(f"backbone {spec!r} declares the channels {channels}, but its maps "
                         f"have {tuple(m.shape[1] for m in maps)}")
    return _BuiltBackbone(network, channels, spec)


def _parse_spec(spec) -> tuple[str, str]:
    if not isinstance(spec, str):
        raise TypeError("backbone must be a string such as 'torchvision:resnet50', got "
                        f"{type(spec).__name__}")
    source, colon, name = spec.partition(":")
    form = "'torchvision:NAME', 'timm:NAME' or 'package.module:callable'"
    if not colon or not source or not name:
        raise ValueError(f"backbone must be {form}, got {spec!r}")
    if source not in ("torchvision", "timm") and not all(
            part.isidentifier() for part in (*source.split("."), *name.split("."))):
        raise ValueError(f"backbone must be {form} (dotted Python names), got {spec!r}")
    if ":" in name:  # timm's hf-hub:NAME would fetch the model's configuration
        raise ValueError(f"backbone {spec!r} names a model hub; give a model name (nothing "
                         "is downloaded)")
    return source, name


def _import_package(package: str, spec: str):
    try:
        return importlib.import_module(package)
    except Exception as error:  # a torchvision built for another torch raises RuntimeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ImportError(
            f"backbone {spec!r} needs {package}, which could not be imported "
            f"({type(error).__name__}: {reason[:200]}). Install it with `pip install "
            f"{package}`; it needs a torchvision built for this torch {torch.__version__} "
            "(one built for another release fails at import)") from error


def _torchvision_network(spec: str, name: str) -> nn.Module:
    if not name.startswith(RESNET_FAMILIES):
        raise ValueError(f"backbone {spec!r}: torchvision backbones are the ResNet families "
                         f"{', '.join(RESNET_FAMILIES)} (e.g. torchvision:resnet50), whose "
                         "layer2-layer4 give the three maps; wrap another network in a "
                         "'package.module:callable' that returns its three maps")
    torchvision = _import_package("torchvision", spec)
    try:
        resnet = torchvision.models.get_model(name, weights=None)
    except Exception as error:  # an unknown name, or a builder that refuses its arguments
        raise ValueError(f"backbone {spec!r}: torchvision could not build {name!r} "
                         f"({type(error).__name__}: {error})") from error
    missing = [layer for layer in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                   "layer3", "layer4") if not hasattr(resnet, layer)]
    if missing:
        raise ValueError(f"backbone {spec!r}: torchvision's {name!r} is not a ResNet (it has "
                         f"no {', '.join(missing)})")
    return _ResNetStages(resnet)


def _timm_network(spec: str, name: str) -> nn.Module:
    timm = _import_package("timm", spec)
    try:
        return timm.create_model(name, pretrained=False, features_only=True,
                                 out_indices=(-3, -2, -1))
    except Exception as error:  # an unknown name, or a model without feature extraction
        raise ValueError(f"backbone {spec!r}: timm could not build {name!r} with "
                         f"features_only=True ({type(error).__name__}: {error})") from error


def _user_network(spec: str, module_name: str, attribute: str) -> nn.Module:
    try:
        target = importlib.import_module(module_name)
    except Exception as error:  # whatever importing the user's module raises
        raise ValueError(f"backbone {spec!r}: module {module_name!r} could not be imported "
                         f"({type(error).__name__}: {error})") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"backbone {spec!r}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"backbone {spec!r}: {attribute!r} is a {type(target).__name__}, "
                         "not a callable that builds the network")
    network = target()
    if not isinstance(network, nn.Module):
        raise ValueError(f"backbone {spec!r}: {attribute}() returned a "
                         f"{type(network).__name__}, not a torch.nn.Module")
    return network


def _probe(network: nn.Module, spec: str) -> list[Tensor]:
    """The maps of a zero image, in eval mode; the network's mode is restored."""
    tensor = next(iter(network.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    image = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device)
    training = network.training
    network.eval()
    try:
        with torch.no_grad():
            maps = network(image)
    except Exception as error:  # whatever the network raises on this input
        raise ValueError(f"backbone {spec!r} failed on a (1, 3, {PROBE_SIZE}, {PROBE_SIZE}) "
                         f"image: {type(error).__name__}: {error}") from error
    finally:
        network.train(training)
    if not isinstance(maps, (list, tuple)) or len(maps) != 3 or not all(
            isinstance(m, Tensor) and m.dim() == 4 for m in maps):
        described = ([_checks._describe(m) for m in maps] if isinstance(maps, (list, tuple))
                     else _checks._describe(maps))
        raise ValueError(f"backbone {spec!r} must return a list of 3 (B, C, H, W) feature "
                         f"maps, got {described}")
    return list(maps)


def _checkpoint_key(key: str, children: set[str]) -> str:
    """The network's name for a checkpoint entry: timm's feature networks flatten a top-level
    ``nn.Sequential``, so ``stages.0.x`` of the full model is their ``stages_0.x``."""
    first, _, rest = key.partition(".")
    if first in children or not rest:
        return key
    second, _, tail = rest.partition(".")
    flat = f"{first}_{second}"
    if flat in children:
        return f"{flat}.{tail}" if tail else flat
    return key


def _load_weights(network: nn.Module, weights, spec: str) -> None:
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights {path} does not exist (backbone weights are read "
                                "from a local file; nothing is downloaded)")
    state = load_state(path, "weights file (a state dict saved with torch.save)")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"weights {path} is not a state dict: its entry {key!r} is a "
                             f"{type(value).__name__}, not a tensor (expected the network's "
                             "state dict, or a dict holding it under 'state_dict' or 'model')")
    children = {name for name, _ in network.named_children()}
    own = network.state_dict()
    state = {_checkpoint_key(key, children): value for key, value in state.items()}
    # the layers the backbone leaves out (classifier head, final pooling) are not loaded
    state = {key: value for key, value in state.items()
             if key in own or key.partition(".")[0] in children}
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # torch lists the shape mismatches under a heading
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ValueError(f"weights {path} do not fit backbone {spec!r}: "
                         f"{'; '.join(lines[1:] or lines)}") from None
    for keys, what in ((result.missing_keys, "lack"), (result.unexpected_keys, "have extra")):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5
                                            else "")
            raise ValueError(f"weights {path} {what} entries of backbone {spec!r}: {shown}")
