"""Reading correction records from CSV, JSONL and Parquet files, each with its lineage.

Every data row of an input becomes exactly one ``SourceRecord``, even a row that cannot be parsed (a bad JSON
line, a non-object message): those carry ``parse_error`` and end in quarantine, so nothing read is ever lost.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from schemas.errors import UserError


class InputError(UserError):
    """An input file that cannot be read at all (missing, unknown format)."""


@dataclass
class SourceRecord:
    """One correction as read, plus where it came from."""

    record: dict[str, Any]
    raw: str
    source_kind: str  # "file" | "kafka"
    source_uri: str
    source_row: int | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    parse_error: str | None = None
    lineage: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.lineage = {
            "source_kind": self.source_kind,
            "source_uri": self.source_uri,
            "source_row": self.source_row,
            "kafka_partition": self.kafka_partition,
            "kafka_offset": self.kafka_offset,
            "raw": self.raw,
        }


def parse_json_record(text: str) -> tuple[dict[str, Any], str | None]:
    """A JSON object -> (record, None); anything else -> ({}, reason)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON: {exc.msg} at char {exc.pos}"
    if not isinstance(value, dict):
        return {}, f"a JSON {type(value).__name__}, not an object"
    return value, None


def _read_csv(path: str) -> Iterator[SourceRecord]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:  # -sig: Excel's BOM
        for row_number, row in enumerate(csv.DictReader(fh), start=1):
            extra = row.pop(None, None)  # more cells than header columns
            error = f"{len(extra)} cells more than the header has" if extra else None
            record = {k: v for k, v in row.items() if k is not None}
            raw = json.dumps(record | ({"_extra_cells": extra} if extra else {}))
            yield SourceRecord(record, raw, "file", path, source_row=row_number, parse_error=error)


def _read_jsonl(path: str) -> Iterator[SourceRecord]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        row_number = 0
        for line in fh:
            if not line.strip():
                continue
            row_number += 1
            record, error = parse_json_record(line)
            yield SourceRecord(record, line.rstrip("\n"), "file", path, source_row=row_number, parse_error=error)


def _read_parquet(path: str) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    for row_number, row in enumerate(table.to_pylist(), start=1):
        yield SourceRecord(row, json.dumps(row, default=str), "file", path, source_row=row_number)


READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".parquet": _read_parquet}


def read_file(path: str) -> list[SourceRecord]:
    """All records of one input file (format by extension)."""
    path = os.path.abspath(path)
    reader = READERS.get(os.path.splitext(path)[1].lower())
    if reader is None:
        raise InputError(f"{path}: unknown input format (expected one of {', '.join(sorted(READERS))})")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such input file")
    return list(reader(path))
