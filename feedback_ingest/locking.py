"""An exclusive, non-blocking lock file: two runs of the same job (or two ingests into one dataset) never
overlap. The kernel releases an flock when its process dies, so a crashed run never leaves a stale lock."""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from typing import Iterator

from schemas.errors import UserError


class LockBusy(UserError):
    """Another run holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str, what: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise LockBusy(f"{what} is locked by another run ({holder or 'unknown holder'}); try again later")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)
