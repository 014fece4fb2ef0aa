"""The feedback dataset on disk: accepted and quarantined Parquet parts, committed by per-run manifests.

Layout::

    DIR/accepted/ingest_date=YYYY-MM-DD/<run_id>.parquet     validated corrections (schemas.feedback)
    DIR/quarantine/ingest_date=YYYY-MM-DD/<run_id>.parquet   rejected rows + the expectations they failed
    DIR/_manifests/<run_id>.json                             commit marker: files, counts, Kafka offsets
    DIR/_runs/<run_id>/                                      validation.json, summary.json, data_docs/

A run writes its parts under temporary names, renames them into place, then writes its manifest atomically.
Readers see only parts a manifest lists, so a crash at any point leaves either a whole run or nothing
(orphan parts of a crashed run are ignored and later removed). Hive-style partition folders let DuckDB
query the dataset directly; use ``committed_files`` to restrict a query to committed parts.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Iterable, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from feedback_ingest.locking import exclusive_lock
from models import storage
from schemas.errors import UserError
from schemas.feedback import ACCEPTED_SCHEMA, QUARANTINE_SCHEMA

Kind = Literal["accepted", "quarantine"]
SCHEMAS: dict[str, pa.Schema] = {"accepted": ACCEPTED_SCHEMA, "quarantine": QUARANTINE_SCHEMA}
MANIFESTS = "_manifests"
RUNS = "_runs"


class DatasetError(UserError):
    """The feedback dataset directory is unusable (wrong place, corrupt manifest)."""


class FeedbackDataset:
    def __init__(self, root: str) -> None:
        if not storage.is_local(root):
            raise DatasetError(f"feedback dataset {root}: only local paths are supported (got a URL)")
        self.root = os.path.abspath(os.path.expanduser(root[7:] if root.startswith("file://") else root))

    # ----------------------------------------------------------------------------------------------- reading
    def manifests(self, as_of: str | None = None) -> list[dict]:
        """Committed runs, oldest first; with ``as_of``, only up to and including that run (the dataset as a
        retrain saw it: runs only ever append, so a run id is a version of the dataset)."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.root, MANIFESTS, "*.json"))):
            try:
                with open(path) as fh:
                    found.append(json.load(fh))
            except (OSError, json.JSONDecodeError) as exc:
                raise DatasetError(f"feedback manifest {path} is unreadable: {exc}") from exc
        found.sort(key=lambda m: (m.get("finished_at", ""), m.get("run_id", "")))
        if as_of is None:
            return found
        ids = [m["run_id"] for m in found]
        if as_of not in ids:
            raise DatasetError(f"feedback dataset {self.root} has no committed run {as_of!r}")
        return found[: ids.index(as_of) + 1]

    def version(self) -> str | None:
        """The latest committed run id: pass it as ``as_of`` to read this exact state again later."""
        manifests = self.manifests()
        return manifests[-1]["run_id"] if manifests else None

    def committed_files(self, kind: Kind, as_of: str | None = None) -> list[str]:
        return [os.path.join(self.root, rel) for m in self.manifests(as_of) for rel in m.get("files", {}).get(kind, [])]

    def read(self, kind: Kind, columns: Iterable[str] | None = None, as_of: str | None = None) -> pa.Table:
        """All committed rows of one kind (empty table with the schema if there are none)."""
        schema = SCHEMAS[kind]
        cols = list(columns) if columns is not None else schema.names
        tables = [pq.read_table(path, columns=cols, schema=schema) for path in self.committed_files(kind, as_of)]
        if not tables:
            return pa.Table.from_pylist([], schema=pa.schema([schema.field(c) for c in cols]))
        return pa.concat_tables(tables)

    def known_keys(self) -> set[str]:
        """Record keys already stored (accepted or quarantined): re-ingesting them adds nothing."""
        keys: set[str] = set()
        for kind in ("accepted", "quarantine"):
            keys.update(k for k in self.read(kind, ["record_key"]).column("record_key").to_pylist() if k)
        return keys

    def committed_offsets(self, topic: str, group: str) -> dict[int, int]:
        """Next Kafka offset per partition that committed runs of (topic, group) have stored."""
        offsets: dict[int, int] = {}
        for manifest in self.manifests():
            kafka = manifest.get("kafka") or {}
            if kafka.get("topic") == topic and kafka.get("group") == group:
                for part, nxt in kafka.get("next_offsets", {}).items():
                    offsets[int(part)] = max(offsets.get(int(part), 0), int(nxt))
        return offsets

    # ----------------------------------------------------------------------------------------------- writing
    def write_part(self, kind: Kind, table: pa.Table, run_id: str, ingest_date: str) -> str:
        """Write one run's rows of one kind under its final name (temp file + fsync + rename); returns the
        path relative to the dataset root, for the manifest. The part is invisible until the manifest lands."""
        rel = os.path.join(kind, f"ingest_date={ingest_date}", f"{run_id}.parquet")
        final = os.path.join(self.root, rel)
        directory = os.path.dirname(final)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=directory)
        os.close(fd)
        try:
            pq.write_table(table.cast(SCHEMAS[kind]), tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            storage.fsync_dir(directory)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return rel

    def commit(self, manifest: dict) -> str:
        """Publish a run: its manifest is the single atomic step that makes its parts visible."""
        path = os.path.join(self.root, MANIFESTS, f"{manifest['run_id']}.json")
        storage.write_bytes_atomic(path, json.dumps(manifest, indent=2, sort_keys=True).encode())
        return path

    def lock(self):
        """Exclusive use of the dataset for one ingest run (a second concurrent run fails fast)."""
        return exclusive_lock(os.path.join(self.root, ".lock"), what=f"feedback dataset {self.root}")

    def run_dir(self, run_id: str) -> str:
        path = os.path.join(self.root, RUNS, run_id)
        os.makedirs(path, exist_ok=True)
        return path

    def remove_orphans(self) -> list[str]:
        """Delete parts (and temp files) no manifest lists: leftovers of crashed runs. Call under the lock."""
        committed = {os.path.join(self.root, rel) for m in self.manifests() for v in m.get("files", {}).values()
                     for rel in v}
        removed = []
        for kind in SCHEMAS:
            for path in glob.glob(os.path.join(self.root, kind, "*", "*.parquet")) + glob.glob(
                os.path.join(self.root, kind, "*", ".tmp-*")
            ):
                if path not in committed:
                    os.unlink(path)
                    removed.append(path)
        return removed
