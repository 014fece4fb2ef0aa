"""Run ids, one format for every job that writes runs (tagging, feedback ingestion): sortable UTC time + random."""
from __future__ import annotations

import datetime as dt
import uuid


def new_run_id(now: dt.datetime) -> str:
    """``20261122T013410Z-ebd3dfc9``: sorts by start time, unique across concurrent runs."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
