"""Element types flowing through the tagging transforms (shared by the batch and streaming jobs).

Plain NamedTuples: cheap, picklable, and clear about what each stage adds.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
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


class ClassProbabilities(Mapping[str, float]):
    """One image's probabilities, read as ``{class: probability}`` but stored as the model's output vector.

    A real dict costs a thousand Python objects per image for an ImageNet-sized model, all built under the GIL
    that the decode and inference threads need, only for the Parquet writer to turn them back into a vector;
    the writer reads :attr:`vector` instead, and anything else reads a mapping as before."""

    __slots__ = ("classes", "vector", "_index")

    def __init__(self, classes: tuple[str, ...], vector: np.ndarray) -> None:
        if vector.shape != (len(classes),):
            raise ValueError(f"{vector.shape} probabilities for {len(classes)} classes")
        self.classes, self.vector = classes, vector
        self._index: dict[str, int] | None = None  # made on the first read by class name

    def __getitem__(self, key: str) -> float:
        if self._index is None:
            self._index = _class_index(self.classes)
        return self.vector.item(self._index[key])

    def to_dict(self) -> dict[str, float]:
        """A plain dict (what ``dict(self)`` gives, built in one step)."""
        return dict(zip(self.classes, self.vector.tolist()))

    def items(self):  # the views of a plain dict: same behaviour as Mapping's, without a lookup per class
        return self.to_dict().items()

    def values(self):
        return self.to_dict().values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __reduce__(self):
        return ClassProbabilities, (self.classes, self.vector)

    def __repr__(self) -> str:
        return f"ClassProbabilities({self.to_dict()!r})"


def as_dict(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Any probabilities mapping as a plain dict, without a lookup per class for :class:`ClassProbabilities`."""
    if isinstance(probabilities, ClassProbabilities):
        return probabilities.to_dict()
    return dict(probabilities)


@functools.lru_cache(maxsize=16)
def _class_index(classes: tuple[str, ...]) -> dict[str, int]:
    return {c: i for i, c in enumerate(classes)}


class Tagged(NamedTuple):
    info: ImageInfo
    tags: tuple[str, ...]
    probabilities: Mapping[str, float]  # ClassProbabilities from the pipelines; any mapping is accepted
    model_name: str
    model_version: str
    model_variant: str = "fp32"  # which of the version's model files ran: fp32 | int8


class Failure(NamedTuple):
    """An input that will not be tagged, and why; becomes a dead-letter row."""

    uri: str
    stage: str  # read | decode | preprocess | inference
    error_class: str  # DecodeError reason or exception class name
    message: str
