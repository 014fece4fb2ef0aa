"""Read a batch of correction messages (JSON objects) from a Kafka topic, and acknowledge it afterwards.

Partitions are assigned manually (no group rebalance to wait for, and validation may take longer than a
group's poll interval); the group id only names where offsets are committed. The reader starts at the
group's committed offsets (earliest when it has none) and stops after ``max_messages`` or when nothing new
arrives for ``idle_seconds``. Offsets are committed by ``acknowledge`` only after the ingest run committed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from feedback_ingest.sources import InputError, SourceRecord, parse_json_record

log = logging.getLogger(__name__)


@dataclass
class KafkaBatch:
    records: list[SourceRecord]
    next_offsets: dict[int, int]  # partition -> offset after the last message read

    def manifest_entry(self, topic: str, group: str) -> dict:
        return {"topic": topic, "group": group, "next_offsets": {str(p): o for p, o in self.next_offsets.items()}}


class KafkaCorrections:
    def __init__(self, bootstrap: str, topic: str, group: str, request_timeout_ms: int = 15000) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        self.topic, self.group = topic, group
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=request_timeout_ms,
            )
            partitions = self.consumer.partitions_for_topic(topic)
        except (KafkaError, OSError) as exc:
            raise InputError(f"Kafka at {bootstrap}: cannot connect ({exc})") from exc
        if not partitions:
            self.consumer.close()
            raise InputError(f"Kafka at {bootstrap}: topic {topic!r} does not exist")
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)

    def read(self, max_messages: int = 100_000, idle_seconds: float = 5.0) -> KafkaBatch:
        records: list[SourceRecord] = []
        next_offsets: dict[int, int] = {}
        idle_since = time.monotonic()
        while len(records) < max_messages and time.monotonic() - idle_since < idle_seconds:
            polled = self.consumer.poll(timeout_ms=500, max_records=min(1000, max_messages - len(records)))
            if any(polled.values()):
                idle_since = time.monotonic()
            for tp, messages in polled.items():
                for m in messages:
                    raw = (m.value or b"").decode("utf-8", errors="replace")
                    record, error = parse_json_record(raw)
                    records.append(SourceRecord(record, raw, "kafka", self.topic, kafka_partition=tp.partition,
                                                kafka_offset=m.offset, parse_error=error))
                    next_offsets[tp.partition] = m.offset + 1
        log.info("read %d messages from %s (group %s)", len(records), self.topic, self.group)
        return KafkaBatch(records, next_offsets)

    def acknowledge(self, batch: KafkaBatch, timeout_ms: int = 30000) -> None:
        """Commit the group's offsets past ``batch``: call only once its ingest run has committed.

        If the broker does not answer now, the run's rows are stored but the commit is unconfirmed (it may
        still land when the broker recovers): the error says so; a next run that re-reads them adds nothing.
        """
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if not batch.next_offsets:
            return
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in batch.next_offsets.items()}
        try:
            self.consumer.commit(offsets, timeout_ms=timeout_ms)
        except (KafkaError, OSError) as exc:
            raise InputError(
                f"stored {len(batch.records)} messages but could not confirm the offset commit of group "
                f"{self.group} ({type(exc).__name__}: {exc}); a next run that re-reads them adds nothing"
            ) from exc

    def close(self) -> None:
        self.consumer.close()
