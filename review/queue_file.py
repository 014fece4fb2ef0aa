"""The review queue file: which images to review, what the model said about them, and why each was chosen.

One JSON document, written atomically by ``tagger review queue`` and read by ``tagger review serve`` and the
Label Studio export. It may be edited by hand (drop items, reorder them), so reading validates every field a
consumer relies on and fails with one line naming the item and the field.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from models import storage
from schemas.errors import UserError

FORMAT = "tagger-review-queue"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QueueError(UserError):
    """A queue file that cannot be used; the message names the file, the item and the field."""


@dataclass(frozen=True)
class QueueItem:
    """One image to review. ``tags`` is what the reviewer starts from (the model's tags, or the training labels
    for ``label-issues``); ``reason`` records why the strategy chose it."""

    image_uri: str
    content_sha256: str | None
    model_name: str
    model_version: str
    tags: tuple[str, ...]
    probabilities: dict[str, float]
    reason: dict[str, Any]

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}@{self.model_version}"


@dataclass
class Queue:
    strategy: str
    model_name: str
    model_version: str
    classes: tuple[str, ...]
    thresholds: dict[str, float]
    items: list[QueueItem]
    params: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "strategy": self.strategy,
            "params": self.params,
            "model": {"name": self.model_name, "version": self.model_version, "classes": list(self.classes),
                      "thresholds": self.thresholds},
            "items": [dataclasses.asdict(item) | {"tags": list(item.tags)} for item in self.items],
        }
        return json.dumps(doc, indent=1, sort_keys=True)

    def write(self, path: str) -> None:
        storage.write_bytes_atomic(path, self.to_json().encode())


def read_queue(path: str) -> Queue:
    """Load and validate a queue file (a hand-edited one included)."""
    try:
        doc = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise QueueError(f"{path}: no such queue file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QueueError(f"{path}: not a readable queue file ({exc})") from exc
    return parse_queue(doc, path)


def parse_queue(doc: Any, where: str) -> Queue:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise QueueError(f"{where}: not a review queue (expected a JSON object with \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise QueueError(f"{where}: queue format_version {doc.get('format_version')!r} is not {FORMAT_VERSION}")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise QueueError(f"{where}: \"model\" must be an object with name, version, classes, thresholds")
    name, version = _text(model.get("name"), where, "model.name"), _text(model.get("version"), where, "model.version")
    classes = _texts(model.get("classes"), where, "model.classes")
    thresholds = _probabilities(model.get("thresholds"), where, "model.thresholds")
    raw_items = doc.get("items")
    if not isinstance(raw_items, list):
        raise QueueError(f"{where}: \"items\" must be a list")
    items = [_item(raw, f"{where}: item {i}") for i, raw in enumerate(raw_items)]
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    return Queue(str(doc.get("strategy") or "unknown"), name, version, tuple(classes), thresholds, items, params,
                 str(doc.get("created_at") or ""))


def _item(raw: Any, where: str) -> QueueItem:
    if not isinstance(raw, dict):
        raise QueueError(f"{where}: must be an object")
    sha = raw.get("content_sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        raise QueueError(f"{where}: content_sha256 must be 64 lower-case hex digits or null")
    reason = raw.get("reason")
    if not isinstance(reason, dict):
        raise QueueError(f"{where}: reason must be an object (why the item was chosen)")
    return QueueItem(
        image_uri=_text(raw.get("image_uri"), where, "image_uri"),
        content_sha256=sha,
        model_name=_text(raw.get("model_name"), where, "model_name"),
        model_version=_text(raw.get("model_version"), where, "model_version"),
        tags=tuple(_texts(raw.get("tags"), where, "tags")),
        probabilities=_probabilities(raw.get("probabilities"), where, "probabilities"),
        reason=reason,
    )


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise QueueError(f"{where}: {name} must be a non-empty string")
    return value


def _texts(value: Any, where: str, name: str) -> list[str]:
    if not isinstance(value, list):
        raise QueueError(f"{where}: {name} must be a list of strings")
    return [_text(v, where, name) for v in value]


def _probabilities(value: Any, where: str, name: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise QueueError(f"{where}: {name} must be an object of class -> number in [0, 1]")
    out = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not (0.0 <= number <= 1.0) \
                or math.isnan(number):
            raise QueueError(f"{where}: {name}[{key!r}] must be a number in [0, 1]")
        out[key] = float(number)
    return out
