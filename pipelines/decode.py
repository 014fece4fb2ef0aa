"""Robust image decoding: bytes in, an RGB ``PIL.Image`` (or a precise error) out.

Pure and Beam-free so the batch job, the streaming job and training decode identically. Every failure is a
``DecodeError`` carrying a short machine-readable ``reason`` (``schemas/reasons.py``) and a one-line message,
never a bare Pillow exception: Pillow and its plugins raise far more than their own errors on hostile bytes
(``struct.error`` from EXIF, ``KeyError``, ``ZeroDivisionError``...), so anything raised while decoding one
input is that input's ``corrupt`` (or ``too_large_decoded`` for ``MemoryError``).

Memory is bounded before pixels are decoded: the header gives size and mode, :func:`pipelines.memory.
decode_cost` the peak bytes decoding needs; over ``max_decoded_bytes`` the image is refused, under it the
decode reserves that much from the process-wide budget (``pipelines/memory.py``).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from pipelines.memory import DECODE_BUDGET, DEFAULT_MAX_DECODED_BYTES, MemoryBudget, decode_cost
from pipelines.paths import one_line

# Pillow's own bomb guard warns at ~89 MP and raises at twice that; we enforce our limit explicitly instead.
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MIN_SIDE = 8
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
# Our own limits (pixels, decoded bytes) are checked right after the header is read, so Pillow's bomb warning
# is noise, as are its per-file warnings about corrupt EXIF/TIFF data (the input is tagged or dead-lettered
# either way). Filters set once: ``warnings.catch_warnings`` per call is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose, without
# re-parsing the EXIF block: that parse is what raised struct.error on a malformed StripOffsets tag).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                  Image.Transpose.ROTATE_90)


class DecodeError(ValueError):
    """An input that cannot become an image; ``reason`` is a stable short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus the facts about the original file analysts want."""

    image: Image.Image
    width: int  # after EXIF orientation, before any resizing
    height: int
    format: str


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    budget: MemoryBudget = DECODE_BUDGET,
    hold: contextlib.ExitStack | None = None,
) -> DecodedImage:
    """Decode ``data`` to RGB, honouring EXIF orientation; GIF/animated inputs give their first frame.

    ``draft_size`` lets JPEG decoding use DCT scaling to a size no smaller than the one given: decoding a
    12-megapixel photo at 1/4 or 1/8 scale is several times faster and loses nothing for a 224 px model.
    ``width``/``height`` always report the original (oriented) size. The memory reserved from ``budget`` is
    released on return, or, with ``hold``, when the caller closes that stack (after preprocessing the image).
    """
    if not data:
        raise DecodeError("empty", "zero-byte input")
    with contextlib.ExitStack() as own:
        try:
            return _decode(data, max_pixels, min_side, draft_size, max_decoded_bytes, budget,
                           hold if hold is not None else own)
        except DecodeError:
            raise
        except UnidentifiedImageError as exc:  # Pillow's message names a BytesIO object: useless
            raise DecodeError("not_an_image", "not a recognised image format") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeError("too_many_pixels", one_line(f"{type(exc).__name__}: {exc}")) from exc
        except MemoryError as exc:
            raise DecodeError("too_large_decoded", "out of memory while decoding") from exc
        except Exception as exc:  # noqa: BLE001 - hostile bytes make Pillow raise anything: one input's problem
            raise DecodeError("corrupt", one_line(f"{type(exc).__name__}: {exc}")) from exc


def _decode(data: bytes, max_pixels: int, min_side: int, draft_size: tuple[int, int] | None,
            max_decoded_bytes: int, budget: MemoryBudget, hold: contextlib.ExitStack) -> DecodedImage:
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "UNKNOWN"
    if fmt not in SUPPORTED_FORMATS:
        raise DecodeError("unsupported_format", f"unsupported image format {one_line(fmt, 40)}")
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            "too_many_pixels", f"{width}x{height} = {width * height} pixels exceeds the limit {max_pixels}"
        )
    if min(width, height) < min_side:
        raise DecodeError("too_small", f"{width}x{height} is smaller than {min_side} px on a side")
    upright = _UPRIGHT.get(_exif_orientation(img))
    quarter_turn = upright in _QUARTER_TURNS
    if quarter_turn:
        width, height = height, width
    if draft_size is not None and fmt in ("JPEG", "MPO"):
        img.draft("RGB", (draft_size[1], draft_size[0]) if quarter_turn else draft_size)
    cost = decode_cost(img.mode, *img.size, rotated=upright is not None, data_bytes=len(data))
    if cost > max_decoded_bytes:
        raise DecodeError(
            "too_large_decoded",
            f"{img.size[0]}x{img.size[1]} {img.mode} needs ~{cost >> 20} MiB to decode, over the limit of "
            f"{max_decoded_bytes >> 20} MiB (--max-decoded-bytes)",
        )
    hold.enter_context(budget.reserve(min(cost, budget.total)))
    img.load()
    rgb = to_rgb(img)
    del img
    if upright is not None:
        rgb = rgb.transpose(upright)
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: palette and alpha composited on white, CMYK, 16-bit, 32-bit integer and
    float data scaled to 8 bits, greyscale to three channels. Copies are made one at a time (float32, in
    place) so the peak stays what :func:`pipelines.memory.decode_cost` charges."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_scaled_to_8_bit(img), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    return img.convert("RGB")


def _scaled_to_8_bit(img: Image.Image):
    """16-bit and 32-bit integer data over their range (0-65535, or 0-255 when the values fit), float data
    from its minimum to its maximum, as uint8."""
    import numpy as np

    with np.errstate(all="ignore"):
        values = np.asarray(img).astype(np.float32)  # one copy; the bytes view goes right away
        if img.mode == "F":
            values[~np.isfinite(values)] = 0.0
            lo, hi = float(values.min()), float(values.max())
            values -= lo
            values *= 255.0 / (hi - lo) if hi > lo else 0.0
        else:
            top = 65535.0 if img.mode.startswith("I;16") or float(values.max()) > 255 else 255.0
            values *= 255.0 / top
            values += 0.5
        np.clip(values, 0, 255, out=values)
        return values.astype(np.uint8)


def _exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation if it is a valid one (an int 1-8); anything else in a broken block is ignored."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail an otherwise good image
        return None
    return value if type(value) is int and 1 <= value <= 8 else None
