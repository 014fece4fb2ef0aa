"""`tagger tag` end to end on the in-process FnApiRunner, real onnxruntime, Parquet read back with DuckDB."""
from __future__ import annotations

import glob
import hashlib
import json
import os

import duckdb
import pytest

from pipelines.batch import TagJob, run_tag_job
from pipelines.catalog import connect, tagged_hashes
from schemas.tagging import RunManifest
from tests.batch_fixtures import N_GOOD, History, history  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow
N_BAD = 8  # tests/bad_inputs.py
N_MISSING = 1  # listed in the manifest, not on disk


def _raw(h: History, pattern: str) -> str:
    return os.path.join(h.output, pattern)


def test_every_input_is_tagged_or_dead_lettered_exactly_once(history: History):
    m = history.runs["run1"].manifest
    assert m.matched == N_GOOD + N_BAD + N_MISSING  # the manifest overlaps the glob: counted once
    assert m.matched == m.tagged + m.failed and m.skipped == 0
    con = connect(history.output)
    tagged = {r[0] for r in con.execute("SELECT image_uri FROM tags WHERE run_id = ?", [m.run_id]).fetchall()}
    failed = con.execute("SELECT image_uri, stage, error_class, message FROM errors WHERE run_id = ?",
                         [m.run_id]).fetchall()
    failed_uris = [r[0] for r in failed]
    assert len(tagged) == m.tagged and len(failed_uris) == m.failed == len(set(failed_uris))
    assert not tagged & set(failed_uris)
    by_name = {os.path.basename(u): (stage, cls, msg) for u, stage, cls, msg in failed}
    for name, expected in history.bad_expected.items():
        if expected is None:  # may decode to garbage or fail; either way accounted exactly once
            assert (name in by_name) != (os.path.join(history.images, name) in tagged)
            continue
        assert by_name[name][:2] == expected, name
        assert by_name[name][2] and "\n" not in by_name[name][2]
    assert by_name["does_not_exist.jpg"][0] == "read"
    assert m.failures_by_stage.get("read") == 1


def test_output_schema_and_partitions(history: History):
    m = history.runs["run1"].manifest
    columns = {r[0]: r[1] for r in duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{_raw(history, 'run_date=*/model_version=*/*.parquet')}', "
        f"hive_partitioning=true)").fetchall()}
    assert {"image_uri", "content_sha256", "width", "height", "tags", "probabilities", "model_name",
            "model_version", "run_id", "tagged_at", "run_date"} <= set(columns)
    assert columns["probabilities"] == "MAP(VARCHAR, FLOAT)" and columns["tags"] == "VARCHAR[]"
    assert all(f.startswith(f"run_date={m.run_date}/model_version=v1/part-{m.run_id}") for f in m.tag_files)
    con = connect(history.output)
    width, height, probs, tags, sha, name = con.execute(
        "SELECT width, height, probabilities, tags, content_sha256, model_name FROM tags "
        "WHERE run_id = ? AND image_uri LIKE '%img_00000.jpg'", [m.run_id]).fetchone()
    assert (width, height, name) == (96, 96, "tagger")
    with open(os.path.join(history.images, "img_00000.jpg"), "rb") as fh:
        assert sha == hashlib.sha256(fh.read()).hexdigest()
    assert set(probs) == {"circle", "square", "triangle", "red", "green", "blue"}
    assert set(tags) == {c for c, p in probs.items() if p >= 0.5}  # card thresholds applied


def test_incremental_skips_what_this_version_tagged_and_new_version_retags(history: History):
    r1, r2, r3, r4 = (history.runs[k].manifest for k in ("run1", "run2", "run3", "run4"))
    assert (r2.tagged, r2.skipped, r2.failed) == (0, r1.tagged, r1.failed)  # bad inputs are retried
    assert (r3.tagged, r3.skipped) == (3, r1.tagged)
    assert r4.model_version == "v2" and r4.skipped == 0 and r4.tagged == r1.tagged + 3
    # No duplicate rows on disk for a model version across the incremental runs.
    dupes = duckdb.sql(
        f"SELECT model_version, content_sha256, count(*) FROM read_parquet("
        f"'{_raw(history, 'run_date=*/model_version=*/*.parquet')}') "
        f"WHERE run_id IN ('{r1.run_id}', '{r2.run_id}', '{r3.run_id}', '{r4.run_id}') "
        f"GROUP BY ALL HAVING count(*) > 1").fetchall()
    assert dupes == []


def test_same_night_rerun_without_incremental_never_duplicates_what_readers_see(history: History):
    r4, r5 = history.runs["run4"].manifest, history.runs["run5"].manifest
    assert r5.tagged == r4.tagged  # written again on disk...
    con = connect(history.output)
    per_day = con.execute("SELECT model_version, run_date, count(*), count(DISTINCT image_uri) FROM tags "
                          "GROUP BY ALL").fetchall()
    assert all(rows == distinct for _, _, rows, distinct in per_day)  # ...but seen once per night
    assert con.execute("SELECT model_version, count(DISTINCT image_uri) FROM tags GROUP BY 1 ORDER BY 1"
                       ).fetchall() == [("v1", r4.tagged), ("v2", r4.tagged)]


def test_a_run_without_manifest_is_invisible_to_readers_and_incremental(history: History, tmp_path, monkeypatch):
    from models import storage
    import pipelines.sinks as sinks

    output = str(tmp_path / "out")
    real_write = storage.write_bytes_atomic

    def crash_on_manifest(path, data):
        if "/_manifests/" in path:
            raise OSError("simulated crash before the manifest")
        return real_write(path, data)

    monkeypatch.setattr(sinks.storage, "write_bytes_atomic", crash_on_manifest)
    with pytest.raises(Exception, match="simulated crash"):
        run_tag_job(TagJob(inputs=[os.path.join(history.images, "img_*.jpg")], output=output,
                           registry_root=history.registry))
    monkeypatch.undo()
    assert glob.glob(os.path.join(output, "run_date=*/model_version=*/*.parquet"))  # files did land...
    assert connect(output).execute("SELECT count(*) FROM tags").fetchone() == (0,)  # ...but nobody sees them
    assert tagged_hashes(output, "tagger", "v2") == frozenset()
    again = run_tag_job(TagJob(inputs=[os.path.join(history.images, "img_*.jpg")], output=output,
                               registry_root=history.registry, incremental=True))
    assert again.manifest.tagged == N_GOOD and again.manifest.skipped == 0
    assert connect(output).execute("SELECT count(*) FROM tags").fetchone() == (N_GOOD,)


def test_manifest_is_complete_and_counts_tags(history: History):
    result = history.runs["run1"]
    m = result.manifest
    on_disk = RunManifest.from_json(open(os.path.join(history.output, "_manifests", f"{m.run_id}.json")).read())
    assert on_disk == m and m.runner == "FnApiRunner" and m.started_at <= m.finished_at
    assert all(os.path.exists(os.path.join(history.output, f)) for f in m.tag_files + m.error_files)
    assert not os.path.exists(os.path.join(history.output, "_staging"))
    assert result.metrics["tagger:images_tagged"] == m.tagged
    con = connect(history.output)
    per_tag = dict(con.execute("SELECT tag, count(*) FROM (SELECT unnest(tags) AS tag FROM tags WHERE run_id = ?) "
                               "GROUP BY tag", [m.run_id]).fetchall())
    assert m.tag_counts == per_tag and per_tag
    assert json.loads(m.to_json())["failed"] == m.failed
