"""The dead-letter reason vocabulary: the ``error_class`` values a batch dead letter can carry, per stage.

Part of the output contract (analysts group by it, alerts match on it), so the codes are stable and defined
once; ``docs/batch.md`` explains each and a test checks that it does. The message column carries the details
(exception class, sizes, limits) in one line.
"""
from __future__ import annotations

#: stage -> {reason: what it means}. An exception nobody anticipated becomes ``unexpected_error`` in the
#: stage where it happened, with ``ExceptionClass: message`` as its message: it costs one input, never the run.
REASONS: dict[str, dict[str, str]] = {
    "read": {
        "missing": "the path does not exist (including a dangling symlink or a manifest entry naming nothing)",
        "symlink_loop": "a symlink that points back into itself, or too many levels of links",
        "permission_denied": "the file exists but this process may not read it",
        "not_a_regular_file": "a directory, FIFO, socket or device (also through a symlink): never read",
        "too_large": "the file is larger than --max-bytes; rejected before reading (sparse files included)",
        "read_timeout": "reading took longer than --read-timeout seconds (stalled network filesystem, ...)",
        "io_error": "any other error of the operating system or Beam filesystem while opening or reading",
    },
    "decode": {
        "empty": "a zero-byte file",
        "not_an_image": "the bytes are no image format Pillow recognises",
        "unsupported_format": "an image format the platform does not tag (e.g. PSD, ICO, PDF)",
        "corrupt": "a recognised format whose data is truncated, malformed or inconsistent",
        "too_many_pixels": "width x height is over --max-pixels (a decompression bomb by its header)",
        "too_large_decoded": "decoding needs more memory (bytes per pixel of its mode) than --max-decoded-bytes",
        "too_small": "a side is shorter than the minimum (8 px)",
    },
    "preprocess": {"preprocess_failed": "resizing or normalising the decoded image failed"},
    "inference": {"inference_failed": "the model failed on the batch holding this image"},
}
UNEXPECTED = "unexpected_error"


def all_reasons() -> set[str]:
    return {r for stage in REASONS.values() for r in stage} | {UNEXPECTED}
