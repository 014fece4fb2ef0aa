"""A corpus of inputs that must become dead letters (never crash a run), with the reason each should give.

``write_bad_corpus(dir)`` writes them and returns {file name: expected (stage, error_class)}; error_class is
the DecodeError reason for decode failures.
"""
from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image

from tests.synthetic import encode, make_sample


def _good_jpeg() -> bytes:
    import random

    return encode(make_sample(random.Random(7), (120, 90)).image)


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A ~70-byte PNG whose header claims width x height pixels (a decompression bomb by its header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def bad_files() -> dict[str, tuple[bytes, tuple[str, str]]]:
    good = _good_jpeg()
    corrupt = bytearray(good)
    corrupt[200:600] = b"\x00" * 400  # entropy-coded data overwritten, header intact
    tiny = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tiny, format="PNG")
    return {
        "zero_bytes.jpg": (b"", ("decode", "empty")),
        "notes.jpg": (b"this is a text file, not an image\n" * 20, ("decode", "not_an_image")),
        "truncated.jpg": (good[: len(good) // 3], ("decode", "corrupt")),
        "header_only.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", ("decode", "corrupt")),
        "bomb.png": (png_bomb(), ("decode", "too_many_pixels")),
        "tiny.png": (tiny.getvalue(), ("decode", "too_small")),
        "scrambled.jpg": (bytes(corrupt), None),  # may decode to garbage pixels or fail: either is accounted
        "pdf_document.jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", ("decode", "not_an_image")),
    }


def write_bad_corpus(directory: str) -> dict[str, tuple[str, str] | None]:
    """Write every bad file into ``directory``; returns {name: expected (stage, reason) or None if either}."""
    os.makedirs(directory, exist_ok=True)
    expected = {}
    for name, (data, outcome) in bad_files().items():
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(data)
        expected[name] = outcome
    return expected
