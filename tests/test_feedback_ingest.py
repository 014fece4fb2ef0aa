"""`tagger feedback ingest` from files: every invalid-row reason, lineage, idempotence, crashes, the lock."""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedback_ingest.dataset import FeedbackDataset
from jobs.cli import main
from schemas import tagging
from schemas.feedback import RECORD_FIELDS
from schemas.feedback_suite import REASONS
from tests.feedback_fixtures import correction
from tests.synthetic import encode, make_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def env(tmp_path, tiny_model, registry_root):
    """A registry with tagger@v1 (synthetic classes), two images on disk, an empty feedback dataset."""
    import random

    images = []
    for i in range(2):
        path = tmp_path / "images" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode(make_sample(random.Random(i)).image))
        images.append(str(path))
    return {"registry": registry_root, "images": images, "dataset": str(tmp_path / "feedback"), "tmp": tmp_path}


def write_csv(path, records: list[dict]) -> str:
    columns = sorted({k for r in records for k in r})
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
    return str(path)


def write_jsonl(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_ingest(env, *inputs: str, extra: tuple[str, ...] = (), data_docs: bool = False) -> int:
    return main(["feedback", "ingest", "--input", *inputs, "--dataset", env["dataset"],
                 "--registry", env["registry"], *([] if data_docs else ["--no-data-docs"]), *extra])


def rows(env, kind: str) -> list[dict]:
    return FeedbackDataset(env["dataset"]).read(kind).to_pylist()


def test_each_invalid_row_reason_is_quarantined_with_its_failing_expectation(env, capsys):
    img0, img1 = env["images"]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).isoformat()
    ok = "2026-01-01T12:00:00Z"
    cases = [  # (record, expected reasons)
        (correction(img0, "circle", "present", ok), []),
        (correction(img0, "hexagon", "present", ok, new_class="true"), []),  # new class, flagged
        (correction(None, "circle", "present", ok), ["missing_image_ref"]),
        (correction(img0, None, "present", ok), ["missing_tag"]),
        (correction(img0, "red", None, ok), ["missing_verdict"]),
        (correction(img0, "red", "present", ok, annotator=""), ["missing_annotator"]),
        (correction(img0, "red", "present", ok, source=None), ["missing_source"]),
        (correction(img0, "red", "present", None), ["missing_reviewed_at"]),
        (correction(img0, "red", "present", ok, model_version=None), ["missing_model_version"]),
        (correction(img0, "red", "maybe", ok), ["invalid_verdict"]),
        (correction(None, "red", "present", ok, image_sha256="xyz"), ["invalid_image_sha256", "image_unresolvable"]),
        (correction(img0, "red", "present", "last tuesday"), ["invalid_reviewed_at"]),
        (correction(img0, "red", "present", future), ["reviewed_at_in_future"]),
        (correction(img0, "red", "present", ok, new_class="perhaps"), ["invalid_new_class_flag"]),
        (correction(img0, "red", "present", ok, model_version="v9"), ["unknown_model"]),
        (correction(img0, "hexagon", "present", ok), ["tag_not_in_class_set"]),
        (correction(str(env["tmp"] / "missing.jpg"), "red", "present", ok), ["image_unresolvable"]),
        (correction(img1, "blue", "present", "2026-01-02T00:00:00Z"), ["contradictory_duplicate"]),
        (correction(img1, "blue", "absent", "2026-01-02T00:00:00+00:00"), ["contradictory_duplicate"]),
    ]
    csv_path = write_csv(env["tmp"] / "batch.csv", [r for r, _ in cases])
    jsonl_path = write_jsonl(env["tmp"] / "bad.jsonl", ["{not json", "[1, 2]"])
    assert run_ingest(env, csv_path, jsonl_path) == 0

    quarantined = {(q["source_uri"], q["source_row"]): q for q in rows(env, "quarantine")}
    accepted_rows = {a["source_row"] for a in rows(env, "accepted")}
    for row_number, (_record, expected) in enumerate(cases, start=1):
        if expected:
            got = quarantined[(csv_path, row_number)]
            assert sorted(got["reasons"]) == sorted(expected), f"row {row_number}: {got['reasons']}"
            assert len(got["failed_expectations"]) == len(expected)
        else:
            assert row_number in accepted_rows
    for row_number in (1, 2):
        assert quarantined[(jsonl_path, row_number)]["reasons"] == ["unparseable_record"]
    covered = {r for _, e in cases for r in e} | {"unparseable_record"}
    assert covered == set(REASONS), f"untested reasons: {set(REASONS) - covered}"

    out = capsys.readouterr().out
    assert f"read {len(cases) + 2}, accepted 2, quarantined {len(cases)}, already ingested 0" in out
    assert "quarantined for contradictory_duplicate: 2" in out


def test_csv_jsonl_parquet_inputs_land_with_lineage_and_read_back_with_duckdb(env):
    img0, img1 = env["images"]
    records = [correction(img0, "circle", "present", "2026-01-01T00:00:00Z"),
               correction(img1, "red", "absent", "2026-01-01T00:00:00Z", comment="not red, orange")]
    csv_path = write_csv(env["tmp"] / "a.csv", records[:1])
    jsonl_path = write_jsonl(env["tmp"] / "b.jsonl", [json.dumps(records[1])])
    parquet_path = str(env["tmp"] / "c.parquet")
    third = correction(img1, "square", "present", "2026-01-03T00:00:00Z", model_version="tagger@v1")
    pq.write_table(pa.Table.from_pylist([third]), parquet_path)
    assert run_ingest(env, csv_path, jsonl_path, parquet_path, data_docs=True) == 0

    dataset = FeedbackDataset(env["dataset"])
    (manifest,) = dataset.manifests()
    got = duckdb.sql(
        "SELECT tag, verdict, source_uri, source_row, ingest_run_id, ingest_date::VARCHAR, comment, reviewed_at "
        "FROM read_parquet($files, hive_partitioning=true) ORDER BY tag",
        params={"files": dataset.committed_files("accepted")},
    ).fetchall()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert [g[:6] for g in got] == [
        ("circle", "present", csv_path, 1, manifest["run_id"], today),
        ("red", "absent", jsonl_path, 1, manifest["run_id"], today),
        ("square", "present", parquet_path, 1, manifest["run_id"], today),
    ]
    assert got[1][6] == "not red, orange"
    assert got[2][7] == dt.datetime(2026, 1, 3, tzinfo=dt.timezone.utc)
    run_dir = os.path.join(env["dataset"], "_runs", manifest["run_id"])
    with open(os.path.join(run_dir, "validation.json")) as fh:
        assert json.load(fh)["success"] is True
    pages = [f for _, _, fs in os.walk(os.path.join(run_dir, "data_docs")) for f in fs]
    assert pages == ["index.html"]  # one self-contained page (tests/test_pages_browser.py renders it)
    with open(os.path.join(run_dir, "data_docs", "index.html")) as fh:
        assert REASONS["tag_not_in_class_set"] in fh.read()


def test_reingesting_the_same_or_a_copied_file_adds_nothing_and_a_fixed_row_is_added(env, capsys):
    img0, _ = env["images"]
    records = [correction(img0, "circle", "present", "2026-01-01T00:00:00Z"),
               correction(img0, "hexagon", "present", "2026-01-01T00:00:00Z")]
    path = write_csv(env["tmp"] / "batch.csv", records)
    assert run_ingest(env, path) == 0
    copy = str(shutil.copy(path, env["tmp"] / "copy.csv"))
    assert run_ingest(env, path) == 0
    assert run_ingest(env, copy) == 0
    assert len(rows(env, "accepted")) == 1 and len(rows(env, "quarantine")) == 1
    summaries = [line for line in capsys.readouterr().out.splitlines() if line.startswith("feedback ingest")]
    assert [s.split(": ", 1)[1] for s in summaries] == [
        "read 2, accepted 1, quarantined 1, already ingested 0",
        "read 2, accepted 0, quarantined 0, already ingested 2",
        "read 2, accepted 0, quarantined 0, already ingested 2",
    ]

    records[1]["new_class"] = "true"  # the reviewer fixes the quarantined row and resubmits the file
    assert run_ingest(env, write_csv(env["tmp"] / "fixed.csv", records)) == 0
    assert sorted(r["tag"] for r in rows(env, "accepted")) == ["circle", "hexagon"]
    assert len(FeedbackDataset(env["dataset"]).manifests()) == 4


def _cli_subprocess(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    environ.pop("TAGGER_FAULT_POINT", None)
    if fault:
        environ["TAGGER_FAULT_POINT"] = fault
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_crash_after_appending_but_before_the_manifest_leaves_nothing_visible_and_the_retry_adds_once(env):
    img0, img1 = env["images"]
    path = write_csv(env["tmp"] / "batch.csv", [correction(img0, "circle", "present", "2026-01-01T00:00:00Z"),
                                                correction(img1, "red", "absent", "2026-01-01T00:00:00Z"),
                                                correction(img1, "hexagon", "absent", "2026-01-01T00:00:00Z")])
    args = ["feedback", "ingest", "--input", path, "--dataset", env["dataset"], "--registry", env["registry"],
            "--no-data-docs"]
    crashed = _cli_subprocess(args, fault="after_append")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    orphans = [os.path.join(d, f) for d, _, fs in os.walk(env["dataset"]) for f in fs if f.endswith(".parquet")]
    assert len(orphans) == 2  # the parts were written...
    assert rows(env, "accepted") == [] and FeedbackDataset(env["dataset"]).manifests() == []  # ...but invisible

    retry = _cli_subprocess(args)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert "read 3, accepted 2, quarantined 1, already ingested 0" in retry.stdout
    assert not any(os.path.exists(p) for p in orphans)  # leftovers of the crashed run were removed
    assert len(rows(env, "accepted")) == 2 and len(rows(env, "quarantine")) == 1


def test_uncommitted_tagging_runs_do_not_make_images_resolvable(env, capsys):
    """Images count as known when a committed tagging run has them, even if the file is gone from disk."""
    tagged = env["tmp"] / "tagged"
    now = dt.datetime.now(dt.timezone.utc)

    def tag_run(run_id: str, uri: str, sha: str, commit: bool) -> None:
        part = tagged / tagging.tags_partition("2026-01-01", "v1") / f"part-{run_id}-0.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{
            "image_uri": uri, "content_sha256": sha, "width": 8, "height": 8, "format": "JPEG", "tags": [],
            "probabilities": [("red", 0.1)], "model_name": "tagger", "model_version": "v1", "run_id": run_id,
            "tagged_at": now}], schema=tagging.TAGS_SCHEMA), part)
        if commit:
            (tagged / "_manifests").mkdir(exist_ok=True)
            (tagged / "_manifests" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id}))

    tag_run("r1", "gs://archive/a.jpg", "a" * 64, commit=True)
    tag_run("r2", "gs://archive/b.jpg", "b" * 64, commit=False)
    records = [correction("gs://archive/a.jpg", "red", "present", "2026-01-01T00:00:00Z"),
               correction(None, "red", "present", "2026-01-01T00:00:00Z", image_sha256="A" * 64),
               correction("gs://archive/b.jpg", "red", "present", "2026-01-01T00:00:00Z"),
               correction(None, "red", "present", "2026-01-01T00:00:00Z", image_sha256="b" * 64)]
    assert run_ingest(env, write_csv(env["tmp"] / "x.csv", records), extra=("--tagged", str(tagged))) == 0
    assert sorted(r["source_row"] for r in rows(env, "accepted")) == [1, 2]
    assert sorted((r["source_row"], tuple(r["reasons"])) for r in rows(env, "quarantine")) == [
        (3, ("image_unresolvable",)), (4, ("image_unresolvable",))]


def test_bad_invocations_fail_with_one_line_errors(env, capsys):
    assert run_ingest(env, str(env["tmp"] / "missing.csv")) == 2
    assert run_ingest(env, str(env["tmp"] / "notes.txt")) == 2
    with FeedbackDataset(env["dataset"]).lock():  # another run is ingesting into the same dataset
        path = write_csv(env["tmp"] / "b.csv", [correction(env["images"][0], "red", "present", "2026-01-01")])
        assert run_ingest(env, path) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("tagger feedback ingest: error: ") for e in errors)
    assert "no such input file" in errors[0] and "unknown input format" in errors[1] and "locked" in errors[2]
    assert rows(env, "accepted") == []


def test_quarantine_keeps_every_field_as_read(env):
    record = correction(env["images"][0], "red", "maybe", "2026-01-01T00:00:00Z", comment="x,y")
    run_ingest(env, write_csv(env["tmp"] / "q.csv", [record]))
    (q,) = rows(env, "quarantine")
    assert {k: q[k] for k in RECORD_FIELDS if record.get(k)} == {k: v for k, v in record.items() if v}
    assert json.loads(q["raw"])["comment"] == "x,y"


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads_like_any_other(env):
    path = write_csv(env["tmp"] / "excel.csv", [correction(env["images"][0], "red", "present", "2026-01-01")])
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + data)
    assert run_ingest(env, path) == 0
    assert [r["image_uri"] for r in rows(env, "accepted")] == [env["images"][0]]


def test_status_counts_runs_rows_reasons_and_new_rows_since_a_time(env, capsys):
    img0, _ = env["images"]
    before = dt.datetime.now(dt.timezone.utc).isoformat()
    run_ingest(env, write_csv(env["tmp"] / "a.csv", [correction(img0, "red", "present", "2026-01-01"),
                                                     correction(img0, "red", "maybe", "2026-01-01")]))
    capsys.readouterr()
    assert main(["feedback", "status", "--dataset", env["dataset"], "--since", before]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["runs"], got["accepted"], got["quarantined"]) == (1, 1, 1)
    assert got["quarantined_by_reason"] == {"invalid_verdict": 1} and got["accepted_since"] == 1
    assert main(["feedback", "status", "--dataset", env["dataset"], "--since", "2999-01-01T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted_since"] == 0
