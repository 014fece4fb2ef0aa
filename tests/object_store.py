"""An in-memory object store registered as a real Beam ``FileSystem`` (scheme ``memstore://``).

GCS and S3 are unreachable from tests, so this stands in for them with their relevant semantics: no
directories, listing by prefix, and an object that becomes visible only, and entirely, when its upload closes.
"""
from __future__ import annotations

import io
import time
from typing import ClassVar

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

SCHEME = "memstore"


class _Upload(io.BytesIO):
    def __init__(self, store: dict[str, tuple[bytes, float]], path: str) -> None:
        super().__init__()
        self._store, self._path = store, path

    def close(self) -> None:
        if not self.closed:
            failing = InMemoryObjectStore.fail_uploads_ending_with
            if failing and self._path.endswith(failing):
                super().close()
                raise ConnectionError(f"simulated network failure uploading {self._path}")
            self._store[self._path] = (self.getvalue(), time.time())  # visible only when complete
        super().close()


class InMemoryObjectStore(FileSystem):
    objects: ClassVar[dict[str, tuple[bytes, float]]] = {}
    fail_uploads_ending_with: ClassVar[str | None] = None  # fault injection: uploads that "lose the network"

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *[p.strip("/") for p in paths]])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        for path, (data, updated) in list(self.objects.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), updated)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Upload(self.objects, path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in self.objects:
            raise BeamIOError("not found", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path][0])

    def copy(self, source_file_names, destination_file_names) -> None:
        for src, dst in zip(source_file_names, destination_file_names):
            self.objects[dst] = self.objects[src]

    def rename(self, source_file_names, destination_file_names) -> None:
        for src, dst in zip(source_file_names, destination_file_names):
            self.objects[dst] = self.objects.pop(src)

    def exists(self, path: str) -> bool:
        return path in self.objects or any(p.startswith(path.rstrip("/") + "/") for p in self.objects)

    def size(self, path: str) -> int:
        return len(self.objects[path][0])

    def last_updated(self, path: str) -> float:
        return self.objects[path][1]

    def checksum(self, path: str) -> str:
        return str(hash(self.objects[path][0]))

    def metadata(self, path: str) -> FileMetadata:
        data, updated = self.objects[path]
        return FileMetadata(path, len(data), updated)

    def delete(self, paths) -> None:
        for path in paths:
            self.objects.pop(path, None)
