"""The correction record: one reviewer's verdict on one tag of one image, defined once for every input format.

CSV, JSONL, Parquet and Kafka JSON messages all carry these fields; the feedback dataset stores them with
lineage columns added. The great-expectations suite that validates a batch of them lives beside this module
(``schemas.feedback_suite``) so the record and its rules change together.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Literal, Mapping

import pyarrow as pa

Verdict = Literal["present", "absent"]
VERDICTS: tuple[str, ...] = ("present", "absent")

# Fields a correction carries (inputs may omit the optional ones).
IMAGE_FIELDS = ("image_uri", "image_sha256")  # at least one of them
REQUIRED_FIELDS = ("tag", "verdict", "annotator", "source", "reviewed_at", "model_version")
OPTIONAL_FIELDS = ("model_name", "comment", "new_class")
RECORD_FIELDS = (*IMAGE_FIELDS, *REQUIRED_FIELDS, *OPTIONAL_FIELDS)

# Lineage columns the ingest job adds to every stored row (accepted and quarantined).
LINEAGE_FIELDS = (
    "record_key",  # sha256 of the canonical record: identical corrections are stored once
    "ingest_run_id",
    "ingested_at",
    "source_kind",  # "file" | "kafka"
    "source_uri",  # file path, or Kafka topic
    "source_row",  # 1-based data row in the file (None for Kafka)
    "kafka_partition",
    "kafka_offset",
    "raw",  # the record exactly as read (JSON), so nothing about an input is ever lost
)

_TS = pa.timestamp("us", tz="UTC")

_LINEAGE_COLUMNS = [
    ("record_key", pa.string()),
    ("ingest_run_id", pa.string()),
    ("ingested_at", _TS),
    ("source_kind", pa.string()),
    ("source_uri", pa.string()),
    ("source_row", pa.int64()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("raw", pa.string()),
]

ACCEPTED_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("image_sha256", pa.string()),
        ("tag", pa.string()),
        ("verdict", pa.string()),
        ("annotator", pa.string()),
        ("source", pa.string()),
        ("reviewed_at", _TS),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("comment", pa.string()),
        ("new_class", pa.bool_()),
        *_LINEAGE_COLUMNS,
    ]
)
"""The validated feedback dataset (``DIR/accepted/ingest_date=YYYY-MM-DD/<run>.parquet``)."""

QUARANTINE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in RECORD_FIELDS]
    + [
        ("failed_expectations", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
        *_LINEAGE_COLUMNS,
    ]
)
"""Rows that failed validation, as read (strings), with the expectations each one failed."""


def clean_text(value: Any) -> str | None:
    """Inputs spell "no value" as None, NaN, or an empty/blank string; all become None."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas/CSV
        return None
    text = str(value).strip()
    return text or None


def parse_flag(value: Any) -> bool | None:
    """``new_class``: true/false in any usual spelling; False when absent, None for gibberish."""
    if isinstance(value, bool):
        return value
    text = clean_text(value)
    if text is None:
        return False
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())


def parse_timestamp(value: Any) -> dt.datetime | None:
    """ISO-8601 (or a datetime) -> aware UTC datetime. Naive values are taken as UTC. None if unparseable."""
    if isinstance(value, dt.datetime):
        stamp = value
    else:
        text = clean_text(value)
        if text is None:
            return None
        try:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone(dt.timezone.utc)


def record_key(record: Mapping[str, Any]) -> str:
    """A deterministic key over the record's content (not its lineage).

    Re-reading the same file, a copy of it, or the same Kafka offsets yields the same keys, so the ingest job
    can skip what is already stored; a corrected row gets a new key and is evaluated afresh.
    """
    canonical = {name: clean_text(record.get(name)) for name in RECORD_FIELDS}
    stamp = parse_timestamp(record.get("reviewed_at"))
    if stamp is not None:
        canonical["reviewed_at"] = stamp.isoformat()
    flag = parse_flag(record.get("new_class"))
    canonical["new_class"] = str(flag) if flag is not None else canonical["new_class"]
    if canonical["image_sha256"]:
        canonical["image_sha256"] = canonical["image_sha256"].lower()
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
