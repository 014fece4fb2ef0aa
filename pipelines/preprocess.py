"""Model-input preprocessing, driven only by the model card's ``Preprocessing`` spec.

The training job's evaluation, the batch and streaming pipelines and third-party consumers all call this one
function, so the numbers the training job reports are the numbers production sees.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from schemas.card import Preprocessing

# Above this many input-size squares, the resized intermediate of a centre crop is skipped (see below).
MAX_INTERMEDIATE_SQUARES = 16
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resize_for_model(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize (and for ``shorter_side_center_crop`` crop) an RGB image to ``input_size`` square."""
    size = spec.input_size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize == "stretch":
        return image if image.size == (size, size) else image.resize((size, size), resample)
    w, h = image.size
    scale = spec.resize_shorter / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    if nw * nh > MAX_INTERMEDIATE_SQUARES * size * size:
        # An extreme aspect ratio (an 8 x 200 000 strip, 3 KB as PNG) would make the intermediate gigapixels:
        # resize only the source region the crop keeps.
        sx, sy = w / nw, h / nh
        return image.resize((size, size), resample, box=(left * sx, top * sy, (left + size) * sx, (top + size) * sy))
    resized = image.resize((nw, nh), resample)
    return resized.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """RGB image -> one float32 model input (CHW or HWC per ``spec.layout``), normalised per the card.

    ``(x * scale - mean) / std`` is computed as ``x * (scale / std) - mean / std`` straight from the uint8
    pixels into the one output array, in its final layout: one allocation and two passes instead of a float
    copy, two temporaries and a transposing copy of 600 kB arrays (this step measured 8-10x faster at 224 px,
    docs/benchmarks.md).
    """
    resized = resize_for_model(image, spec)
    arr = np.asarray(resized)  # HWC uint8, RGB
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if spec.channel_order == "BGR":
        arr = arr[..., ::-1]
        mean, std = mean[::-1], std[::-1]
    gain = np.float32(spec.scale) / std
    offset = mean / std
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)  # a view; the multiply below writes the contiguous CHW result
        gain, offset = gain.reshape(3, 1, 1), offset.reshape(3, 1, 1)
    out = np.empty(arr.shape, dtype=np.float32)
    np.multiply(arr, gain, out=out)
    out -= offset
    return out


def draft_size_for(spec: Preprocessing) -> tuple[int, int]:
    """The smallest size a JPEG may be DCT-downscaled to before :func:`resize_for_model` without losing detail."""
    side = spec.input_size if spec.resize == "stretch" else spec.resize_shorter
    return (side, side)
