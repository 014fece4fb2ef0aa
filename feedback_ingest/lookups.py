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
    """Images known to committed tagging runs (URI and content sha256), else checked in the image store."""

    def __init__(self, tagged_dirs: list[str]) -> None:
        self.uris: set[str] = set()
        self.shas: set[str] = set()
        for directory in tagged_dirs:
            self._load(directory)

    def _load(self, directory: str) -> None:
        import duckdb

        run_ids = []
        for path in glob.glob(os.path.join(directory, tagging.MANIFESTS_DIR, "*.json")):
            with open(path) as fh:
                run_ids.append(json.load(fh)["run_id"])
        files = glob.glob(os.path.join(directory, "run_date=*", "model_version=*", "*.parquet"))
        if not run_ids or not files:
            log.warning("tagged output %s has no committed runs", directory)
            return
        rows = duckdb.sql(
            "SELECT DISTINCT image_uri, content_sha256 FROM read_parquet($files, hive_partitioning=false) "
            "WHERE list_contains($runs, run_id)",
            params={"files": files, "runs": run_ids},
        ).fetchall()
        for uri, sha in rows:
            self.uris.add(normalize_uri(uri))
            self.shas.add(sha.lower())
        log.info("tagged output %s: %d images from %d committed runs", directory, len(rows), len(run_ids))

    def resolvable(self, uri: str | None, sha256: str | None) -> bool:
        if sha256 and sha256.lower() in self.shas:
            return True
        if not uri:
            return False
        uri = normalize_uri(uri)
        if uri in self.uris:
            return True
        try:
            return storage.exists(uri)
        except Exception as exc:  # an unknown scheme or an unreachable store: not resolvable, say why
            log.warning("cannot check image %s: %s", uri, exc)
            return False
