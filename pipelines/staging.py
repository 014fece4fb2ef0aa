"""Run locks and orphaned staging: a killed run must not leave ``_staging/<run_id>/`` behind forever.

Every local run holds an exclusive ``flock`` on ``_staging/<run_id>.lock`` for as long as its launcher lives;
the kernel drops the lock when the process dies, however it dies (SIGKILL included). The next run into the
same output removes every staging directory whose lock nobody holds, and leaves live runs alone. A staging
directory without a lock file (a run killed between creating the two) counts as orphaned once it is older
than :data:`UNLOCKED_GRACE_S`. Object-store outputs have no locks: their orphans are listed, not removed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

from models import storage
from schemas.tagging import STAGING_DIR

LOG = logging.getLogger(__name__)
UNLOCKED_GRACE_S = 3600.0


@dataclass
class RunLock:
    """The held lock of one run (``release`` when the run is over; process death releases it too)."""

    path: str
    fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        if self.fd is None:
            return
        for remove in (os.unlink, os.rmdir):  # the lock file, then _staging itself if no other run uses it
            try:
                remove(self.path if remove is os.unlink else os.path.dirname(self.path))
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None


def lock_run(output: str, run_id: str) -> RunLock | None:
    """Take this run's lock (local outputs only; None elsewhere)."""
    if not storage.is_local(output):
        return None
    directory = storage.join(output, STAGING_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{run_id}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: another run's cleaner may be probing it for an instant
    return RunLock(path, fd)


def _held(lock_path: str) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe lock we may have taken
    return False


def clean_orphans(output: str, own_run_id: str, now: float | None = None) -> list[str]:
    """Remove staging directories (and stale lock files) of runs that are no longer alive; returns their run ids.

    On object stores nothing is removed; the orphaned run ids are returned for the caller to report."""
    staging = storage.join(output, STAGING_DIR)
    if not storage.is_local(output):
        return [d for d in storage.list_dirs(staging) if d != own_run_id]
    if not os.path.isdir(staging):
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in sorted(os.listdir(staging)):
        run_id = entry.removesuffix(".lock")
        if run_id == own_run_id:
            continue
        path = os.path.join(staging, entry)
        lock = os.path.join(staging, f"{run_id}.lock")
        if entry.endswith(".lock"):
            if not os.path.isdir(os.path.join(staging, run_id)) and not _held(lock):
                _remove(path)
            continue
        if os.path.exists(lock):
            orphaned = not _held(lock)
        else:
            orphaned = now - os.lstat(path).st_mtime > UNLOCKED_GRACE_S
        if orphaned:
            _remove(path)
            if os.path.exists(lock) and not _held(lock):
                _remove(lock)
            removed.append(run_id)
    if removed:
        LOG.warning("removed the staging files of %d interrupted run(s) under %s: %s", len(removed), staging,
                    ", ".join(removed))
    return removed


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
