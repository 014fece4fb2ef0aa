"""`tagger tag` as a user runs it: the summary, Beam options passing through, and live progress files."""
from __future__ import annotations

import glob
import os

import pytest

from jobs.cli import main as cli_main
from pipelines.progress import ProgressFile, read_counts
from tests.synthetic import write_dataset

pytestmark = pytest.mark.slow


def test_tag_command_prints_a_summary_and_passes_beam_options(tmp_path, capsys, tiny_model, registry_root):
    write_dataset(str(tmp_path / "data"), 6)
    (tmp_path / "data" / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "out"
    code = cli_main(["tag", "--input", str(tmp_path / "data" / "images" / "*.jpg"), "--output", str(out),
                     "--registry", registry_root, "--model", "tagger", "--batch-size", "4",
                     "--max-failed-fraction", "0.5", "--direct_num_workers=1"])  # a Beam option, passed through
    assert code == 0
    summary = capsys.readouterr().out
    assert "matched 7  tagged 6  failed 1  skipped 0" in summary
    assert "failures by stage: decode 1" in summary and f"tagger@{tiny_model.version}" in summary
    manifest = glob.glob(str(out / "_manifests" / "*.json"))
    assert len(manifest) == 1 and os.path.basename(manifest[0])[:-5] in summary
    assert len(glob.glob(str(out / f"run_date=*/model_version={tiny_model.version}/*.parquet"))) == 1  # 1 worker


def test_directory_input_gets_a_one_line_hint(tmp_path, capsys, tiny_model, registry_root):
    assert cli_main(["tag", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                     "--registry", registry_root]) == 2
    assert "is a directory; pass a glob" in capsys.readouterr().err


def test_progress_files_sum_across_workers(tmp_path):
    a, b = ProgressFile(str(tmp_path), "tags", interval=0), ProgressFile(str(tmp_path), "tags", interval=0)
    failed = ProgressFile(str(tmp_path), "failed", interval=0)
    a.add(3)
    b.add(2)
    failed.add()
    assert read_counts(str(tmp_path)) == {"tags": 5, "failed": 1}


def test_progress_line_takes_its_total_from_the_matching_step(tmp_path):
    import io
    import time

    from pipelines.progress import MATCHED_KIND, ProgressPrinter

    ProgressFile(str(tmp_path), MATCHED_KIND, interval=0).add(20)
    ProgressFile(str(tmp_path), "tags", interval=0).add(4)
    ProgressFile(str(tmp_path), "failed", interval=0).add(1)
    stream = io.StringIO()
    with ProgressPrinter(str(tmp_path), interval=0.05, stream=stream):
        deadline = time.monotonic() + 10
        while "progress:" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    line = stream.getvalue().splitlines()[0]
    assert line.startswith("progress: 5/20 images done") and ", 1 errors, ETA " in line


@pytest.mark.parametrize("extra, message", [
    # the option types of jobs/common_args.py check these as they are parsed (tests/test_cli_errors.py: all options)
    (["--read-timeout", "nan"], "argument --read-timeout: 'nan' is not a finite number"),
    (["--read-timeout", "inf"], "argument --read-timeout: 'inf' is not a finite number"),
    (["--max-pixels", "0"], "argument --max-pixels: must be at least 1"),
    (["--workers", "-1"], "argument --workers: must be at least 0"),
    (["--onnx-threads", "-3"], "argument --onnx-threads: must be at least 0"),
    (["--output", ""], "--output must name a directory"),
    (["--output", "{file}"], "is a file, not a directory"),
])
def test_bad_limits_and_outputs_are_one_line_errors(tmp_path, capsys, tiny_model, registry_root, extra, message):
    write_dataset(str(tmp_path / "data"), 2)
    (tmp_path / "file").write_text("not a directory")
    extra = [a.replace("{file}", str(tmp_path / "file")) for a in extra]
    code = cli_main(["tag", "--input", str(tmp_path / "data" / "images" / "*.jpg"), "--output",
                     str(tmp_path / "out"), "--registry", registry_root, "--model", "tagger", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and not any("Traceback" in line for line in err)


def test_a_run_where_every_input_failed_exits_3_with_its_output_committed(tmp_path, capsys, tiny_model,
                                                                          registry_root):
    for n in range(3):
        (tmp_path / f"broken{n}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not an image")
    out = tmp_path / "out"
    argv = ["tag", "--input", str(tmp_path / "*.jpg"), "--output", str(out), "--registry", registry_root]
    assert cli_main(argv) == 3
    err = capsys.readouterr().err
    assert "3 of 3 inputs failed" in err and "--max-failed-fraction" in err
    assert len(glob.glob(str(out / "_manifests" / "*.json"))) == 1  # committed: the dead letters are queryable
    assert cli_main([*argv, "--max-failed-fraction", "1"]) == 0


def test_failure_share_counts_inputs_an_incremental_run_skipped_as_done(capsys):
    from types import SimpleNamespace

    from jobs.tag_cmd import _failure_status

    nightly = SimpleNamespace(matched=1000, tagged=20, skipped=976, failed=4)  # the archive's 4 broken files again
    assert _failure_status(nightly, 0.1) == 0
    broken = SimpleNamespace(matched=30, tagged=20, skipped=0, failed=10)
    assert _failure_status(broken, 0.1) == 3 and "10 of 30 inputs failed" in capsys.readouterr().err
    assert _failure_status(broken, 1.0) == 0
