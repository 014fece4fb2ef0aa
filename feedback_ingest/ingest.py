"""One ingest run: dedupe, validate, append accepted and quarantined rows, commit, summarise.

Order of a run (the lock is held throughout):

1. drop orphan parts of crashed runs; load the record keys already stored;
2. skip records whose key is stored or was seen earlier in this batch ("already ingested");
3. validate the rest with great-expectations (result JSON and data docs go to ``_runs/<run_id>/``);
4. write the accepted and quarantine parts, then the manifest (the commit);
5. only then may the caller acknowledge the source (commit Kafka offsets).

A crash before step 4's manifest leaves nothing visible and the retry redoes the work; a crash after it
(before Kafka offsets are committed) makes the retry read the same records again, find their keys stored and
add nothing. ``TAGGER_FAULT_POINT`` kills the process at a named point so tests can prove exactly that.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
from collections import Counter
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from feedback_ingest.dataset import FeedbackDataset
from feedback_ingest.lookups import ImageIndex, ModelCatalog
from feedback_ingest.sources import SourceRecord
from feedback_ingest.validate import validate, write_result
from models import storage
from schemas.feedback import (
    ACCEPTED_SCHEMA,
    QUARANTINE_SCHEMA,
    RECORD_FIELDS,
    clean_text,
    parse_flag,
    parse_timestamp,
    record_key,
)
from schemas.run_ids import new_run_id

log = logging.getLogger(__name__)
FAULT_ENV = "TAGGER_FAULT_POINT"


def fault_point(name: str) -> None:
    """Crash here (SIGKILL, no clean-up) when ``$TAGGER_FAULT_POINT`` names this point. For crash tests."""
    if os.environ.get(FAULT_ENV) == name:
        log.warning("fault injection: killing the process at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Summary:
    run_id: str
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    already_ingested: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    validation_success: bool = True
    run_dir: str = ""
    manifest: str = ""
    validation_page: str = ""

    def lines(self) -> list[str]:
        out = [
            f"feedback ingest {self.run_id}: read {self.read}, accepted {self.accepted}, "
            f"quarantined {self.quarantined}, already ingested {self.already_ingested}"
        ]
        out += [f"  quarantined for {reason}: {count}" for reason, count in sorted(self.by_reason.items())]
        if self.validation_page:
            out.append(f"  validation page: {self.validation_page}")
        elif self.run_dir:
            out.append(f"  validation result: {os.path.join(self.run_dir, 'validation.json')}")
        return out


def _accepted_row(src: SourceRecord, key: str, run_id: str, now: dt.datetime, model_name: str | None) -> dict:
    r = src.record
    row = {name: clean_text(r.get(name)) for name in RECORD_FIELDS}
    row.update(
        reviewed_at=parse_timestamp(r.get("reviewed_at")),
        new_class=bool(parse_flag(r.get("new_class"))),
        image_sha256=row["image_sha256"].lower() if row["image_sha256"] else None,
        model_name=row["model_name"] or model_name,
    )
    return row | src.lineage | {"record_key": key, "ingest_run_id": run_id, "ingested_at": now}


def _quarantine_row(src: SourceRecord, key: str, run_id: str, now: dt.datetime, reasons: list[str],
                    failed: list[str]) -> dict:
    row = {name: clean_text(src.record.get(name)) for name in RECORD_FIELDS}
    return row | src.lineage | {
        "record_key": key, "ingest_run_id": run_id, "ingested_at": now,
        "reasons": reasons, "failed_expectations": failed,
    }


def new_records(records: list[SourceRecord], known: set[str]) -> tuple[list[tuple[SourceRecord, str]], int]:
    """Records whose key is neither stored nor seen earlier in this batch, with their keys; and how many
    were skipped as already ingested."""
    fresh: list[tuple[SourceRecord, str]] = []
    seen = set(known)
    for src in records:
        if src.parse_error is None:
            key = record_key(src.record)
        else:  # an unreadable row has no fields to key on: key it by its bytes and where it was read
            key = record_key({"comment": json.dumps(src.lineage, sort_keys=True)})
        if key not in seen:
            seen.add(key)
            fresh.append((src, key))
    return fresh, len(records) - len(fresh)


def _write_parts(dataset: FeedbackDataset, run_id: str, now: dt.datetime, accepted: list[dict],
                 quarantined: list[dict]) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {"accepted": [], "quarantine": []}
    for kind, rows, schema in (("accepted", accepted, ACCEPTED_SCHEMA),
                               ("quarantine", quarantined, QUARANTINE_SCHEMA)):
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema)
            files[kind].append(dataset.write_part(kind, table, run_id, now.date().isoformat()))
    return files


def ingest(
    records: list[SourceRecord],
    dataset: FeedbackDataset,
    catalog: ModelCatalog,
    images: ImageIndex,
    *,
    kafka: dict | None = None,
    now: dt.datetime | None = None,
    data_docs: bool = True,
) -> Summary:
    """Run steps 1-4 for ``records`` under ``dataset.lock()``, held by the caller; ``kafka`` (topic, group,
    next_offsets) is stored in the manifest."""
    now = now or dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id(now)
    summary = Summary(run_id=run_id, read=len(records), run_dir=dataset.run_dir(run_id))
    removed = dataset.remove_orphans()
    if removed:
        log.warning("removed %d uncommitted parts left by crashed runs", len(removed))
    fresh, summary.already_ingested = new_records(records, dataset.known_keys())

    accepted, quarantined = [], []
    if fresh:
        outcome = validate([s for s, _ in fresh], catalog, images, now, run_id,
                           os.path.join(summary.run_dir, "data_docs") if data_docs else None)
        write_result(outcome, os.path.join(summary.run_dir, "validation.json"))
        summary.validation_success = outcome.success
        summary.validation_page = outcome.data_docs_index or ""
        for (src, key), reasons, failed in zip(fresh, outcome.reasons, outcome.failed):
            if reasons:
                quarantined.append(_quarantine_row(src, key, run_id, now, reasons, failed))
            else:
                accepted.append(_accepted_row(src, key, run_id, now, catalog.default_name))
    summary.accepted, summary.quarantined = len(accepted), len(quarantined)
    summary.by_reason = dict(Counter(r for row in quarantined for r in row["reasons"]))

    files = _write_parts(dataset, run_id, now, accepted, quarantined)
    fault_point("after_append")
    manifest = {
        "run_id": run_id,
        "started_at": now.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "files": files,
        "counts": {k: v for k, v in asdict(summary).items() if k in
                   ("read", "accepted", "quarantined", "already_ingested", "by_reason")},
        "sources": sorted({s.source_uri for s in records}),
        "kafka": kafka,
    }
    storage.write_bytes_atomic(os.path.join(summary.run_dir, "summary.json"), json.dumps(manifest, indent=2).encode())
    summary.manifest = dataset.commit(manifest)
    fault_point("after_commit")
    return summary
