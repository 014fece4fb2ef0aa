"""Feed a folder of images into a topic (inline messages per schemas/messages.py) for demos and load tests."""
from __future__ import annotations

import glob
import mimetypes
import os
import time
from typing import Callable, Iterable

from pipelines.streaming.kafka_config import KafkaConfig
from schemas.errors import UserError
from schemas.messages import CONTENT_TYPE_HEADER, ID_HEADER


class ReplayError(UserError):
    """Nothing to replay, or the broker did not acknowledge."""


def expand_inputs(pattern: str) -> list[str]:
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not paths:
        raise ReplayError(f"--input {pattern!r} matches no files")
    return paths


def content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed if guessed and guessed.startswith("image/") else "image/jpeg"


def replay(
    config: KafkaConfig,
    topic: str,
    paths: Iterable[str],
    rate: float | None = None,
    id_for: Callable[[str], str] = lambda p: os.path.basename(p),
    on_sent: Callable[[str, float], None] | None = None,
) -> int:
    """Produce each file as one inline message at ``rate`` messages/s (None: as fast as possible)."""
    producer = config.producer()
    sent, start = 0, time.monotonic()
    futures = []
    try:
        for path in paths:
            if rate:
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            with open(path, "rb") as fh:
                data = fh.read()
            message_id = id_for(path)
            sent_at = time.time()
            headers = [(CONTENT_TYPE_HEADER, content_type(path).encode()), (ID_HEADER, message_id.encode()),
                       ("sent-at", repr(sent_at).encode())]
            futures.append(producer.send(topic, key=message_id.encode(), value=data, headers=headers))
            if on_sent:
                on_sent(message_id, sent_at)
            sent += 1
        producer.flush(timeout=120)
        for future in futures:
            future.get(timeout=0)
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        raise ReplayError(f"replay to {topic} on {config.bootstrap} failed after {sent} messages: {exc}") from exc
    finally:
        producer.close(timeout=5)
    return sent
