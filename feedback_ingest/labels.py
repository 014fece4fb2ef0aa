"""The current-labels view: base training labels overridden by validated feedback.

Conflict rule (documented in docs/feedback.md):

1. Feedback is matched to a base image by URI (local paths compared as absolute paths, ``file://`` stripped),
   else by content sha256 (base images are hashed only if some correction carries a sha256 without a
   matching URI).
2. Per (image, tag) the correction with the latest ``reviewed_at`` wins; ties (only possible across ingest
   runs, since one batch with contradicting verdicts at the same instant is quarantined) go to the later
   ingest, then to the larger record key, so the result never depends on read order.
3. ``present`` adds the tag to the image's label set, ``absent`` removes it; tags nobody corrected keep their
   base label.
4. Corrected images that are not in the base dataset are added, with the tags whose winning verdict is
   ``present`` (an image whose every verdict is ``absent`` becomes a valid negative). Such images need a
   URI; a correction known only by sha256 that matches no base image cannot be trained on and is skipped.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable

from feedback_ingest.dataset import FeedbackDataset
from models import storage
from models.registry import sha256_file

log = logging.getLogger(__name__)

Row = tuple[str, frozenset[str]]
_COLUMNS = ["image_uri", "image_sha256", "tag", "verdict", "reviewed_at", "ingested_at", "record_key"]


def normalize_uri(uri: str) -> str:
    """One spelling per image: absolute local paths, URLs unchanged."""
    if uri.startswith("file://"):
        uri = uri[7:]
    return os.path.abspath(os.path.expanduser(uri)) if storage.is_local(uri) else uri


def latest_verdicts(corrections: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """Apply the conflict rule to corrections already keyed by image: ``{(image_key, tag): winning row}``.

    Each row needs ``image_key``, ``tag``, ``verdict``, ``reviewed_at``, ``ingested_at``, ``record_key``.
    """
    winners: dict[tuple[str, str], dict] = {}
    for row in corrections:
        key = (row["image_key"], row["tag"])
        rank = (row["reviewed_at"], row["ingested_at"], row["record_key"])
        best = winners.get(key)
        if best is None or rank > (best["reviewed_at"], best["ingested_at"], best["record_key"]):
            winners[key] = row
    return winners


def _sha256(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError as exc:
        log.warning("cannot hash base image %s for feedback matching: %s", path, exc)
        return None


def apply_feedback(rows: list[Row], feedback_dir: str, as_of: str | None = None) -> list[Row]:
    """Base rows ``(image path/URI, tags)`` with the feedback dataset's corrections applied (see module doc).

    Base rows keep their order and spelling; added images follow, sorted by URI. ``as_of`` (an ingest run id,
    see ``FeedbackDataset.version``) reproduces the view a past retrain used.
    """
    corrections = FeedbackDataset(feedback_dir).read("accepted", _COLUMNS, as_of=as_of).to_pylist()
    if not corrections:
        return list(rows)
    by_uri = {normalize_uri(uri): i for i, (uri, _tags) in enumerate(rows)}
    by_sha: dict[str, int] | None = None

    keyed = []
    for c in corrections:
        uri = normalize_uri(c["image_uri"]) if c["image_uri"] else None
        index = by_uri.get(uri) if uri else None
        if index is None and c["image_sha256"]:
            if by_sha is None:  # hash the base set once, and only when a correction needs it
                by_sha = {}
                for i, (path, _tags) in enumerate(rows):
                    digest = _sha256(path)
                    if digest:
                        by_sha.setdefault(digest, i)
            index = by_sha.get(c["image_sha256"].lower())
        if index is not None:
            image_key = f"base:{index}"
        elif uri:
            image_key = f"new:{uri}"
        else:
            log.warning("feedback for sha256 %s matches no base image and has no URI; skipped", c["image_sha256"])
            continue
        keyed.append({**c, "image_key": image_key})

    labels: dict[str, set[str]] = {f"base:{i}": set(tags) for i, (_uri, tags) in enumerate(rows)}
    for (image_key, tag), winner in sorted(latest_verdicts(keyed).items()):
        tags = labels.setdefault(image_key, set())
        if winner["verdict"] == "present":
            tags.add(tag)
        else:
            tags.discard(tag)

    result: list[Row] = [(uri, frozenset(labels[f"base:{i}"])) for i, (uri, _tags) in enumerate(rows)]
    added = sorted(k for k in labels if k.startswith("new:"))
    result.extend((k[4:], frozenset(labels[k])) for k in added)
    log.info(
        "feedback %s: %d corrections applied, %d images added to %d base images",
        feedback_dir, len(keyed), len(added), len(rows),
    )
    return result
