"""The scheduled entry points: skip rules, the lock, logs and exit statuses an operator can alert on."""
from __future__ import annotations

import json
import os

from feedback_ingest.locking import exclusive_lock
from jobs.scheduled import EXIT_BUSY, main
from tests.feedback_fixtures import commit_accepted, correction


def status(state: str, job: str) -> dict:
    with open(os.path.join(state, "status", f"{job}.json")) as fh:
        return json.load(fh)


def test_weekly_retrain_is_skipped_until_enough_new_feedback_exists(tmp_path):
    state, dataset = str(tmp_path / "state"), str(tmp_path / "feedback")
    commit_accepted(dataset, [correction(f"/img/{i}.jpg", "red", "present", "2026-01-01T00:00:00Z")
                              for i in range(3)])
    args = ["weekly", "--state", state, "--dataset", dataset, "--data", str(tmp_path / "data"),
            "--min-new-feedback", "5", "--registry", str(tmp_path / "registry")]
    assert main(args) == 0
    got = status(state, "weekly")
    assert got["result"] == "ok" and got["steps"] == []
    assert got["note"].startswith("skipped: 3 new accepted corrections")
    with open(got["log"]) as fh:
        assert "skipped: 3 new accepted corrections" in fh.read()


def test_a_failing_step_fails_the_run_with_its_status_and_a_log(tmp_path):
    """Training on a missing dataset fails: the job's exit status and status file say so, nothing is marked."""
    state, dataset = str(tmp_path / "state"), str(tmp_path / "feedback")
    commit_accepted(dataset, [correction("/img/a.jpg", "red", "present", "2026-01-01T00:00:00Z")])
    args = ["weekly", "--state", state, "--dataset", dataset, "--data", str(tmp_path / "no-such-data"),
            "--min-new-feedback", "1", "--registry", str(tmp_path / "registry")]
    assert main(args) == 2
    got = status(state, "weekly")
    assert got["result"] == "failed" and got["exit_status"] == 2
    assert [s["step"] for s in got["steps"]] == ["train"]
    with open(got["log"]) as fh:
        log = fh.read()
    assert "tagger train: error:" in log and "step train: exit 2" in log
    assert not os.path.exists(os.path.join(state, "weekly-last-retrain.json"))


def test_two_runs_of_the_same_job_never_overlap(tmp_path, capsys):
    state = str(tmp_path / "state")
    os.makedirs(state)
    args = ["nightly", "--state", state, "--dataset", str(tmp_path / "fb"), "--input", str(tmp_path / "*.jpg"),
            "--tagged", str(tmp_path / "tagged")]
    with exclusive_lock(os.path.join(state, "nightly.lock"), what="scheduled job nightly"):  # a run in progress
        assert main(args) == EXIT_BUSY
    assert "locked by another run" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(state, "status", "nightly.json"))
    assert not os.path.exists(os.path.join(state, "logs")) or os.listdir(os.path.join(state, "logs")) == []


def test_nightly_still_ingests_the_inbox_when_tagging_fails_and_reports_the_failure(tmp_path):
    state, inbox = str(tmp_path / "state"), tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "c.jsonl").write_text(json.dumps(correction("/img/a.jpg", "red", "present", "2026-01-01")) + "\n")
    args = ["nightly", "--state", state, "--dataset", str(tmp_path / "fb"), "--registry", str(tmp_path / "empty"),
            "--input", str(tmp_path / "*.jpg"), "--tagged", str(tmp_path / "tagged"), "--inbox", str(inbox)]
    code = main(args)
    got = status(state, "nightly")
    assert code != 0 and got["exit_status"] == code and got["result"] == "failed"
    assert [(s["step"], s["exit_status"] == 0) for s in got["steps"]] == [("tag", False), ("ingest-files", True)]
    assert os.path.exists(inbox / "done" / "c.jsonl")  # ingested (quarantined: the registry has no model)
    from feedback_ingest.dataset import FeedbackDataset
    (row,) = FeedbackDataset(str(tmp_path / "fb")).read("quarantine").to_pylist()
    assert "unknown_model" in row["reasons"]
