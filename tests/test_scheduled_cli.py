"""The scheduled jobs are reachable through the one `tagger` command, with their status file for alerting."""
from __future__ import annotations

import json
import os

from jobs.cli import main


def test_tagger_scheduled_weekly_skips_without_new_feedback_and_records_status(tmp_path, registry_root, capsys):
    state = tmp_path / "state"
    code = main(["scheduled", "weekly", "--state", str(state), "--dataset", str(tmp_path / "feedback"),
                 "--data", str(tmp_path / "base"), "--registry", registry_root, "--min-new-feedback", "5"])
    assert code == 0
    status_files = os.listdir(state / "status")
    assert status_files == ["weekly.json"]
    status = json.load(open(state / "status" / "weekly.json"))
    assert status["exit_status"] == 0 and "0 new accepted corrections" in json.dumps(status)


def test_tagger_scheduled_help_lists_both_jobs(capsys):
    try:
        main(["scheduled", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "nightly" in out and "weekly" in out
