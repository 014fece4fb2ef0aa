"""Parquet output with all-or-nothing visibility per run.

Each bundle streams its rows into its own file under ``DIR/_staging/<run_id>/`` (row groups flushed as they
fill, so memory stays flat) and emits a :class:`WrittenFile` from ``finish_bundle``. Beam discards the
outputs of failed or retried bundles, so the single :class:`CommitRun` step sees exactly the files of
successful bundles: it renames them into the hive partitions and then writes the run manifest.
"""
from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter
from typing import Any, Callable, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from models import storage
from pipelines.paths import one_line, printable
from pipelines.progress import ProgressFile
from pipelines.records import ClassProbabilities, Failure, Tagged
from schemas.tagging import (
    DEAD_LETTER_SCHEMA,
    TAGS_SCHEMA,
    RunManifest,
    errors_partition,
    manifest_name,
    tags_partition,
)

# Flush a row group once this many values are buffered: 4096 rows of a 6-class model, ~250 rows of an
# ImageNet-sized one, so writer memory is bounded by model width, never by archive size. Buffered
# probabilities are float32 vectors (4 KB per row at 1000 classes; the per-row dict was ~90 KB).
ROW_GROUP_VALUES = 256_000
ROW_GROUP_MAX_ROWS = 4096


class WrittenFile(NamedTuple):
    kind: str  # "tags" | "failed"
    staging_path: str
    rows: int
    failures_by_stage: dict[str, int]
    tag_counts: dict[str, int] | None = None  # images per tag in this file (tags files)


def tagged_row(t: Tagged, run_id: str, now: dt.datetime) -> dict[str, Any]:
    row = _tag_scalars(t, run_id, now)
    row["probabilities"] = list(t.probabilities.items())
    return row


def _tag_scalars(t: Tagged, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """:func:`tagged_row` without ``probabilities`` (the batch writer builds that column in bulk)."""
    return {
        "image_uri": printable(t.info.uri),  # a name that is not UTF-8 gets \xNN escapes: Parquet strings are UTF-8
        "content_sha256": t.info.content_sha256,
        "width": t.info.width,
        "height": t.info.height,
        "format": printable(t.info.format),
        "tags": list(t.tags),
        "model_name": t.model_name,
        "model_version": t.model_version,
        "model_variant": t.model_variant,
        "run_id": run_id,
        "tagged_at": now,
    }


def probabilities_column(keys: tuple[str, ...], matrix: np.ndarray) -> pa.Array:
    """The MAP<string, float> column for rows that share ``keys`` (one model: always), from an
    ``(rows, len(keys))`` float32 matrix: ~10x cheaper than converting (class, probability) tuples per row."""
    map_type = TAGS_SCHEMA.field("probabilities").type
    n, k = matrix.shape
    key_array = pa.array(keys, type=pa.string()).take(pa.array(np.tile(np.arange(k, dtype=np.int32), n)))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    return pa.MapArray.from_arrays(offsets, key_array, pa.array(matrix.reshape(-1)), type=map_type)


def failure_row(f: Failure, run_id: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "image_uri": printable(f.uri),
        "stage": f.stage,
        "error_class": f.error_class,
        "message": one_line(f.message),
        "run_id": run_id,
        "failed_at": now,
    }


class _WriteParquetFn(beam.DoFn):
    """Rows -> one Parquet file per bundle in the run's staging directory."""

    def __init__(self, kind: str, schema: pa.Schema, to_row: Callable, staging: str, run_id: str,
                 progress_dir: str | None) -> None:
        self.kind, self.schema, self.to_row = kind, schema, to_row
        self.staging, self.run_id, self.progress_dir = staging, run_id, progress_dir

    def setup(self) -> None:
        self.progress = ProgressFile(self.progress_dir, self.kind) if self.progress_dir else None

    def start_bundle(self) -> None:
        self.writer = None
        self.sink = None
        self.buffer: list[dict] = []
        self.probability_keys: tuple[str, ...] | None = None  # the class names all buffered rows share
        self.probabilities: list[np.ndarray] = []
        self.buffered_values = 0
        self.rows = 0
        self.by_stage: dict[str, int] = {}
        self.tag_counts: Counter[str] = Counter()
        self.path = storage.join(self.staging, f"{self.kind}-{uuid.uuid4().hex}.parquet")

    def process(self, element) -> Iterable:
        if self.kind == "tags":
            self._buffer_probabilities(element.probabilities)
            self.tag_counts.update(element.tags)
        self.buffer.append(self.to_row(element, self.run_id, dt.datetime.now(dt.timezone.utc)))
        if isinstance(element, Failure):
            self.by_stage[element.stage] = self.by_stage.get(element.stage, 0) + 1
        self.buffered_values += 16 + len(getattr(element, "probabilities", ()))
        if self.buffered_values >= ROW_GROUP_VALUES or len(self.buffer) >= ROW_GROUP_MAX_ROWS:
            self._flush()
        if self.progress:
            self.progress.add()
        return ()

    def _buffer_probabilities(self, probabilities) -> None:
        if isinstance(probabilities, ClassProbabilities):  # the pipelines' own: the model's vector as it came
            keys, vector = probabilities.classes, probabilities.vector
        else:
            keys = tuple(probabilities)
            vector = np.fromiter(probabilities.values(), np.float32, count=len(keys))
        if keys is not self.probability_keys and keys != self.probability_keys:
            self._flush()  # a row group holds one class list (rows of two models in one bundle stay correct)
            self.probability_keys = keys
        self.probabilities.append(vector)

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            if storage.is_local(self.path):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self.writer = pq.ParquetWriter(self.path, self.schema)
            else:
                self.sink = FileSystems.create(self.path)
                self.writer = pq.ParquetWriter(self.sink, self.schema)
        self.writer.write_table(self._table())
        self.rows += len(self.buffer)
        self.buffer = []
        self.probabilities = []
        self.buffered_values = 0

    def _table(self) -> pa.Table:
        if self.kind != "tags":
            return pa.Table.from_pylist(self.buffer, schema=self.schema)
        index = self.schema.get_field_index("probabilities")
        scalars = pa.Table.from_pylist(self.buffer, schema=self.schema.remove(index))
        matrix = np.stack(self.probabilities) if self.probabilities else np.zeros((0, 0), np.float32)
        column = probabilities_column(self.probability_keys or (), matrix)
        return scalars.add_column(index, self.schema.field(index), column)

    def finish_bundle(self) -> Iterable:
        self._flush()
        if self.progress:
            self.progress.flush()
        if self.writer is None:
            return
        self.writer.close()
        if self.sink is not None:
            self.sink.close()
        yield WindowedValue(
            WrittenFile(self.kind, self.path, self.rows, dict(self.by_stage), dict(self.tag_counts)),
            GlobalWindow().max_timestamp(),
            [GlobalWindow()]
        )


_KINDS = {"tags": (TAGS_SCHEMA, _tag_scalars), "failed": (DEAD_LETTER_SCHEMA, failure_row)}


class WriteRows(beam.PTransform):
    """Tagged (kind "tags") or Failure (kind "failed") records -> staged Parquet files -> WrittenFile records."""

    def __init__(self, kind: str, staging: str, run_id: str, progress_dir: str | None = None) -> None:
        super().__init__()
        self.kind, self.args = kind, (staging, run_id, progress_dir)

    def expand(self, pcoll):
        schema, to_row = _KINDS[self.kind]
        return pcoll | beam.ParDo(_WriteParquetFn(self.kind, schema, to_row, *self.args))


class RunInfo(NamedTuple):
    """Facts about the run known when the pipeline is built."""

    output: str
    run_id: str
    run_date: str
    model_name: str
    model_version: str
    runner: str
    started_at: str
    incremental: bool
    inputs: list[str]
    model_variant: str = "fp32"

    @property
    def staging(self) -> str:
        return storage.join(self.output, "_staging", self.run_id)


def _move(src: str, dst: str) -> None:
    if storage.is_local(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    else:
        FileSystems.rename([src], [dst])


def commit_run(info: RunInfo, files: list[WrittenFile], matched: int, skipped: int) -> RunManifest:
    """Move staged files into their partitions, then write the manifest (which makes the run visible)."""
    tag_files, error_files, moves = [], [], []
    by_stage: dict[str, int] = {}
    tag_counts: Counter[str] = Counter()
    tagged = failed = 0
    for n, f in enumerate(sorted(files, key=lambda f: f.staging_path)):
        if f.kind == "tags":
            rel = f"{tags_partition(info.run_date, info.model_version)}/part-{info.run_id}-{n:05d}.parquet"
            tag_files.append(rel)
            moves.append((f.staging_path, rel))
            tagged += f.rows
            tag_counts.update(f.tag_counts or {})
        else:
            rel = f"{errors_partition(info.run_date)}/part-{info.run_id}-{n:05d}.parquet"
            error_files.append(rel)
            moves.append((f.staging_path, rel))
            failed += f.rows
            for stage, count in f.failures_by_stage.items():
                by_stage[stage] = by_stage.get(stage, 0) + count
    manifest = RunManifest(  # validates matched == tagged + failed + skipped before anything moves
        run_id=info.run_id,
        run_date=info.run_date,
        model_name=info.model_name,
        model_version=info.model_version,
        runner=info.runner,
        started_at=info.started_at,
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        matched=matched,
        tagged=tagged,
        failed=failed,
        skipped=skipped,
        incremental=info.incremental,
        inputs=list(info.inputs),
        tag_files=tag_files,
        error_files=error_files,
        failures_by_stage=by_stage,
        model_variant=info.model_variant,
        tag_counts=dict(sorted(tag_counts.items())),
    )
    for src, rel in moves:
        _move(src, storage.join(info.output, rel))
    storage.write_bytes_atomic(storage.join(info.output, manifest_name(info.run_id)), manifest.to_json().encode())
    if storage.is_local(info.staging):
        storage.remove_tree(info.staging)
        try:
            os.rmdir(os.path.dirname(info.staging))  # _staging itself, when no other run is in flight
        except OSError:
            pass
    return manifest


def abandon_staging(staging: str) -> str:
    """An interrupted run's staged files go: renamed aside first (a worker still writing then writes into
    the renamed, doomed directory), then deleted. Returns a note for the interrupt message."""
    if not storage.is_local(staging):
        return f"nothing committed; staged files under {staging} are removed by the next run"
    doomed = f"{staging}.interrupted"
    try:
        os.rename(staging, doomed)
    except FileNotFoundError:
        pass
    except OSError:
        doomed = staging
    storage.remove_tree(doomed)
    storage.remove_tree(staging)  # recreated by a worker between the rename and now
    try:
        os.rmdir(os.path.dirname(staging))  # _staging itself, when no other run is in flight
    except OSError:
        pass
    if os.path.exists(doomed) or os.path.exists(staging):
        return f"nothing committed; could not remove all of {doomed} (marked .interrupted)"
    return "nothing committed, staging removed"


class _RunTotalsFn(beam.CombineFn):
    """WrittenFile records plus ``(matched|skipped, count)`` records -> (files, matched, skipped).

    One combine instead of two counts and a list: fewer stages for the runner to set up and run."""

    def create_accumulator(self) -> tuple[list[WrittenFile], int, int]:
        return [], 0, 0

    def add_input(self, acc, element):
        files, matched, skipped = acc
        if isinstance(element, WrittenFile):
            files.append(element)
            return files, matched, skipped
        kind, n = element
        return (files, matched + n, skipped) if kind == _MATCHED else (files, matched, skipped + n)

    def merge_accumulators(self, accumulators):
        files: list[WrittenFile] = []
        matched = skipped = 0
        for f, m, s in accumulators:
            files.extend(f)
            matched += m
            skipped += s
        return files, matched, skipped

    def extract_output(self, acc):
        return acc


_MATCHED, _SKIPPED = "matched", "skipped"


class _BundleCountFn(beam.DoFn):
    """Elements -> one ``(kind, count)`` per bundle, so the run totals see a handful of records, not one per
    input (memory stays flat on huge archives). Failed bundles' outputs are discarded like their files."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def start_bundle(self) -> None:
        self.count = 0

    def process(self, element) -> Iterable:
        self.count += 1
        return ()

    def finish_bundle(self) -> Iterable:
        if self.count:
            yield WindowedValue((self.kind, self.count), GlobalWindow().max_timestamp(), [GlobalWindow()])


class _CommitFn(beam.DoFn):
    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def process(self, totals: tuple[list[WrittenFile], int, int]) -> Iterable[str]:
        files, matched, skipped = totals
        yield commit_run(self.info, files, matched, skipped).to_json()


class CommitRun(beam.PTransform):
    """(written files, matched inputs, skipped inputs) -> the manifest JSON, written once all bundles finished.

    The second and third PCollections are counted (their elements do not matter)."""

    def __init__(self, info: RunInfo) -> None:
        super().__init__()
        self.info = info

    def expand(self, pcolls):
        files, matched, skipped = pcolls
        return (
            (
                files,
                matched | "CountMatched" >> beam.ParDo(_BundleCountFn(_MATCHED)),
                skipped | "CountSkipped" >> beam.ParDo(_BundleCountFn(_SKIPPED)),
            )
            | "Inputs" >> beam.Flatten()
            | "Totals" >> beam.CombineGlobally(_RunTotalsFn())
            | "Commit" >> beam.ParDo(_CommitFn(self.info))
        )
