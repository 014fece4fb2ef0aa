"""Read Kafka with a splittable DoFn over offset ranges, using kafka-python (no Java expansion service).

Each element is one ``(topic, partition)``; its restriction is ``[start, infinity)`` where ``start`` is the
consumer group's committed offset (what the durable sink last committed), so a restarted job resumes exactly
after the last durable output. Each ``process`` call polls once, claims the offsets it emits and checkpoints
with ``tracker.defer_remainder`` (``ProcessContinuation.resume()`` fails on the in-process FnApiRunner), so
every poll becomes a small bundle flowing through fused downstream steps within ~0.1 s.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration

from pipelines.streaming.kafka_config import KafkaConfig
from schemas.errors import UserError
from schemas.messages import RawRecord, SourceRef

LOG = logging.getLogger(__name__)
END_OF_TIME = 2**62  # an unbounded partition: the range never completes
IDLE_DELAY_S = 0.05  # checkpoint delay after an empty poll
FETCH_BYTES = 32 * 1024 * 1024


class KafkaTopicError(UserError):
    """The input topic does not exist or the broker cannot be reached."""


def list_partitions(config: KafkaConfig, topic: str, timeout_s: float = 30.0, connect_timeout_s: float = 30.0,
                    ) -> list[int]:
    """Partitions of ``topic``, waiting a little for metadata; a missing topic is a one-line error."""
    import time

    from kafka.errors import KafkaError

    try:
        consumer = config.consumer(bootstrap_timeout_ms=int(connect_timeout_s * 1000))
    except KafkaError as exc:
        raise KafkaTopicError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from exc
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
            if time.monotonic() > deadline:
                raise KafkaTopicError(f"topic {topic!r} has no partitions on {config.bootstrap} (does it exist?)")
            time.sleep(0.5)
    finally:
        consumer.close()


def start_offset(config: KafkaConfig, group: str, topic: str, partition: int, reset: str) -> int:
    """The group's committed offset, else the earliest (or latest) offset of the partition."""
    from kafka import TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = config.consumer(group_id=group)
    try:
        committed = consumer.committed(tp)
        if committed is not None:
            return int(committed)
        offsets = consumer.end_offsets([tp]) if reset == "latest" else consumer.beginning_offsets([tp])
        return int(offsets[tp])
    finally:
        consumer.close()


@dataclass(frozen=True)
class PartitionSpec:
    """One SDF element: a partition plus what is needed to find its start (so the provider is stateless)."""

    topic: str
    partition: int
    config: KafkaConfig
    group: str
    reset: str = "earliest"


class CommittedOffsetRestrictions(RestrictionProvider):
    def initial_restriction(self, element: PartitionSpec) -> OffsetRange:
        start = start_offset(element.config, element.group, element.topic, element.partition, element.reset)
        LOG.info("reading %s/%d from offset %d (group %s)", element.topic, element.partition, start, element.group)
        return OffsetRange(start, END_OF_TIME)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return 1  # unbounded; the size only guides splitting, which we do not want

    def split(self, element, restriction: OffsetRange):
        yield restriction  # one reader per partition keeps offsets ordered for the sink's commits


class ReadPartitionFn(beam.DoFn):
    """Splittable DoFn: ``PartitionSpec`` -> ``RawRecord`` for every offset from the committed one on."""

    def __init__(self, max_records: int = 64) -> None:
        self._max_records = max_records
        self._consumers: dict = {}

    def _consumer(self, spec: PartitionSpec):
        from kafka import TopicPartition

        key = (spec.topic, spec.partition)
        if key not in self._consumers:
            # Large fetches: a message is a whole image (100s of kB), the 1 MB default would fetch a handful.
            consumer = spec.config.consumer(max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=FETCH_BYTES)
            consumer.assign([TopicPartition(spec.topic, spec.partition)])
            self._consumers[key] = consumer
        return self._consumers[key]

    def process(
        self,
        spec: PartitionSpec,
        tracker=beam.DoFn.RestrictionParam(CommittedOffsetRestrictions()),
    ) -> Iterator[RawRecord]:
        from kafka import TopicPartition

        tp = TopicPartition(spec.topic, spec.partition)
        consumer = self._consumer(spec)
        start = tracker.current_restriction().start
        if consumer.position(tp) != start:  # seeking drops prefetched records: only when the restriction moved
            consumer.seek(tp, start)
        records = consumer.poll(timeout_ms=100, max_records=self._max_records).get(tp, [])
        for rec in records:
            if not tracker.try_claim(rec.offset):
                return
            yield RawRecord(
                source=SourceRef(spec.topic, spec.partition, rec.offset),
                key=rec.key,
                value=rec.value,
                headers=tuple((k, v if v is not None else b"") for k, v in (rec.headers or [])),
                timestamp_ms=int(rec.timestamp),
            )
        tracker.defer_remainder(Duration.of(0) if records else Duration.of(IDLE_DELAY_S))

    def teardown(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


class ReadFromKafkaSDF(beam.PTransform):
    """``PBegin`` -> unbounded ``PCollection[RawRecord]`` of every partition of ``topic`` (listed at start)."""

    def __init__(self, config: KafkaConfig, topic: str, group: str, reset: str = "earliest") -> None:
        super().__init__()
        self._config, self._topic, self._group, self._reset = config, topic, group, reset

    def expand(self, pbegin):
        specs = [
            PartitionSpec(self._topic, p, self._config, self._group, self._reset)
            for p in list_partitions(self._config, self._topic)
        ]
        return pbegin | "Partitions" >> beam.Create(specs) | "ReadPartitions" >> beam.ParDo(ReadPartitionFn())
