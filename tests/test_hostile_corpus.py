"""A hostile archive, built from generators of every class of input (tests/hostile_corpus.py), tagged by the
real `tagger tag` process: every input accounted for exactly once, the run finishing, memory in budget."""
from __future__ import annotations

import glob
import json
import os
import sys

import pytest

from pipelines.catalog import connect
from tests.hostile_corpus import build_hostile_corpus
from tests.model_factory import publish_tiny_model
from tests.process_memory import run_measured
from tests.synthetic import CLASSES

pytestmark = pytest.mark.slow
MEMORY_BUDGET_MB = 1536  # docs/batch.md: peak RSS of a local run at default settings, whatever the inputs
TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")


def run_tagger(args: list[str], timeout: float = 600) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, peak RSS in MB of the tagger process)."""
    try:
        return run_measured([TAGGER, "tag", *args], timeout)
    except TimeoutError:
        pytest.fail("tagger tag did not finish: an input hung the run")


def test_every_hostile_input_is_accounted_for_once_and_memory_stays_in_budget(tmp_path):
    corpus = build_hostile_corpus(str(tmp_path / "corpus"))
    registry, output = str(tmp_path / "registry"), str(tmp_path / "out")
    publish_tiny_model(registry, CLASSES)
    # A corpus of mostly hostile files: the failure share is the point, not an alert (exit 3 otherwise).
    args = ["--output", output, "--registry", registry, "--model", "tagger", "--max-failed-fraction", "1"]
    for pattern in corpus.patterns:
        args += ["--input", pattern]
    try:
        code, out, err, peak_mb = run_tagger(args)
    finally:
        corpus.close()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    (manifest_path,) = glob.glob(os.path.join(output, "_manifests", "*.json"))
    m = json.load(open(manifest_path))
    expected = corpus.expected
    assert m["matched"] == len(expected) == m["tagged"] + m["failed"] + m["skipped"]

    con = connect(output)
    tagged = [r[0] for r in con.execute("SELECT image_uri FROM tags").fetchall()]
    failed = con.execute("SELECT image_uri, stage, error_class, message FROM errors").fetchall()
    failed_uris = [r[0] for r in failed]
    assert len(tagged) == len(set(tagged)) == m["tagged"] and len(failed_uris) == len(set(failed_uris))
    assert not set(tagged) & set(failed_uris)
    assert set(tagged) | set(failed_uris) == set(expected)  # nothing lost, nothing counted that was not named
    by_uri = {u: (stage, reason) for u, stage, reason, _ in failed}
    got = {u: "tagged" if u in tagged else by_uri[u] for u in expected}
    wrong = {u: (want, got[u]) for u, want in expected.items()
             if want is not None and got[u] not in (want if isinstance(want, frozenset) else {want})}
    assert not wrong
    assert all(msg and "\n" not in msg for *_, msg in failed)
    assert peak_mb < MEMORY_BUDGET_MB, f"peak RSS {peak_mb:.0f} MB"
    print(f"hostile corpus: {len(expected)} inputs, peak RSS {peak_mb:.0f} MB")


def test_orphaned_staging_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    """A run SIGKILLed mid-way leaves _staging/<run_id>/; the next run into the same output removes it, and
    leaves alone the staging of a run that is still alive (its lock is held)."""
    import fcntl

    corpus_dir = tmp_path / "images"
    corpus_dir.mkdir()
    from tests.hostile_corpus import good_image

    for i in range(4):
        (corpus_dir / f"{i}.jpg").write_bytes(good_image(i))
    registry, output = str(tmp_path / "registry"), tmp_path / "out"
    publish_tiny_model(registry, CLASSES)
    killed = output / "_staging" / "20260101T000000Z-deadbeef"
    killed.mkdir(parents=True)
    (killed / "tags-0.parquet").write_bytes(b"half written")
    (output / "_staging" / "20260101T000000Z-deadbeef.lock").write_text("")  # its holder died
    live = output / "_staging" / "20260101T000001Z-1171ea11"
    live.mkdir()
    live_lock = os.open(str(output / "_staging" / "20260101T000001Z-1171ea11.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(live_lock, fcntl.LOCK_EX)  # a run still in progress in another process
    try:
        code, out, err, _ = run_tagger(["--input", str(corpus_dir / "*.jpg"), "--output", str(output),
                                        "--registry", registry, "--model", "tagger"])
    finally:
        os.close(live_lock)
    assert code == 0, err[-2000:]
    assert "removed the staging files of 1 interrupted run(s): 20260101T000000Z-deadbeef" in out
    assert not killed.exists() and live.exists()
    assert sorted(os.listdir(output / "_staging")) == ["20260101T000001Z-1171ea11",
                                                       "20260101T000001Z-1171ea11.lock"]
