"""Tiny file-store abstraction so the registry works on local disks and on object stores alike.

Local paths get real atomicity (write to a temporary name, fsync, ``os.replace``; directories renamed into
place). Other schemes (``gs://``, ``s3://``, ...) go through Beam's ``FileSystems``: single-object writes are
atomic there, directory renames are not, so the registry treats ``card.json`` as the commit marker and writes
it last.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from typing import Iterator


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(_local(base), *parts)
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(_local(path))
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def read_bytes(path: str, limit: int = -1) -> bytes:
    """The file's bytes (at most ``limit`` of them when given)."""
    if is_local(path):
        with open(_local(path), "rb") as fh:
            return fh.read(limit)
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as fh:
        return fh.read(limit)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old content or all of the new, never a prefix."""
    if is_local(path):
        path = _local(path)
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared registries from other users
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(directory)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as fh:  # object stores publish a single object atomically on close
        fh.write(data)


def _umask() -> int:
    """The process umask, read without setting it (os.umask() would race with other writer threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def list_dirs(path: str) -> list[str]:
    """Names of the immediate sub-directories (or prefixes) of ``path``; empty if it does not exist."""
    if is_local(path):
        path = _local(path)
        if not os.path.isdir(path):
            return []
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    from apache_beam.io.filesystems import FileSystems

    prefix = path.rstrip("/") + "/"
    names: set[str] = set()
    for match in FileSystems.match([prefix + "**"])[0].metadata_list:
        rest = match.path[len(prefix):]
        if "/" in rest:
            names.add(rest.split("/", 1)[0])
    return sorted(names)


def new_staging_dir(parent: str) -> str:
    """A fresh, private directory under ``parent`` to assemble files before publishing them."""
    path = join(parent, f".staging-{uuid.uuid4().hex}")
    if is_local(path):
        os.makedirs(_local(path))
    return path


def rename_dir(src: str, dst: str) -> bool:
    """Atomically move a local directory into place; False if ``dst`` already exists (someone won the race)."""
    src, dst = _local(src), _local(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.rename(src, dst)  # fails with ENOTEMPTY/EEXIST when dst exists and is non-empty
    except OSError:
        if os.path.exists(dst):
            return False
        raise
    fsync_dir(os.path.dirname(dst))
    return True


def copy_file(src: str, dst: str) -> None:
    """Copy a file into a store (used to publish from a local staging area to an object store)."""
    if is_local(dst):
        write_bytes_atomic(dst, read_bytes(src))
        return
    from apache_beam.io.filesystems import FileSystems

    with open(_local(src), "rb") as fin, FileSystems.create(dst) as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            fout.write(chunk)


def remove_tree(path: str) -> None:
    if is_local(path):
        import shutil

        shutil.rmtree(_local(path), ignore_errors=True)
        return
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list
    if matches:
        FileSystems.delete([m.path for m in matches])


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_chunks(path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    if is_local(path):
        with open(_local(path), "rb") as fh:
            yield from iter(lambda: fh.read(chunk_size), b"")
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as fh:
        yield from iter(lambda: fh.read(chunk_size), b"")
