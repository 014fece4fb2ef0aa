"""The decode memory budget: what decoding one image costs, and a process-wide cap on what decodes hold at once.

Pillow holds a decoded image at 1 byte per pixel (modes 1, L, P), 2 (I;16) or 4 (everything else, RGB
included: it pads to 4); converting to RGB, compositing alpha, scaling 16-bit or float data and turning the
image upright each add copies. :func:`decode_cost` is that peak for one image, from its header, before a
single pixel is decoded, so an image whose decode would need more than the limit is refused, and the
:class:`MemoryBudget` shared by every decoding thread of the process makes big decodes wait for each other
instead of adding up. Each thread holds at most one reservation, taken in one step (no hold-and-wait), so
waiting cannot deadlock; a reservation bigger than the whole budget is refused instead of waiting.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

DEFAULT_MAX_DECODED_BYTES = 512 * 1024 * 1024

# Bytes per pixel Pillow stores for a mode.
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Extra bytes per pixel at the peak of turning that mode into RGB (pipelines/decode.py:to_rgb).
_TO_RGB = {"RGB": 0, "L": 4, "1": 4, "P": 9, "I;16": 8, "I;16L": 8, "I;16B": 8, "I;16N": 8, "I": 10, "F": 10,
           "RGBA": 5, "LA": 9, "PA": 9, "RGBa": 9, "La": 9}
_OTHER_TO_RGB = 4
UPRIGHT_COPY = 4  # an EXIF-rotated image is copied once, as RGB


def decode_cost(mode: str, width: int, height: int, *, rotated: bool = False, data_bytes: int = 0) -> int:
    """Peak bytes decoding a ``width`` x ``height`` image of ``mode`` to upright RGB holds (plus its input)."""
    per_pixel = _STORED.get(mode, 4) + _TO_RGB.get(mode, _OTHER_TO_RGB) + (UPRIGHT_COPY if rotated else 0)
    return width * height * per_pixel + data_bytes


class MemoryBudget:
    """A byte budget that threads reserve from and give back; waits while others hold what is needed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._cond = threading.Condition()

    def resize(self, total: int) -> None:
        with self._cond:
            self.total = total
            self._cond.notify_all()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.total:
            raise ValueError(f"{nbytes} bytes is more than the whole budget of {self.total}")
        with self._cond:
            self._cond.wait_for(lambda: self._used + nbytes <= self.total)
            self._used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()

    @property
    def used(self) -> int:
        return self._used


#: The budget every decode in this process shares (local runs: all worker threads of `tagger tag`).
DECODE_BUDGET = MemoryBudget(DEFAULT_MAX_DECODED_BYTES)

#: Raw input bytes all reading threads of a process may hold at once (from the read until the input is decoded
#: and preprocessed): four inputs at the default --max-bytes, whatever the worker count. Reads wait for each
#: other instead of adding up; a raised --max-bytes raises it to one input (pipelines/inputs.py).
DEFAULT_RAW_BYTES_IN_FLIGHT = 256 * 1024 * 1024
RAW_BUDGET = MemoryBudget(DEFAULT_RAW_BYTES_IN_FLIGHT)
