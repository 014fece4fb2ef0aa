"""Helpers for feedback tests: correction records and a committed feedback dataset built from them."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa

from feedback_ingest.dataset import FeedbackDataset
from schemas.feedback import ACCEPTED_SCHEMA, parse_timestamp, record_key


def correction(image_uri: str | None, tag: str, verdict: str, reviewed_at: str, **extra: Any) -> dict:
    """A valid-looking correction record (strings, as an input file would carry it)."""
    record = {
        "image_uri": image_uri,
        "image_sha256": None,
        "tag": tag,
        "verdict": verdict,
        "annotator": "alice",
        "source": "review-ui",
        "reviewed_at": reviewed_at,
        "model_version": "tagger@v1",
    }
    record.update(extra)
    return record


def commit_accepted(root: str, records: list[dict], run_id: str = "run-test") -> None:
    """Store records as one committed run of accepted rows, bypassing validation (labels-view tests only)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for i, r in enumerate(records):
        rows.append(
            {name: r.get(name) for name in ACCEPTED_SCHEMA.names}
            | {
                "reviewed_at": parse_timestamp(r["reviewed_at"]),
                "new_class": bool(r.get("new_class", False)),
                "record_key": record_key(r),
                "ingest_run_id": run_id,
                "ingested_at": now,
                "source_kind": "file",
                "source_uri": "test",
                "source_row": i + 1,
                "raw": json.dumps(r),
            }
        )
    dataset = FeedbackDataset(root)
    rel = dataset.write_part("accepted", pa.Table.from_pylist(rows, schema=ACCEPTED_SCHEMA), run_id, now.date().isoformat())
    dataset.commit({"run_id": run_id, "finished_at": now.isoformat(), "files": {"accepted": [rel], "quarantine": []}})
