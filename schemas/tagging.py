"""The batch/streaming output contract, defined once: tag rows, dead letters, run manifests and the layout.

Layout of an output directory ``DIR`` (readers and ``--incremental`` only trust runs that have a manifest)::

    DIR/run_date=YYYY-MM-DD/model_version=vN/part-<run_id>-<n>.parquet   tag rows (TAGS_SCHEMA)
    DIR/_errors/run_date=YYYY-MM-DD/part-<run_id>-<n>.parquet            dead letters (DEAD_LETTER_SCHEMA)
    DIR/_manifests/<run_id>.json                                         one per finished run, written last
    DIR/_staging/<run_id>/                                               a run's files before it commits

A run's files are renamed out of ``_staging`` only after every bundle finished, and the manifest is written
after the renames, so a crash can leave files without a manifest but never a manifest without its files.
Readers therefore join tag rows with manifests on ``run_id`` (see schemas/queries.sql).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

MANIFEST_FORMAT_VERSION = 1
ERRORS_DIR = "_errors"
MANIFESTS_DIR = "_manifests"
STAGING_DIR = "_staging"

#: One row per tagged image. ``probabilities`` is a MAP so analysts write ``probabilities['dog'] > 0.8``.
TAGS_SCHEMA = pa.schema(
    [
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
        pa.field("probabilities", pa.map_(pa.string(), pa.float32()), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("tagged_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # Which of the version's model files ran (fp32 | int8); files written before it existed lack the column.
        pa.field("model_variant", pa.string()),
    ]
)

#: One row per input that could not be tagged; ``stage`` says where it failed (read, decode, preprocess, inference).
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def tags_partition(run_date: str, model_version: str) -> str:
    """Relative directory of one run's tag files (hive style, so DuckDB/Spark/BigQuery see the columns)."""
    return f"run_date={run_date}/model_version={model_version}"


def errors_partition(run_date: str) -> str:
    return f"{ERRORS_DIR}/run_date={run_date}"


def manifest_name(run_id: str) -> str:
    return f"{MANIFESTS_DIR}/{run_id}.json"


@dataclass(frozen=True)
class RunManifest:
    """What one finished run did; its existence is what makes the run's rows visible to readers."""

    run_id: str
    run_date: str
    model_name: str
    model_version: str
    runner: str
    started_at: str
    finished_at: str
    matched: int
    tagged: int
    failed: int
    skipped: int  # already tagged by this model version (--incremental)
    incremental: bool
    inputs: list[str]
    tag_files: list[str] = field(default_factory=list)
    error_files: list[str] = field(default_factory=list)
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT_VERSION
    model_variant: str = ""  # fp32 | int8 (what --precision chose); "" in manifests of earlier runs
    tag_counts: dict[str, int] = field(default_factory=dict)  # images per tag, tags that occurred; {} earlier

    def __post_init__(self) -> None:
        if self.matched != self.tagged + self.failed + self.skipped:
            raise ValueError(
                f"run {self.run_id}: accounting mismatch: matched {self.matched} != tagged {self.tagged} + "
                f"failed {self.failed} + skipped {self.skipped}"
            )
        if not isinstance(self.tag_counts, dict) or any(
                type(n) is not int or not 0 < n <= self.tagged for n in self.tag_counts.values()):
            raise ValueError(f"run {self.run_id}: tag_counts must map each tag to a count in 1..tagged ({self.tagged})")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunManifest":
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
