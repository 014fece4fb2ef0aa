"""Counts over a feedback dataset: what the weekly retrain decision and an operator look at."""
from __future__ import annotations

import datetime as dt
from collections import Counter

from feedback_ingest.dataset import FeedbackDataset
from schemas.feedback import parse_timestamp
from schemas.errors import UserError


def accepted_since(dataset_dir: str, since: dt.datetime | None) -> int:
    """Accepted corrections ingested at or after ``since`` (all of them when None)."""
    stamps = FeedbackDataset(dataset_dir).read("accepted", ["ingested_at"]).column("ingested_at").to_pylist()
    return sum(1 for s in stamps if since is None or s >= since)


def dataset_status(dataset_dir: str, since: str | None = None) -> dict:
    dataset = FeedbackDataset(dataset_dir)
    manifests = dataset.manifests()
    reasons = Counter(
        r for row in dataset.read("quarantine", ["reasons"]).column("reasons").to_pylist() for r in row or []
    )
    status = {
        "dataset": dataset.root,
        "runs": len(manifests),
        "version": manifests[-1]["run_id"] if manifests else None,  # pass as as_of to re-read this state
        "accepted": dataset.read("accepted", ["record_key"]).num_rows,
        "quarantined": dataset.read("quarantine", ["record_key"]).num_rows,
        "quarantined_by_reason": dict(sorted(reasons.items())),
    }
    if since:
        stamp = parse_timestamp(since)
        if stamp is None:
            raise UserError(f"--since {since!r} is not an ISO-8601 timestamp")
        status["accepted_since"] = accepted_since(dataset_dir, stamp)
    return status
