"""The model card: the one contract between the training job and every consumer of a model.

A consumer (batch tagging, streaming moderation, feedback validation, a plain onnxruntime script) needs
nothing but ``card.json`` and ``model.onnx``: classes, thresholds and preprocessing all live here, so
nothing about a model is hard-coded elsewhere.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from schemas import json_values
from schemas.json_values import JSONValueError
from schemas.model_refs import RefError, check_name, check_version

CARD_FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"
MAX_INPUT_SIZE = 4096  # a 4096^2 RGB float32 tensor is 200 MB per image already
_SHA256 = re.compile("[0-9a-f]{64}")
_FILE_NAME = re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

ResizePolicy = Literal["stretch", "shorter_side_center_crop"]
OutputKind = Literal["probabilities", "logits"]


class CardError(JSONValueError):
    """A card that is missing fields, holds a value of the wrong type or contradicts itself."""


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
        if not 0 < self.input_size <= MAX_INPUT_SIZE:
            raise CardError(f"preprocessing.input_size must be in 1..{MAX_INPUT_SIZE}, got {self.input_size}")
        if self.resize not in ("stretch", "shorter_side_center_crop"):
            raise CardError(f"preprocessing.resize: unknown policy {self.resize!r}")
        if not self.input_size <= self.resize_shorter <= 2 * MAX_INPUT_SIZE and self.resize != "stretch":
            raise CardError("preprocessing.resize_shorter must be >= input_size for a centre crop "
                            f"(and <= {2 * MAX_INPUT_SIZE})")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise CardError("preprocessing.mean and std need three values, std positive")
        if not all(math.isfinite(v) for v in (self.scale, *self.mean, *self.std)) or self.scale <= 0:
            raise CardError("preprocessing.scale, mean and std must be finite numbers, scale positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "preprocessing") -> "Preprocessing":
        return cls(**json_values.check_fields(cls, data, path))


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
    # sha256 of every other file of the version (report, variants...), filled in by the registry on publish
    files: Mapping[str, str] = field(default_factory=dict)
    # Model files of this version by precision ("fp32" is model.onnx; "int8" model.int8.onnx), each with its
    # file, sha256, status ("published" | "withheld"), withheld_reason, metrics and calibration facts.
    variants: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            check_name(self.name, "card.name")
            if self.version:
                check_version(self.version, "card.version")
        except RefError as exc:
            raise CardError(str(exc)) from None
        if not self.classes:
            raise CardError("card.classes is empty")
        for i, name in enumerate(self.classes):
            if not isinstance(name, str) or not name.strip() or any(unicodedata.category(ch) == "Cc" for ch in name):
                raise CardError(f"card.classes[{i}] must be a non-blank name without control characters, "
                                f"got {name!r}")
        if len({unicodedata.normalize("NFC", c) for c in self.classes}) != len(self.classes):
            raise CardError("card.classes has duplicates")
        missing = [c for c in self.classes if c not in self.thresholds]
        if missing:
            raise CardError(f"card.thresholds has no value for classes {missing[:5]}")
        extra = [c for c in self.thresholds if c not in set(self.classes)]
        if extra:
            raise CardError(f"card.thresholds names unknown classes {extra[:5]}")
        for cls_name, value in self.thresholds.items():
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise CardError(f"card.thresholds[{cls_name!r}] must be a probability in [0, 1], got {value!r}")
        if self.outputs not in ("probabilities", "logits"):
            raise CardError(f"card.outputs must be 'probabilities' or 'logits', got {self.outputs!r}")
        if self.onnx_sha256 and _SHA256.fullmatch(self.onnx_sha256) is None:
            raise CardError(f"card.onnx_sha256 must be a lower-case hex sha256, got {self.onnx_sha256[:80]!r}")
        if not 1 <= self.format_version <= CARD_FORMAT_VERSION:
            raise CardError(f"card.format_version {self.format_version} is not one this code understands "
                            f"(1..{CARD_FORMAT_VERSION}; a newer tagger wrote it?)")
        for file_name, digest in self.files.items():
            if _FILE_NAME.fullmatch(file_name) is None or file_name == CARD_FILE:
                raise CardError(f"card.files: {file_name!r} is not a plain file name of the version")
            if _SHA256.fullmatch(digest) is None:
                raise CardError(f"card.files[{file_name!r}] must be a lower-case hex sha256, got {digest[:80]!r}")
        if self.files.get(MODEL_FILE, self.onnx_sha256) != self.onnx_sha256:
            raise CardError(f"card.files[{MODEL_FILE!r}] and card.onnx_sha256 disagree")
        _check_variants(self.variants, self.classes)

    def published_variants(self) -> list[str]:
        """Precisions this version can run: always ``fp32``, plus every variant published beside it."""
        extra = [n for n, v in self.variants.items() if n != "fp32" and v.get("status") == "published"]
        return ["fp32", *sorted(extra)]

    def for_variant(self, variant: str) -> "ModelCard":
        """This card as seen by ``variant``: its own thresholds if it was recalibrated, else the card's."""
        own = self.variants.get(variant, {}).get("class_thresholds") if variant != "fp32" else None
        return self.replace(thresholds=dict(own)) if own else self

    def artifact_digests(self) -> dict[str, str]:
        """{file name: sha256} of every file of the version this card vouches for (model.onnx included)."""
        listed = dict(self.files)
        if self.onnx_sha256:
            listed[MODEL_FILE] = self.onnx_sha256
        return listed

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
        """A card from a JSON object; every field is type-checked and errors name the field."""
        try:
            fmt = data.get("format_version", CARD_FORMAT_VERSION) if isinstance(data, Mapping) else None
            if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > CARD_FORMAT_VERSION:
                raise CardError(f"card.format_version {fmt} is newer than this code understands "
                                f"({CARD_FORMAT_VERSION})")
            return cls(**json_values.check_fields(cls, data))
        except CardError:
            raise
        except JSONValueError as exc:
            raise CardError(str(exc)) from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelCard":
        try:
            data = json_values.loads_strict(text)
        except JSONValueError as exc:
            raise CardError(f"card.json {exc}") from None
        if not isinstance(data, dict):
            raise CardError(f"card.json must hold a JSON object, got {json_values.describe(data)}")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)


_VARIANT_STATUSES = ("published", "withheld")


def _check_variants(variants: Any, classes: tuple[str, ...]) -> None:
    """A hand-edited ``variants`` block must name plain files next to card.json and valid thresholds."""
    if not isinstance(variants, Mapping):
        raise CardError("card.variants must be an object of precision -> entry")
    for name, entry in variants.items():
        where = f"card.variants[{name!r}]"
        if not isinstance(name, str) or not name.isidentifier():
            raise CardError(f"{where}: the variant name must be a plain identifier")
        if not isinstance(entry, Mapping):
            raise CardError(f"{where} must be an object")
        file = entry.get("file")
        if not isinstance(file, str) or _FILE_NAME.fullmatch(file) is None or not file.endswith(".onnx"):
            raise CardError(f"{where}.file must be a plain .onnx file name beside card.json, got {file!r}")
        if entry.get("status") not in _VARIANT_STATUSES:
            raise CardError(f"{where}.status must be one of {_VARIANT_STATUSES}, got {entry.get('status')!r}")
        if not isinstance(entry.get("sha256", ""), str):
            raise CardError(f"{where}.sha256 must be a string")
        own = entry.get("class_thresholds")
        if own is not None:
            if not isinstance(own, Mapping) or set(own) != set(classes):
                raise CardError(f"{where}.class_thresholds must give one threshold per class of the card")
            for cls_name, value in own.items():
                if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                        and 0.0 <= value <= 1.0):
                    raise CardError(f"{where}.class_thresholds[{cls_name!r}] must be a probability in [0, 1]")
