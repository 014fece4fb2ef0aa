"""torchvision backbones with a multi-label head, ImageNet weights loaded offline or not at all.

Weights come only from torchvision's checkpoint cache (``make install`` puts MobileNetV2's there). We check for
the file before asking torchvision for it, so a missing file means training from scratch with a warning, never a
download attempt.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from models.training.weights import cached_weights_path
from schemas.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    builder: str  # torchvision.models function name
    weights: str  # torchvision weights enum member, e.g. "MobileNet_V2_Weights.IMAGENET1K_V1"
    head: Callable  # (model, num_classes) -> None: replaces the classifier in place
    head_prefix: str  # parameter-name prefix of the new head (to train it alone during warm-up)


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


ARCHITECTURES: dict[str, ArchSpec] = {
    "mobilenet_v2": ArchSpec("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", _swap_linear("classifier", 1), "classifier."),
    "mobilenet_v3_large": ArchSpec(
        "mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", _swap_linear("classifier", 3), "classifier.3."
    ),
    "efficientnet_b0": ArchSpec(
        "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", _swap_linear("classifier", 1), "classifier."
    ),
    "resnet50": ArchSpec("resnet50", "ResNet50_Weights.IMAGENET1K_V1", _swap_linear("fc", None), "fc."),
}
DEFAULT_ARCH = "mobilenet_v2"


@dataclass
class BuiltModel:
    model: object  # torch.nn.Module returning logits
    arch: str
    weights: str | None  # the weights enum used, None when trained from scratch
    warnings: list[str]

    def is_head(self, param_name: str) -> bool:
        return param_name.startswith(ARCHITECTURES[self.arch].head_prefix)


def weights_file(arch: str) -> str:
    """File name torchvision caches the arch's ImageNet weights under."""
    import torchvision.models as tvm

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
