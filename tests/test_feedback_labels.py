"""The label view `tagger train --feedback DIR` uses: base labels overridden by feedback (latest wins)."""
from __future__ import annotations

import hashlib
import os

import pytest

from feedback_ingest.labels import apply_feedback
from tests.feedback_fixtures import commit_accepted, correction


def _base(tmp_path, n=3):
    rows = []
    for i in range(n):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(f"image-{i}".encode())
        rows.append((str(path), frozenset({"circle", "red"})))
    return rows


def test_present_adds_absent_removes_and_untouched_tags_keep_base_labels(tmp_path):
    base = _base(tmp_path)
    fb = str(tmp_path / "fb")
    commit_accepted(fb, [
        correction(base[0][0], "red", "absent", "2026-01-01T10:00:00Z"),
        correction(base[0][0], "blue", "present", "2026-01-01T10:00:00Z"),
    ])
    out = dict(apply_feedback(base, fb))
    assert out[base[0][0]] == {"circle", "blue"}
    assert out[base[1][0]] == {"circle", "red"}
    assert len(out) == 3


def test_latest_reviewed_at_wins_regardless_of_ingest_order(tmp_path):
    base = _base(tmp_path)
    fb = str(tmp_path / "fb")
    commit_accepted(fb, [correction(base[1][0], "red", "absent", "2026-01-02T00:00:00Z")], run_id="r1")
    # ingested later but reviewed earlier: must lose
    commit_accepted(fb, [correction(base[1][0], "red", "present", "2026-01-01T00:00:00+00:00")], run_id="r2")
    commit_accepted(fb, [correction(base[2][0], "square", "present", "2026-01-01T00:00:00Z"),
                         correction(base[2][0], "square", "absent", "2026-01-03T00:00:00Z")], run_id="r3")
    out = dict(apply_feedback(base, fb))
    assert out[base[1][0]] == {"circle"}
    assert out[base[2][0]] == {"circle", "red"}


def test_match_by_sha256_and_images_outside_base_are_added(tmp_path):
    base = _base(tmp_path)
    fb = str(tmp_path / "fb")
    digest = hashlib.sha256(b"image-2").hexdigest()
    new_image = str(tmp_path / "new.jpg")
    commit_accepted(fb, [
        correction(None, "red", "absent", "2026-01-01T00:00:00Z", image_sha256=digest),
        correction(new_image, "triangle", "present", "2026-01-01T00:00:00Z"),
        correction(new_image, "green", "absent", "2026-01-01T00:00:00Z"),
        correction(None, "red", "present", "2026-01-01T00:00:00Z", image_sha256="0" * 64),  # unknown: skipped
    ])
    out = apply_feedback(base, fb)
    assert dict(out)[base[2][0]] == {"circle"}
    assert out[-1] == (new_image, frozenset({"triangle"}))
    assert len(out) == 4


def test_relative_and_file_uri_spellings_match_the_same_base_image(tmp_path, monkeypatch):
    base = _base(tmp_path)
    fb = str(tmp_path / "fb")
    monkeypatch.chdir(tmp_path)
    commit_accepted(fb, [correction("file://" + base[0][0], "circle", "absent", "2026-01-01T00:00:00Z"),
                         correction(os.path.basename(base[1][0]), "circle", "absent", "2026-01-01T00:00:00Z")])
    out = dict(apply_feedback(base, fb))
    assert out[base[0][0]] == {"red"} and out[base[1][0]] == {"red"} and len(out) == 3


def test_empty_or_missing_feedback_dir_returns_base_unchanged(tmp_path):
    base = _base(tmp_path)
    assert apply_feedback(base, str(tmp_path / "nothing")) == base


def test_as_of_a_past_run_reproduces_the_view_a_past_retrain_used(tmp_path):
    from feedback_ingest.dataset import DatasetError, FeedbackDataset

    base = _base(tmp_path)
    fb = str(tmp_path / "fb")
    commit_accepted(fb, [correction(base[0][0], "red", "absent", "2026-01-01T00:00:00Z")], run_id="r1")
    version = FeedbackDataset(fb).version()
    commit_accepted(fb, [correction(base[0][0], "red", "present", "2026-01-02T00:00:00Z")], run_id="r2")
    assert dict(apply_feedback(base, fb))[base[0][0]] == {"circle", "red"}
    assert version == "r1" and dict(apply_feedback(base, fb, as_of=version))[base[0][0]] == {"circle"}
    with pytest.raises(DatasetError, match="no committed run 'r9'"):
        apply_feedback(base, fb, as_of="r9")
