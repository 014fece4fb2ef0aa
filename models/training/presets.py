"""Image presets: how training images are augmented and how evaluation images are prepared.

Evaluation uses exactly what every consumer uses (``decode_image`` with the card's draft size, then
``preprocess``), so validation/test numbers are the numbers production sees. Training decodes the same way,
keeps a slightly larger uint8 copy in memory (decoding once per run, not per epoch) and augments it on the fly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models import storage
from models.training.data import DataReport, RawRow
from pipelines.decode import DecodeError, decode_image
from pipelines.preprocess import draft_size_for, preprocess
from schemas.card import Preprocessing

TRAIN_CACHE_RATIO = 8 / 7  # 256 px cached for a 224 px model: room for random crops


@dataclass
class Decoded:
    images: dict[str, Image.Image]  # path -> RGB image (JPEG draft-decoded, as consumers decode)
    content_sha256: dict[str, str]


def decode_rows(rows: list[RawRow], spec: Preprocessing, report: DataReport) -> Decoded:
    """Decode every row's image as consumers do; unreadable images are reported, not raised."""
    images: dict[str, Image.Image] = {}
    hashes: dict[str, str] = {}
    draft = draft_size_for(spec)
    for row in rows:
        try:
            data = storage.read_bytes(row.path)
        except OSError as exc:
            report.add(row.row, row.key, "unreadable_file", f"{type(exc).__name__}: {exc}")
            continue
        try:
            decoded = decode_image(data, draft_size=draft)
        except DecodeError as exc:
            report.add(row.row, row.key, "unreadable_image", f"{exc.reason}: {exc}")
            continue
        images[row.path] = decoded.image
        hashes[row.path] = hashlib.sha256(data).hexdigest()
    return Decoded(images, hashes)


def eval_array(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The model input for evaluation: identical to what the batch and streaming jobs compute."""
    return preprocess(image, spec)


def train_cache_array(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """uint8 CHW copy, stretched a little larger than the model input, kept in memory for augmentation."""
    side = round(spec.input_size * TRAIN_CACHE_RATIO)
    arr = np.asarray(image.resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class TrainAugment:
    """Random resized crop, horizontal flip and brightness/contrast/saturation jitter, then the card's
    normalisation. Hue is left alone: colours can be tags."""

    def __init__(self, spec: Preprocessing, scale: tuple[float, float] = (0.5, 1.0), jitter: float = 0.2) -> None:
        from torchvision.transforms import v2

        if spec.channel_order != "RGB" or spec.layout != "NCHW":
            raise ValueError("training produces RGB NCHW models")
        self.spec = spec
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(spec.input_size, scale=scale, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            ]
        )

    def __call__(self, batch_uint8):  # (N, 3, S, S) uint8 tensor -> (N, 3, size, size) float32
        import torch

        out = torch.stack([self.transform(img) for img in batch_uint8]).float()
        return normalise(out, self.spec)


def normalise(batch, spec: Preprocessing):
    """Same arithmetic as ``pipelines.preprocess.preprocess`` on a float tensor of 0..255 values."""
    import torch

    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) / spec.scale
    inv_std = spec.scale / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - mean) * inv_std
