"""Honest views: an output path with glob characters, two models sharing a version string, and aliases of one
file in a manifest, through real runs read back with the DuckDB views and --incremental."""
from __future__ import annotations

import os

import pytest

from pipelines.batch import TagJob, run_tag_job
from pipelines.catalog import connect, run_query
from tests.hostile_corpus import good_image
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

pytestmark = pytest.mark.slow


def test_two_models_sharing_a_version_under_a_glob_like_output_keep_their_rows_and_incremental(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(5):
        (images / f"{i}.jpg").write_bytes(good_image(40 + i))
    manifest = tmp_path / "tonight.txt"
    manifest.write_text(f"images/0.jpg\n./images/0.jpg\nimages/sub/../0.jpg\nfile://{images}/0.jpg\n")
    registry, output = str(tmp_path / "registry"), str(tmp_path / "out[2024]")
    os.makedirs(tmp_path / "out2")  # what the unescaped glob out[2024] would have matched instead
    adv = publish_tiny_model(registry, CLASSES, name="adv", seed=1)
    other = publish_tiny_model(registry, CLASSES, name="other", seed=2)
    assert adv.version == other.version == "v1"

    def run(model: str, incremental: bool = False):
        return run_tag_job(TagJob(inputs=[str(images / "*.jpg"), str(manifest)], output=output,
                                  registry_root=registry, model_ref=f"{model}@v1", incremental=incremental,
                                  progress_interval=0.5)).manifest

    first_adv, first_other = run("adv"), run("other")
    assert first_adv.matched == first_other.matched == 5  # four spellings of 0.jpg are one input
    con = connect(output)
    assert con.execute("SELECT model_name, count(*), count(DISTINCT image_uri) FROM tags GROUP BY 1 ORDER BY 1"
                       ).fetchall() == [("adv", 5, 5), ("other", 5, 5)]
    # compare_versions keyed on model name and version: adv@v1 vs other@v1 compares the two models, not v1
    # with itself (the version-only query pooled both models' rows on each side).
    params = {"model_a": "adv", "version_a": "v1", "model_b": "other", "version_b": "v1"}
    _, diff = run_query(con, "compare_versions", params)
    rows = con.execute("SELECT model_name, content_sha256, tags FROM tags").fetchall()
    by_model = {m: {sha: set(t) for n, sha, t in rows if n == m} for m in ("adv", "other")}
    expected = {tag: (sum(tag in t for t in by_model["adv"].values()),
                      sum(tag in t for t in by_model["other"].values()))
                for tags in (*by_model["adv"].values(), *by_model["other"].values()) for tag in tags}
    assert {tag: (a, b) for tag, a, b, _, _ in diff} == expected
    assert any(changed for *_, changed in diff)  # the two models really disagree: nothing pooled
    # A hand-edited (truncated) run manifest or a junk .parquet hides no committed run from the views or
    # --incremental, and breaks neither.
    (tmp_path / "out[2024]" / "_manifests" / "20260101T000000Z-handedit.json").write_text('{"run_id": "2026')
    (tmp_path / "out[2024]" / "run_date=2026-01-01" / "model_version=v1").mkdir(parents=True)
    (tmp_path / "out[2024]" / "run_date=2026-01-01" / "model_version=v1" / "junk.parquet").write_text("junk")
    assert connect(output).execute("SELECT count(*) FROM tags").fetchall() == [(10,)]
    again_adv, again_other = run("adv", incremental=True), run("other", incremental=True)
    assert (again_adv.skipped, again_adv.tagged) == (5, 0) and (again_other.skipped, again_other.tagged) == (5, 0)
