"""Property-based fuzzing of decode_image (hypothesis), in CI within a bounded budget.

The property: for ANY byte string, decode_image returns an upright RGB image of the size it reports, or raises
DecodeError with a reason from the documented vocabulary and a one-line message; never another exception,
never a hang. Inputs are seeded from valid files of every supported format (plus EXIF blocks) and mutated
(bit flips, truncation, splices, header fields set to extremes), which reaches far deeper into the decoders
than random bytes. Crashes it found are kept below as explicit regression examples.
"""
from __future__ import annotations

import functools
import io
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.decode import DecodeError, decode_image
from schemas.reasons import REASONS
from tests.hostile_corpus import exif_block, good_image, png_stream, tiff_strip_reuse, with_exif

DECODE_REASONS = set(REASONS["decode"])
# Bounded budget: ~300 examples of small inputs take a few seconds on one core.
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@functools.cache
def seeds() -> list[bytes]:
    files = [good_image(3, (40, 30), fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")]
    rgba = io.BytesIO()
    Image.new("RGBA", (24, 24), (1, 2, 3, 4)).save(rgba, format="PNG")
    files += [rgba.getvalue(), png_stream(64, 48, 0, 16, fill=7), tiff_strip_reuse(32, 32, 32, 3),
              with_exif(good_image(4, (40, 30)), exif_block([(0x0112, 3, 1, struct.pack("<H", 6)),
                                                              (0x0111, 2, 4, b"abc\x00")]))]
    return files


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "extreme", "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "extreme" and len(data) >= pos + 4:
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff",
                                                      b"\x00\x01\x00\x00", b"\xff\xff\x00\x00"]))
        elif op == "splice":
            other = draw(st.sampled_from(seeds()))
            data[pos:] = other[draw(st.integers(0, len(other) - 1)):]
    return bytes(data)


def check_decode(data: bytes) -> None:
    try:
        out = decode_image(data, max_decoded_bytes=64 << 20)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS, exc.reason
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.image.mode == "RGB"
    assert sorted(out.image.size) == sorted((out.width, out.height)) and min(out.image.size) >= 8


@FUZZ
@given(mutated_images())
@example(with_exif(good_image(4, (40, 30)), exif_block([(0x0112, 3, 1, struct.pack("<H", 6)), (0x0111, 2, 4, b"abc\x00")])))
def test_decode_of_mutated_images_returns_rgb_or_a_documented_reason(data):
    check_decode(data)


@settings(max_examples=150, deadline=2000, derandomize=True)
@given(st.binary(max_size=2048))
@example(b"\x89PNG\r\n\x1a\n")
@example(b"II*\x00\x08\x00\x00\x00")
@example(b"GIF89a" + b"\xff" * 20)
def test_decode_of_arbitrary_bytes_returns_rgb_or_a_documented_reason(data):
    check_decode(data)


@pytest.mark.parametrize("width,height,color,bits", [(1000, 700, 0, 16), (300, 200, 6, 8), (260, 180, 4, 8)])
def test_high_bit_depth_and_alpha_pngs_decode_to_rgb(width, height, color, bits):
    out = decode_image(png_stream(width, height, color, bits, fill=200))
    assert out.image.mode == "RGB" and (out.width, out.height) == (width, height)
