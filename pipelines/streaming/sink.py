"""The durable per-bundle sink: decisions and dead letters (at least once), Parquet (exactly once), then commit.

Beam 2.77's in-process runner never fires anything after a GroupByKey or Flatten in streaming mode, so this
sink is a fused DoFn that acts in ``finish_bundle``. Per ``(topic, partition)`` in a bundle it:

1. checks every record has exactly one outcome (a decision or a dead letter), else fails the bundle;
2. produces decisions (key = dedup key) and dead letters and waits for their acknowledgements;
3. writes the tag rows and dead-letter rows as Parquet (batch schemas, hive layout) whose names derive from
   the offset range (``stream-<topic>-p<partition>-<first>-<last>``), each file atomically, then the run
   manifest that makes them visible; offsets already covered by an earlier manifest are skipped, so a
   replay after a crash never makes a row visible twice;
4. commits ``last + 1`` for the consumer group, only now that everything above is durable.

Steps 2-4 run on one background thread in bundle order (bounded queue), so the next bundle's inference
overlaps this one's fsyncs. A crash anywhere before step 4 means the range is read again on restart: Parquet
stays exactly-once, the topics get at-least-once with a stable dedup key.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import queue
import re
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, TypeVar

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from models import storage
from pipelines.records import Tagged, as_dict
from pipelines.sinks import failure_row, tagged_row
from pipelines.streaming.kafka_config import KafkaConfig
from pipelines.streaming.steps import StreamItem
from schemas.messages import STREAM_TAGS_SCHEMA, Decision, DeadLetter
from schemas.tagging import (
    DEAD_LETTER_SCHEMA,
    MANIFESTS_DIR,
    RunManifest,
    errors_partition,
    manifest_name,
    tags_partition,
)

LOG = logging.getLogger(__name__)
T = TypeVar("T")
MAX_PENDING_BUNDLES = 4
_RUN_RE = re.compile(r"^stream-(?P<topic>.+)-p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.json$")


class IncompleteBundle(RuntimeError):
    """A record without an outcome reached the sink: committing past it would lose it."""


def run_id_for(topic: str, partition: int, first: int, last: int) -> str:
    return f"stream-{topic}-p{partition}-{first:012d}-{last:012d}"


def check_outcomes(items: list[StreamItem]) -> list[StreamItem]:
    """Items in offset order; raise if any reached the sink with neither a tag result nor a failure."""
    bad = [i.context.record.source.uri for i in items if not i.failure and not isinstance(i.value, Tagged)]
    if bad:
        raise IncompleteBundle(f"{len(bad)} records reached the sink without an outcome, e.g. {bad[:3]}")
    return sorted(items, key=lambda i: (i.context.record.source.topic, i.context.record.source.partition,
                                        i.context.record.source.offset))


def covered_ranges(output: str, topic: str, partition: int) -> list[tuple[int, int]]:
    """Offset ranges of ``topic/partition`` already made visible by a manifest in ``output``."""
    ranges = []
    directory = storage.join(output, MANIFESTS_DIR)
    for name in _list_names(directory):
        match = _RUN_RE.match(name)
        if match and match["topic"] == topic and int(match["partition"]) == partition:
            ranges.append((int(match["first"]), int(match["last"])))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        add_range(merged, first, last)
    return merged


def add_range(ranges: list[tuple[int, int]], first: int, last: int) -> None:
    """Record ``[first, last]`` as covered, merging with the newest range when contiguous (the usual case),
    so a long-running job keeps a handful of ranges rather than one per bundle."""
    if ranges and ranges[-1][0] <= first <= ranges[-1][1] + 1:
        ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
    else:
        ranges.append((first, last))


def _list_names(directory: str) -> list[str]:
    import os

    if storage.is_local(directory):
        return os.listdir(directory) if os.path.isdir(directory) else []
    from apache_beam.io.filesystems import FileSystems

    result = FileSystems.match([storage.join(directory, "stream-*.json")])[0]
    return [m.path.rsplit("/", 1)[-1] for m in result.metadata_list]


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
    return buf.getvalue()


def write_partition_files(output: str, outcomes: list[StreamItem], model_name: str, now: dt.datetime) -> RunManifest:
    """Write one offset range's tag and dead-letter Parquet files, then its manifest (which makes them visible)."""
    first = outcomes[0].context.record.source
    last = outcomes[-1].context.record.source
    run_id = run_id_for(first.topic, first.partition, first.offset, last.offset)
    run_date = now.strftime("%Y-%m-%d")
    by_version: dict[str, list[dict[str, Any]]] = {}
    errors, by_stage, tag_counts = [], {}, Counter()
    for o in outcomes:
        src = o.context.record.source
        if o.failure is None:
            tag_counts.update(o.value.tags)
            row = tagged_row(o.value, run_id, now)
            row["image_uri"] = o.context.image_uri or src.uri
            row.update(message_id=o.context.message_id, source_topic=src.topic,
                       source_partition=src.partition, source_offset=src.offset)
            by_version.setdefault(o.value.model_version, []).append(row)
        else:
            errors.append(failure_row(o.failure, run_id, now))
            by_stage[o.failure.stage] = by_stage.get(o.failure.stage, 0) + 1
    tag_files, error_files = [], []
    for version, rows in sorted(by_version.items()):
        rel = f"{tags_partition(run_date, version)}/part-{run_id}.parquet"
        storage.write_bytes_atomic(storage.join(output, rel), _parquet_bytes(rows, STREAM_TAGS_SCHEMA))
        tag_files.append(rel)
    if errors:
        rel = f"{errors_partition(run_date)}/part-{run_id}.parquet"
        storage.write_bytes_atomic(storage.join(output, rel), _parquet_bytes(errors, DEAD_LETTER_SCHEMA))
        error_files.append(rel)
    versions = sorted(by_version)
    manifest = RunManifest(
        run_id=run_id,
        run_date=run_date,
        model_name=model_name,
        model_version=",".join(versions),
        runner="stream",
        started_at=now.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        matched=len(outcomes),
        tagged=sum(len(r) for r in by_version.values()),
        failed=len(errors),
        skipped=0,
        incremental=False,
        inputs=[f"kafka://{first.topic}/{first.partition}/{first.offset}-{last.offset}"],
        tag_files=tag_files,
        error_files=error_files,
        failures_by_stage=by_stage,
        model_variant=",".join(sorted({o.value.model_variant for o in outcomes if o.failure is None})),
        tag_counts=dict(sorted(tag_counts.items())),
    )
    storage.write_bytes_atomic(storage.join(output, manifest_name(run_id)), manifest.to_json().encode())
    return manifest


def decision_for(o: StreamItem, now_iso: str) -> Decision:
    src, t = o.context.record.source, o.value
    return Decision(
        id=o.context.message_id or "",
        tags=tuple(t.tags),
        probabilities=as_dict(t.probabilities),
        model_name=t.model_name,
        model_version=t.model_version,
        model_variant=t.model_variant,
        source_topic=src.topic,
        source_partition=src.partition,
        source_offset=src.offset,
        dedup_key=src.dedup_key,
        decided_at=now_iso,
        image_uri=o.context.image_uri or "",
    )


def dead_letter_for(o: StreamItem, now_iso: str) -> DeadLetter:
    f = o.failure
    return DeadLetter.for_record(o.context.record, f.stage, f.error_class, f.message, now_iso,
                                 message_id=o.context.message_id, uri=o.context.image_uri)


def retry(action: Callable[[], T], what: str, deadline_s: float = 600.0) -> T:
    """Run ``action`` until it succeeds (broker outages are waited out), failing after ``deadline_s``."""
    start, delay = time.monotonic(), 0.2
    while True:
        try:
            return action()
        except Exception as exc:
            if time.monotonic() - start > deadline_s:
                raise
            LOG.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class DurableSinkFn(beam.DoFn):
    """Collects a bundle's contexts and outcomes; makes them durable and commits offsets in ``finish_bundle``."""

    def __init__(self, config: KafkaConfig, group: str, output: str, decisions_topic: str, dlq_topic: str,
                 model_name: str) -> None:
        self.config, self.group, self.output = config, group, output
        self.decisions_topic, self.dlq_topic, self.model_name = decisions_topic, dlq_topic, model_name

    def setup(self) -> None:
        self.producer = self.config.producer()
        self.committer = self.config.consumer(group_id=self.group)
        self.covered: dict[tuple[str, int], list[tuple[int, int]]] = {}
        # Durability work runs on one background thread, in bundle order, so the next bundle's decode and
        # inference overlap this one's fsyncs and acknowledgements. Offsets are still committed only after
        # their outputs are durable; work lost in a crash was never committed and is simply read again.
        self._pending: queue.Queue = queue.Queue(maxsize=MAX_PENDING_BUNDLES)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="stream-durable-sink", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        while True:
            job = self._pending.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    self._make_durable(*job)
            except BaseException as exc:  # surfaced on the pipeline thread by the next finish_bundle
                LOG.error("durable sink failed: %s", exc)
                self._error = exc
            finally:
                self._pending.task_done()

    def start_bundle(self) -> None:
        self.items: list[StreamItem] = []

    def process(self, item: StreamItem) -> Iterable[str]:
        self.items.append(item)
        return ()

    def finish_bundle(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"durable sink failed; not committing past it: {self._error}") from self._error
        if not self.items:
            return
        groups: dict[tuple[str, int], list[StreamItem]] = {}
        for item in check_outcomes(self.items):
            groups.setdefault((item.context.record.source.topic, item.context.record.source.partition),
                              []).append(item)
        self.items = []
        for (topic, partition), group in groups.items():
            self._pending.put((topic, partition, group))  # blocks when the writer is behind: back-pressure

    def flush(self) -> None:
        """Wait until every handed-over bundle is durable and committed (or failed)."""
        self._pending.join()
        if self._error is not None:
            raise RuntimeError(f"durable sink failed: {self._error}") from self._error

    def _make_durable(self, topic: str, partition: int, outcomes: list[StreamItem]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        now = dt.datetime.now(dt.timezone.utc)
        now_iso = now.isoformat(timespec="milliseconds")
        key = (topic, partition)
        if key not in self.covered:
            self.covered[key] = covered_ranges(self.output, topic, partition)
        fresh = [o for o in outcomes
                 if not any(a <= o.context.record.source.offset <= b for a, b in self.covered[key])]
        messages = []
        for o in outcomes:
            src = o.context.record.source
            if o.failure is None:
                messages.append((self.decisions_topic, src.dedup_key.encode(),
                                 decision_for(o, now_iso).to_json(), None))
            else:
                messages.append((self.dlq_topic, o.context.record.key, dead_letter_for(o, now_iso).to_json(),
                                 [("stage", o.failure.stage.encode()), ("reason", o.failure.error_class.encode())]))
        retry(lambda: self._deliver(messages), f"producing {len(messages)} decisions/dead letters")
        if fresh:
            write_partition_files(self.output, fresh, self.model_name, now)
            add_range(self.covered[key], fresh[0].context.record.source.offset,
                      fresh[-1].context.record.source.offset)
        last = outcomes[-1].context.record.source.offset
        offsets = {TopicPartition(topic, partition): OffsetAndMetadata(last + 1, "", -1)}
        retry(lambda: self.committer.commit(offsets), f"committing {topic}/{partition}@{last + 1}")
        LOG.debug("durable %s/%d up to %d (%d records)", topic, partition, last, len(outcomes))

    def _deliver(self, messages: list) -> None:
        """Send and wait for acknowledgements; on failure only the unacknowledged messages are kept to retry."""
        futures = [(m, self.producer.send(m[0], key=m[1], value=m[2], headers=m[3])) for m in messages]
        self.producer.flush(timeout=60)
        failed = []
        for message, future in futures:
            try:
                future.get(timeout=0)
            except Exception:
                failed.append(message)
        if failed:
            messages[:] = failed
            raise RuntimeError(f"{len(failed)} messages were not acknowledged")

    def teardown(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None and writer.is_alive():
            self._pending.put(None)
            writer.join(timeout=60)
        for client in (getattr(self, "producer", None), getattr(self, "committer", None)):
            if client is not None:
                client.close()


class WriteDurably(beam.PTransform):
    """StreamItem (tagged or failed) -> nothing; see the module docstring for the order of effects."""

    def __init__(self, config: KafkaConfig, group: str, output: str, decisions_topic: str, dlq_topic: str,
                 model_name: str) -> None:
        super().__init__()
        self.args = (config, group, output, decisions_topic, dlq_topic, model_name)

    def expand(self, pcoll):
        return pcoll | beam.ParDo(DurableSinkFn(*self.args))

