"""The great-expectations suite for a batch of correction records, kept beside the record (schemas.feedback).

Every expectation carries ``meta.reason``: the short name the ingest summary counts and the quarantine stores
per row. Checks that need outside knowledge (is the image known? does the batch contradict itself?) are
computed by feedback_ingest.validate into columns named here; the rest are plain column expectations.

Columns of the validated frame:
    image_ref, image_sha256, tag, verdict, annotator, source, reviewed_at, model_version   as read (strings)
    parsed            True if the input row was a readable record at all
    reviewed_at_utc   the parsed timestamp (NaT when missing or unparseable)
    reviewed_at_ok    True/False whether reviewed_at parsed (None when missing)
    new_class_flag    True/False (None when the flag is gibberish)
    model_ref         NAME@vN of the model whose prediction was corrected
    image_resolvable  True/False (None when there is no image reference)
    consistent        False when another row of the batch gives the opposite verdict for the same image,
                      tag and reviewed_at (the conflict rule cannot resolve that)
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping

REQUIRED_COLUMNS = ("image_ref", "tag", "verdict", "annotator", "source", "reviewed_at", "model_version")
FUTURE_TOLERANCE = dt.timedelta(minutes=5)  # clock skew between the review UI and this job

REASONS: dict[str, str] = {
    "unparseable_record": "the input row is not a readable record (bad JSON, not an object, extra CSV cells)",
    **{f"missing_{c}": f"required field {c} is empty" for c in REQUIRED_COLUMNS},
    "invalid_verdict": "verdict is neither 'present' nor 'absent'",
    "invalid_image_sha256": "image_sha256 is not 64 hex digits",
    "invalid_reviewed_at": "reviewed_at is not an ISO-8601 timestamp",
    "reviewed_at_in_future": "reviewed_at lies in the future",
    "invalid_new_class_flag": "new_class is not true/false",
    "unknown_model": "the model version named is not in the registry",
    "tag_not_in_class_set": "tag is not a class of the model named and new_class is not set",
    "image_unresolvable": "the image is neither in the tagged outputs nor in the image store",
    "contradictory_duplicate": "the batch holds the opposite verdict for the same image, tag and reviewed_at",
}
"""Every reason a row can be quarantined for, with the sentence shown in summaries and data docs."""

SUITE_NAME = "feedback_corrections"


def _parsed_only() -> dict:
    return {"row_condition": "parsed==True", "condition_parser": "pandas"}


def build_suite(class_sets: Mapping[str, tuple[str, ...]], now: dt.datetime):
    """The suite for one batch: ``class_sets`` maps each known model ref named in the batch to its classes."""
    import great_expectations as gx
    from great_expectations import expectations as gxe

    def meta(reason: str) -> dict:
        return {"description": REASONS[reason], "meta": {"reason": reason}}

    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    add(gxe.ExpectColumnValuesToBeInSet(column="parsed", value_set=[True], **meta("unparseable_record")))
    for column in REQUIRED_COLUMNS:
        add(gxe.ExpectColumnValuesToNotBeNull(column=column, **_parsed_only(), **meta(f"missing_{column}")))
    add(gxe.ExpectColumnValuesToBeInSet(column="verdict", value_set=["present", "absent"], **meta("invalid_verdict")))
    add(gxe.ExpectColumnValuesToMatchRegex(column="image_sha256", regex=r"^[0-9a-fA-F]{64}$",
                                           **meta("invalid_image_sha256")))
    add(gxe.ExpectColumnValuesToBeInSet(column="reviewed_at_ok", value_set=[True], **meta("invalid_reviewed_at")))
    add(gxe.ExpectColumnValuesToBeBetween(column="reviewed_at_utc", max_value=now + FUTURE_TOLERANCE,
                                          **meta("reviewed_at_in_future")))
    add(gxe.ExpectColumnValuesToNotBeNull(column="new_class_flag", **_parsed_only(),
                                          **meta("invalid_new_class_flag")))
    add(gxe.ExpectColumnValuesToBeInSet(column="model_ref", value_set=sorted(class_sets) or ["(none)"],
                                        **meta("unknown_model")))
    for ref, classes in sorted(class_sets.items()):
        add(gxe.ExpectColumnValuesToBeInSet(
            column="tag", value_set=list(classes),
            row_condition=f"model_ref=={ref!r} & new_class_flag==False", condition_parser="pandas",
            **meta("tag_not_in_class_set"),
        ))
    add(gxe.ExpectColumnValuesToBeInSet(column="image_resolvable", value_set=[True], **meta("image_unresolvable")))
    add(gxe.ExpectColumnValuesToBeInSet(column="consistent", value_set=[True], **meta("contradictory_duplicate")))
    return suite
