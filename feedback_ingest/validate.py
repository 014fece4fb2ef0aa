"""Validate a batch of correction records with great-expectations and say, per row, which checks failed.

GX runs in an ephemeral (in-memory) context, so nothing outside the feedback dataset is written; the run's
validation result is saved as JSON and rendered as one self-contained HTML page (feedback_ingest/docs_page.py:
GX's own data docs need CDNs and JavaScript to show anything) into a folder the caller names.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass

from feedback_ingest.lookups import ImageIndex, ModelCatalog
from feedback_ingest.sources import SourceRecord
from schemas.feedback import VERDICTS, clean_text, parse_flag, parse_timestamp
from schemas.feedback_suite import SUITE_NAME, build_suite

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home (no network here anyway)
logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO chatter would bury the summary


class ValidationFailure(RuntimeError):
    """GX itself failed on an expectation (not a data problem): the run must not accept anything."""


@dataclass
class ValidationOutcome:
    reasons: list[list[str]]  # per input row, the failing expectations' reasons (empty = valid)
    failed: list[list[str]]  # per input row, the failing expectations' descriptions with their kwargs
    success: bool
    result_json: dict
    data_docs_index: str | None


def build_frame(records: list[SourceRecord], catalog: ModelCatalog, images: ImageIndex):
    """The frame the suite validates: record fields as read plus the derived check columns."""
    import pandas as pd

    rows, refs = [], []
    for src in records:
        r = src.record
        uri, sha = clean_text(r.get("image_uri")), clean_text(r.get("image_sha256"))
        refs.append((uri, sha))
        raw_ts = clean_text(r.get("reviewed_at"))
        stamp = parse_timestamp(raw_ts) if raw_ts else None
        rows.append({
            "parsed": src.parse_error is None,
            "image_ref": uri or sha,
            "image_sha256": sha,
            "tag": clean_text(r.get("tag")),
            "verdict": clean_text(r.get("verdict")),
            "annotator": clean_text(r.get("annotator")),
            "source": clean_text(r.get("source")),
            "reviewed_at": raw_ts,
            "model_version": clean_text(r.get("model_version")),
            "reviewed_at_utc": stamp,
            "reviewed_at_ok": None if raw_ts is None else stamp is not None,
            "new_class_flag": parse_flag(r.get("new_class")),
            "model_ref": catalog.ref(clean_text(r.get("model_name")), clean_text(r.get("model_version"))),
        })
    for row, known in zip(rows, images.resolvable_many(refs)):
        row["image_resolvable"] = known
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else None)
    frame["reviewed_at_utc"] = pd.to_datetime(frame["reviewed_at_utc"], utc=True)
    verdicts: dict[tuple, set] = defaultdict(set)
    for row in rows:
        if row["verdict"] in VERDICTS and row["reviewed_at_utc"]:
            verdicts[(row["image_ref"], row["tag"], row["reviewed_at_utc"])].add(row["verdict"])
    frame["consistent"] = [
        len(verdicts.get((row["image_ref"], row["tag"], row["reviewed_at_utc"]), ())) <= 1 for row in rows
    ]
    for column in ("new_class_flag", "reviewed_at_ok", "image_resolvable"):
        frame[column] = frame[column].astype(object)
    return frame


def validate(
    records: list[SourceRecord],
    catalog: ModelCatalog,
    images: ImageIndex,
    now: dt.datetime,
    run_id: str,
    docs_dir: str | None,
) -> ValidationOutcome:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    # GX pins this module's logger to INFO, and the ephemeral context logs a temporary docs directory there.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = build_frame(records, catalog, images)
    refs = {ref for ref in frame["model_ref"].dropna().unique()}
    class_sets = {ref: classes for ref in refs if (classes := catalog.classes(ref)) is not None}

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = context.data_sources.add_pandas("feedback").add_dataframe_asset("corrections")
    definition = batch.add_batch_definition_whole_dataframe("batch")
    suite = context.suites.add(build_suite(class_sets, now))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"feedback-{run_id}", data=definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="feedback_ingest", validation_definitions=[validation], actions=[],
        result_format={"result_format": "COMPLETE"},
    ))
    run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_id, run_time=now))
    (result,) = run.run_results.values()

    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    failed: list[list[str]] = [[] for _ in range(len(frame))]
    for item in result.results:
        config = item.expectation_config
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise ValidationFailure(f"{config.type} on {config.kwargs.get('column')}: "
                                    f"{item.exception_info.get('exception_message')}")
        if item.success:
            continue
        reason = config.meta["reason"]
        label = f"{config.type}({config.kwargs.get('column')})"
        for index in item.result.get("unexpected_index_list") or []:
            if reason not in reasons[index]:
                reasons[index].append(reason)
                failed[index].append(label)
    result_json = result.to_json_dict()
    docs_index = None
    if docs_dir:
        from feedback_ingest.docs_page import render_validation_page
        from models.storage import write_bytes_atomic

        docs_index = os.path.join(docs_dir, "index.html")
        write_bytes_atomic(docs_index, render_validation_page(result_json, run_id, len(frame)).encode())
    return ValidationOutcome(reasons, failed, bool(result.success), result_json, docs_index)


def write_result(outcome: ValidationOutcome, path: str) -> None:
    from models.storage import write_bytes_atomic

    write_bytes_atomic(path, json.dumps(outcome.result_json, indent=1, default=str).encode())
