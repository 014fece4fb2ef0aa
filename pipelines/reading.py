"""Bounded reading: regular files only, a byte cap and a time cap, checked before any byte is held.

A FIFO blocks ``open`` and ``read`` forever, ``/dev/zero`` never ends, a 3 GiB sparse file costs 3 GiB: an
archive may hold any of them, behind any name or symlink. Local paths are therefore stat'ed first (no device
node is ever opened), opened with ``O_NONBLOCK`` and ``fstat``'ed again on the descriptor (the name may have
changed in between), their size checked against the cap, and read in chunks under a deadline. Other Beam
filesystems (object stores hold only objects) are read in chunks under the same caps. Every failure is a
:class:`ReadError` with a stable reason (``schemas/reasons.py``).

With a :class:`~pipelines.memory.MemoryBudget`, the bytes are reserved before they are read (a local file's
size from the open descriptor; ``max_bytes`` for other filesystems, whose size is not known up front) and
stay reserved until the caller closes its ``hold`` stack, so what reading threads hold at once is bounded by
the budget, not by the number of threads times ``max_bytes``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import time

from pipelines.memory import MemoryBudget
from pipelines.paths import is_local, local_path, one_line

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # 64 MiB: a 12 MP JPEG is 3-8 MB, an uncompressed 20 MP RGB TIFF 60 MB
DEFAULT_READ_TIMEOUT = 60.0  # seconds for one file; a local disk reads 64 MiB in well under a second
CHUNK = 1024 * 1024


class ReadError(OSError):
    """An input that cannot be read; ``reason`` is a stable code from ``schemas.reasons.REASONS['read']``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(one_line(message))
        self.reason = reason


_ERRNO_REASONS = {
    errno.ENOENT: "missing",
    errno.ENOTDIR: "missing",
    errno.ELOOP: "symlink_loop",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EISDIR: "not_a_regular_file",
    errno.ENXIO: "not_a_regular_file",  # a socket, or a FIFO opened for writing
}


def read_bounded(uri: str, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_READ_TIMEOUT, *,
                 budget: MemoryBudget | None = None, hold: contextlib.ExitStack | None = None) -> bytes:
    """All bytes of ``uri`` (a local path, ``file://`` URI or any Beam filesystem URI) or a ReadError.

    With ``budget`` and ``hold``, the bytes are reserved from ``budget`` before reading, until ``hold`` closes."""
    deadline = time.monotonic() + timeout
    reserve = (lambda n: hold.enter_context(budget.reserve(min(n, budget.total)))) if budget and hold else None
    if is_local(uri):
        return _read_local(local_path(uri), max_bytes, deadline, uri, reserve)
    if reserve:
        reserve(max_bytes)
    return _read_beam(uri, max_bytes, deadline)


def open_regular(path: str, max_bytes: int, uri: str | None = None) -> int:
    """A read-only descriptor of ``path`` if it is a regular file of at most ``max_bytes``; else ReadError.

    Never opens a device, FIFO or socket (stat first), and checks the descriptor again (the name may have
    been swapped in between); ``O_NONBLOCK`` so that even a FIFO swapped in cannot block the open."""
    uri = path if uri is None else uri
    try:
        if "\0" in path:
            raise ReadError("missing", f"{uri} contains a NUL byte: no file can have this name")
        _check_regular(os.stat(path), max_bytes, uri)  # follows symlinks: a link to /dev/zero is a device
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ReadError:
        raise
    except OSError as exc:
        raise _from_os_error(exc, uri) from exc
    try:
        _check_regular(os.fstat(fd), max_bytes, uri)
        os.set_blocking(fd, True)  # regular files never block anyway; keep reads plain
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_local(path: str, max_bytes: int, deadline: float, uri: str, reserve=None) -> bytes:
    fd = open_regular(path, max_bytes, uri)
    try:
        if reserve:
            reserve(os.fstat(fd).st_size)  # may wait for other threads' inputs to be decoded
        return _read_chunks(lambda n: os.read(fd, n), max_bytes, deadline, uri)
    except ReadError:
        raise
    except OSError as exc:  # EIO and friends while reading
        raise _from_os_error(exc, uri) from exc
    finally:
        os.close(fd)


def _check_regular(st: os.stat_result, max_bytes: int, uri: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ReadError("not_a_regular_file", f"{uri} is a {_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise ReadError("too_large", f"{uri} is {st.st_size} bytes, over the limit of {max_bytes} (--max-bytes)")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _read_chunks(read, max_bytes: int, deadline: float, uri: str) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = read(min(CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:  # it grew after the size check, or the filesystem reports no size
            raise ReadError("too_large", f"{uri} holds more than the limit of {max_bytes} bytes (--max-bytes)")
        if time.monotonic() > deadline:
            raise ReadError("read_timeout", f"{uri}: reading took longer than the time limit (--read-timeout)")


def _read_beam(uri: str, max_bytes: int, deadline: float) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            return _read_chunks(fh.read, max_bytes, deadline, uri)
    except ReadError:
        raise
    except FileNotFoundError as exc:
        raise ReadError("missing", f"{uri}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # missing objects, permissions, transient store errors: Beam wraps them variously
        reason = "missing" if "not found" in str(exc).lower() or "no such" in str(exc).lower() else "io_error"
        raise ReadError(reason, f"{uri}: {type(exc).__name__}: {exc}") from exc


def _from_os_error(exc: OSError, uri: str) -> ReadError:
    reason = _ERRNO_REASONS.get(exc.errno or 0, "io_error")
    return ReadError(reason, f"{uri}: {exc.strerror or type(exc).__name__} (errno {exc.errno})")
