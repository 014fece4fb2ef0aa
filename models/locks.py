"""A blocking, cross-process lock on a local (or NFS) file: writers of one model take turns.

``flock`` belongs to the open file description, so it excludes other processes *and* other threads of this
process (each call opens the file anew), and the kernel drops it when its holder dies: a crashed writer never
leaves a stale lock behind. The file names its current holder, for the error a waiter gives up with.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from typing import Iterator

from schemas.errors import UserError

DEFAULT_TIMEOUT_S = 120.0


class LockTimeout(UserError):
    """The lock could not be taken: held for longer than the caller would wait, or not creatable."""


@contextlib.contextmanager
def file_lock(path: str, what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed), waiting up to ``timeout_s`` for it."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # e.g. a read-only registry: writing needs the lock, reading does not
        raise LockTimeout(f"cannot take the lock of {what} ({path}: {exc.strerror or exc})") from None
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown holder"
                    raise LockTimeout(f"{what} is locked by another writer ({holder}) for more than "
                                      f"{timeout_s:.0f} s; try again later ({path})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        os.ftruncate(fd, 0)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since {now}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
