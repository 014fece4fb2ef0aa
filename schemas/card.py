"""The model card: the one contract between the training job and every consumer of a model.

A consumer (batch tagging, streaming moderation, feedback validation, a plain onnxruntime script) needs
nothing but ``card.json`` and ``model.onnx``: classes, thresholds and preprocessing all live here, so
nothing about a model is hard-coded elsewhere.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from schemas.errors import UserError

CARD_FORMAT_VERSION = 1

ResizePolicy = Literal["stretch", "shorter_side_center_crop"]
OutputKind = Literal["probabilities", "logits"]


class CardError(UserError, ValueError):
    """A card that is missing fields or contradicts itself."""


@dataclass(frozen=True)
class Preprocessing:
    """How to turn a decoded RGB image into the model's input tensor.

    ``stretch`` resizes the whole image to ``input_size`` x ``input_size`` (keeps every object in view, which
    suits multi-label tagging); ``shorter_side_center_crop`` resizes the shorter side to ``resize_shorter`` then
    crops the centre square.
    """

    input_size: int = 224
    resize: ResizePolicy = "stretch"
    resize_shorter: int = 256
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32"] = "float32"

    def __post_init__(self) -> None:
        if self.input_size <= 0:
            raise CardError(f"preprocessing.input_size must be positive, got {self.input_size}")
        if self.resize not in ("stretch", "shorter_side_center_crop"):
            raise CardError(f"preprocessing.resize: unknown policy {self.resize!r}")
        if self.resize == "shorter_side_center_crop" and self.resize_shorter < self.input_size:
            raise CardError("preprocessing.resize_shorter must be >= input_size for a centre crop")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise CardError("preprocessing.mean and std need three values, std positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CardError(f"preprocessing: unknown fields {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


@dataclass(frozen=True)
class ModelCard:
    """Everything a consumer needs to run and interpret one model version."""

    name: str
    version: str
    classes: tuple[str, ...]
    thresholds: Mapping[str, float]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input_name: str = "images"
    output_name: str = "probabilities"
    outputs: OutputKind = "probabilities"
    onnx_sha256: str = ""
    created_at: str = ""
    parent_version: str | None = None
    architecture: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    training: Mapping[str, Any] = field(default_factory=dict)
    gate: Mapping[str, Any] = field(default_factory=dict)
    library_versions: Mapping[str, str] = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "@" in self.name:
            raise CardError(f"card.name must be a plain name without '/' or '@', got {self.name!r}")
        if not self.classes:
            raise CardError("card.classes is empty")
        if len(set(self.classes)) != len(self.classes):
            raise CardError("card.classes has duplicates")
        missing = [c for c in self.classes if c not in self.thresholds]
        if missing:
            raise CardError(f"card.thresholds has no value for classes {missing[:5]}")
        extra = [c for c in self.thresholds if c not in set(self.classes)]
        if extra:
            raise CardError(f"card.thresholds names unknown classes {extra[:5]}")
        for cls_name, value in self.thresholds.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise CardError(f"card.thresholds[{cls_name!r}] must be a probability in [0, 1], got {value!r}")
        if self.outputs not in ("probabilities", "logits"):
            raise CardError(f"card.outputs must be 'probabilities' or 'logits', got {self.outputs!r}")

    @property
    def threshold_vector(self) -> list[float]:
        """Thresholds in class order, ready to compare against a probability row."""
        return [float(self.thresholds[c]) for c in self.classes]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes)
        data["thresholds"] = {c: float(self.thresholds[c]) for c in self.classes}
        data["preprocessing"]["mean"] = list(self.preprocessing.mean)
        data["preprocessing"]["std"] = list(self.preprocessing.std)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CardError(f"card: unknown fields {sorted(unknown)}")
        for required in ("name", "version", "classes", "thresholds"):
            if required not in data:
                raise CardError(f"card: missing required field {required!r}")
        fmt = int(data.get("format_version", CARD_FORMAT_VERSION))
        if fmt > CARD_FORMAT_VERSION:
            raise CardError(f"card format {fmt} is newer than this code understands ({CARD_FORMAT_VERSION})")
        values = dict(data)
        values["classes"] = tuple(values["classes"])
        values["thresholds"] = {str(k): float(v) for k, v in values["thresholds"].items()}
        values["preprocessing"] = Preprocessing.from_dict(values.get("preprocessing", {}))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"card.json is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CardError("card.json must hold a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)
