"""A reviewer's decision on one queue item -> correction records in the feedback format (schemas/feedback.py).

The reviewer sees the item's starting tags and submits the tag set they consider right. Records written:
``present`` for every tag of that set (confirmed or added; a tag outside the model's classes is flagged
``new_class``) and ``absent`` for every starting tag removed. So the feedback dataset holds the reviewed image's
whole tag set, and an image that was not in the base training data is added with exactly those tags
(feedback_ingest.labels, rule 4) instead of only the changed ones.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from review.queue_file import QueueItem
from schemas.errors import UserError

MAX_TAG_LENGTH = 200


class DecisionError(UserError):
    """A submitted decision that cannot become correction records (bad tag, unknown item)."""


def clean_tags(tags: Iterable[object]) -> list[str]:
    """Tags as submitted -> stripped, de-duplicated, order kept; anything unusable is an error, not dropped."""
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise DecisionError(f"tag {tag!r} is not a string")
        text = tag.strip()
        if not text or len(text) > MAX_TAG_LENGTH or any(ord(ch) < 32 for ch in text):
            raise DecisionError(f"tag {tag!r} must be 1-{MAX_TAG_LENGTH} printable characters")
        if text not in out:
            out.append(text)
    return out


def decision_records(
    item: QueueItem,
    final_tags: Iterable[object],
    classes: Iterable[str],
    *,
    annotator: str,
    source: str,
    reviewed_at: dt.datetime,
    comment: str | None = None,
) -> list[dict]:
    """Correction records for one reviewed item (see the module docstring for which verdicts)."""
    annotator = (annotator or "").strip()
    if not annotator:
        raise DecisionError("an annotator name is required")
    if reviewed_at.tzinfo is None:
        raise ValueError("reviewed_at must be timezone-aware")
    known = set(classes)
    final = clean_tags(final_tags)
    base = {
        "image_uri": item.image_uri,
        "image_sha256": item.content_sha256,
        "annotator": annotator,
        "source": source,
        "reviewed_at": reviewed_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "model_name": item.model_name,
        "model_version": item.model_version,
        "comment": comment or None,
    }
    records = [base | {"tag": t, "verdict": "present", "new_class": t not in known} for t in final]
    records += [base | {"tag": t, "verdict": "absent", "new_class": t not in known}
                for t in item.tags if t not in final]
    return records
