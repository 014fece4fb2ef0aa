"""The streaming contracts, defined once: input messages, decisions and dead letters on Kafka.

Input message (topic ``IN``), one of:

* **inline**: the value is the image file itself; header ``content-type: image/...``; the id comes from the
  ``id`` header, else the message key.
* **JSON** (``content-type: application/json`` or no content type): ``{"id": "...", "uri": "gs://..."}``
  (read only under the job's allowed prefixes) or ``{"id": "...", "image_base64": "..."}``.

Decision (topic ``OUT``, key = ``dedup_key``): id, tags, per-class probabilities, model name and version, and
the source topic/partition/offset. Delivery into the topic is at-least-once; consumers drop repeats by
``dedup_key`` (``topic/partition/offset`` of the input, identical across retries).

Dead letter (topic ``DLQ``, key = original key): original key and headers (base64), a payload reference
(source coordinates, size, sha256, URI), the failing stage and the reason. The payload itself is not copied:
it may be the oversized or hostile thing that failed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

import pyarrow as pa

from schemas.tagging import TAGS_SCHEMA

CONTENT_TYPE_HEADER = "content-type"
ID_HEADER = "id"
JSON_CONTENT_TYPE = "application/json"
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024

#: Where a message failed: parse (envelope), read (URI fetch), decode, inference, output.
Stage = Literal["parse", "read", "decode", "inference", "output"]

#: Streaming Parquet rows: the batch schema plus the message id and source coordinates (a superset, so
#: batch queries run unchanged and streaming rows can be traced to their Kafka record).
STREAM_TAGS_SCHEMA = pa.schema(
    list(TAGS_SCHEMA)
    + [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("source_topic", pa.string(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
    ]
)


class MessageError(ValueError):
    """An input message that cannot be tagged; ``stage`` and ``reason`` (a stable short code) say why."""

    def __init__(self, stage: Stage, reason: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class SourceRef:
    """Where a record came from; ``dedup_key`` is stable across redeliveries of the same record."""

    topic: str
    partition: int
    offset: int

    @property
    def dedup_key(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def uri(self) -> str:
        return f"kafka://{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as read, before any interpretation (picklable, no kafka-python types)."""

    source: SourceRef
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


@dataclass(frozen=True)
class ImageRequest:
    """A parsed input message: exactly one of ``data`` (inline bytes) or ``uri`` is set."""

    id: str
    data: bytes | None = None
    uri: str | None = None
    content_type: str | None = None


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    """Last value of a header (case-insensitive name), decoded as UTF-8, or None."""
    found = None
    for key, value in headers:
        if key.lower() == name and value is not None:
            found = value.decode("utf-8", errors="replace")
    return found


def parse_message(record: RawRecord, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ImageRequest:
    """Interpret one record per the contract above, or raise ``MessageError`` (stage ``parse``)."""
    value = record.value or b""
    if len(value) > max_bytes:
        raise MessageError("parse", "oversized", f"message of {len(value)} bytes exceeds the limit {max_bytes}")
    content_type = (header(record.headers, CONTENT_TYPE_HEADER) or "").split(";")[0].strip().lower()
    if content_type.startswith("image/"):
        message_id = header(record.headers, ID_HEADER) or (record.key or b"").decode("utf-8", errors="replace")
        if not message_id:
            raise MessageError("parse", "missing_id", "inline image without an 'id' header or a message key")
        if not value:
            raise MessageError("parse", "missing_image", f"message {message_id}: empty inline image")
        return ImageRequest(id=message_id, data=value, content_type=content_type)
    if content_type not in ("", JSON_CONTENT_TYPE):
        raise MessageError("parse", "unsupported_content_type", f"content-type {content_type!r} is not image/* or JSON")
    try:
        body = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MessageError("parse", "not_json", f"value is neither an image (content-type) nor JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MessageError("parse", "not_json_object", "JSON message must be an object")
    message_id = body.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise MessageError("parse", "missing_id", "JSON message has no string 'id'")
    uri, inline = body.get("uri"), body.get("image_base64")
    if uri is not None and inline is not None:
        raise MessageError("parse", "ambiguous_image", f"message {message_id}: both 'uri' and 'image_base64'")
    if isinstance(uri, str) and uri:
        return ImageRequest(id=message_id, uri=uri)
    if isinstance(inline, str) and inline:
        try:
            data = base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MessageError("parse", "bad_base64", f"message {message_id}: image_base64 is not base64") from exc
        return ImageRequest(id=message_id, data=data)
    raise MessageError("parse", "missing_image", f"message {message_id}: no 'uri' or 'image_base64'")


@dataclass(frozen=True)
class Decision:
    """What the moderation consumers read: one per successfully tagged input record."""

    id: str
    tags: tuple[str, ...]
    probabilities: Mapping[str, float]
    model_name: str
    model_version: str
    source_topic: str
    source_partition: int
    source_offset: int
    dedup_key: str
    decided_at: str
    image_uri: str = ""
    model_variant: str = ""  # which of the version's model files ran: fp32 | int8

    def to_json(self) -> bytes:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["probabilities"] = {k: round(float(v), 6) for k, v in self.probabilities.items()}
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: bytes | str) -> "Decision":
        data = json.loads(text)
        data["tags"] = tuple(data["tags"])
        return cls(**data)


@dataclass(frozen=True)
class DeadLetter:
    """An input record that produced no decision, with enough to find it again and to see why."""

    stage: str
    reason: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    dedup_key: str
    key_base64: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name, base64 value)
    payload: dict[str, Any] = field(default_factory=dict)  # size, sha256, uri: a reference, not the bytes
    id: str | None = None
    failed_at: str = ""

    @classmethod
    def for_record(
        cls, record: RawRecord, stage: str, reason: str, message: str, failed_at: str,
        message_id: str | None = None, uri: str | None = None,
    ) -> "DeadLetter":
        value = record.value or b""
        payload: dict[str, Any] = {"size": len(value), "sha256": hashlib.sha256(value).hexdigest()}
        if uri:
            payload["uri"] = uri
        return cls(
            stage=stage,
            reason=reason,
            message=message[:1000],
            source_topic=record.source.topic,
            source_partition=record.source.partition,
            source_offset=record.source.offset,
            dedup_key=record.source.dedup_key,
            key_base64=None if record.key is None else base64.b64encode(record.key).decode(),
            headers=[(k, base64.b64encode(v or b"").decode()) for k, v in record.headers],
            payload=payload,
            id=message_id,
            failed_at=failed_at,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: bytes | str) -> "DeadLetter":
        data = json.loads(text)
        data["headers"] = [tuple(h) for h in data.get("headers", [])]
        return cls(**data)
