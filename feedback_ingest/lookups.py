"""What validation checks records against: the registry's class sets and the images we know about."""
from __future__ import annotations

import glob
import json
import logging
import os

from feedback_ingest.labels import normalize_uri
from models import storage
from models.registry import Registry, RegistryError
from schemas import tagging

log = logging.getLogger(__name__)


class ModelCatalog:
    """Resolves a record's model reference against the registry and caches class sets."""

    def __init__(self, registry_root: str, default_name: str = "tagger") -> None:
        self.registry = Registry(registry_root)
        self.default_name = default_name
        self._classes: dict[str, tuple[str, ...] | None] = {}

    def ref(self, model_name: str | None, model_version: str | None) -> str | None:
        """``NAME@vN`` from the record's fields (``model_version`` may itself be ``NAME@vN``)."""
        if not model_version:
            return None
        if "@" in model_version:
            return model_version
        return f"{model_name or self.default_name}@{model_version}"

    def classes(self, ref: str) -> tuple[str, ...] | None:
        """The class set of a concrete model version, or None if the registry has no such version."""
        if ref not in self._classes:
            name, _, version = ref.partition("@")
            try:
                self._classes[ref] = self.registry.card(name, version).classes
            except RegistryError:
                self._classes[ref] = None
        return self._classes[ref]


class ImageIndex:
    """Images known to committed tagging runs (URI or content sha256), else checked in the image store.

    Only the references a batch names are looked up (one DuckDB semi-join per tagged directory), so memory
    does not grow with the size of the archive.
    """

    def __init__(self, tagged_dirs: list[str]) -> None:
        self.tagged_dirs = list(tagged_dirs)

    def resolvable_many(self, refs: list[tuple[str | None, str | None]]) -> list[bool | None]:
        """Per (uri, sha256): True/False, or None when the record names no image at all."""
        uris = sorted({normalize_uri(u) for u, _ in refs if u})
        shas = sorted({s.lower() for _, s in refs if s})
        known_uris, known_shas = set(), set()
        for directory in self.tagged_dirs:
            found_uris, found_shas = self._lookup(directory, uris, shas)
            known_uris |= found_uris
            known_shas |= found_shas
        result: list[bool | None] = []
        for uri, sha in refs:
            if not (uri or sha):
                result.append(None)
            elif (sha and sha.lower() in known_shas) or (uri and normalize_uri(uri) in known_uris):
                result.append(True)
            else:
                result.append(bool(uri) and self._in_store(normalize_uri(uri)))
        return result

    @staticmethod
    def _lookup(directory: str, uris: list[str], shas: list[str]) -> tuple[set[str], set[str]]:
        import duckdb
        import pyarrow as pa

        run_ids = []
        for path in glob.glob(os.path.join(directory, tagging.MANIFESTS_DIR, "*.json")):
            with open(path) as fh:
                run_ids.append(json.load(fh)["run_id"])
        files = glob.glob(os.path.join(directory, "run_date=*", "model_version=*", "*.parquet"))
        if not run_ids or not files:
            log.warning("tagged output %s has no committed runs", directory)
            return set(), set()
        con = duckdb.connect()
        try:
            con.register("wanted_uris", pa.table({"u": pa.array(uris, pa.string())}))
            con.register("wanted_shas", pa.table({"s": pa.array(shas, pa.string())}))
            con.register("runs", pa.table({"r": pa.array(run_ids, pa.string())}))
            rows = con.execute(
                "SELECT DISTINCT image_uri, lower(content_sha256) FROM read_parquet($files, hive_partitioning=false) "
                "WHERE run_id IN (SELECT r FROM runs) AND (image_uri IN (SELECT u FROM wanted_uris) "
                "OR lower(content_sha256) IN (SELECT s FROM wanted_shas))",
                {"files": files},
            ).fetchall()
        finally:
            con.close()
        return {u for u, _ in rows}, {s for _, s in rows}

    @staticmethod
    def _in_store(uri: str) -> bool:
        try:
            return storage.exists(uri)
        except Exception as exc:  # an unknown scheme or an unreachable store: not resolvable, say why
            log.warning("cannot check image %s: %s", uri, exc)
            return False
