"""Where a submit's correction records go: a file in the inbox, or the corrections Kafka topic.

Inbox: one JSONL file per submit, written under a temporary name that no ingest pattern matches
(``.tmp-*.part``), fsynced, then renamed to ``review-<time>-<id>.jsonl``: ``tagger feedback ingest`` and the
nightly job (which globs ``*.jsonl``) see all of a submit's records or none.
Kafka: one JSON object per message, as ``tagger feedback ingest --bootstrap`` reads them; the producer waits for
every acknowledgement (acks=all) before the page is told the submit succeeded. A failed submit may have
delivered part of its records; the page says so and resubmitting is safe, because ingest stores identical
records once (``record_key`` is a hash of the record's content).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid
from typing import Protocol

from models import storage
from schemas.errors import UserError


class SinkError(UserError):
    """The records could not be delivered; nothing was acknowledged to the reviewer."""


class Sink(Protocol):
    def write(self, records: list[dict]) -> str: ...  # returns where the records went

    def close(self) -> None: ...


class InboxSink:
    def __init__(self, inbox: str) -> None:
        self.inbox = os.path.abspath(inbox)
        os.makedirs(self.inbox, exist_ok=True)

    def write(self, records: list[dict]) -> str:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        final = os.path.join(self.inbox, f"review-{stamp}-{uuid.uuid4().hex[:8]}.jsonl")
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=self.inbox)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            storage.fsync_dir(self.inbox)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise SinkError(f"cannot write to inbox {self.inbox}: {exc}") from exc
        return final

    def close(self) -> None:
        pass


class KafkaSink:
    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 15.0) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic, self.timeout_s = topic, timeout_s
        try:
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5,
                                          value_serializer=lambda r: json.dumps(r, sort_keys=True).encode(),
                                          request_timeout_ms=int(timeout_s * 1000), max_block_ms=int(timeout_s * 1000),
                                          bootstrap_timeout_ms=int(timeout_s * 1000))
        except (KafkaError, OSError) as exc:
            raise SinkError(f"Kafka at {bootstrap}: cannot connect ({exc})") from exc

    def write(self, records: list[dict]) -> str:
        from kafka.errors import KafkaError

        try:
            futures = [self.producer.send(self.topic, r) for r in records]
            self.producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=self.timeout_s)
        except (KafkaError, OSError) as exc:
            raise SinkError(f"Kafka topic {self.topic}: not all records were acknowledged ({exc}); "
                            "submitting again is safe") from exc
        return f"kafka topic {self.topic}"

    def close(self) -> None:
        self.producer.close(timeout=5)
