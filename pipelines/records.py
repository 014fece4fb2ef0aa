"""Element types flowing through the tagging transforms (shared by the batch and streaming jobs).

Plain NamedTuples: cheap, picklable, and clear about what each stage adds.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

# Tag names of multi-output transforms.
MAIN = "main"
FAILED = "failed"


class ImageInput(NamedTuple):
    """Raw bytes of one image and where they came from (a file URI, or a Kafka topic/partition/offset)."""

    uri: str
    data: bytes
    sha256: str | None = None  # set by a reader that already hashed ``data`` (incremental runs), so it is hashed once


class ImageInfo(NamedTuple):
    """Facts about the original file that end up in the output row."""

    uri: str
    content_sha256: str
    width: int
    height: int
    format: str


class DecodedImageRecord(NamedTuple):
    info: ImageInfo
    image: Image.Image


class Prepared(NamedTuple):
    info: ImageInfo
    tensor: np.ndarray


class Scored(NamedTuple):
    """Model output for one image: probabilities in card class order plus the model that made them."""

    info: ImageInfo
    probabilities: np.ndarray
    model_name: str
    model_version: str
    model_variant: str = "fp32"


class Tagged(NamedTuple):
    info: ImageInfo
    tags: tuple[str, ...]
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    model_variant: str = "fp32"  # which of the version's model files ran: fp32 | int8


class Failure(NamedTuple):
    """An input that will not be tagged, and why; becomes a dead-letter row."""

    uri: str
    stage: str  # read | decode | preprocess | inference
    error_class: str  # DecodeError reason or exception class name
    message: str
