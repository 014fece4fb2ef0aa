"""Acceptance tests of ``tagger stream`` against a real Kafka-protocol broker (tansu), run as a subprocess.

Every test checks the user-visible promise: each input id gets exactly one decision after deduplication by
``dedup_key``, bad inputs land in the dead-letter topic with a reason, Parquet rows are visible exactly once.
"""
from __future__ import annotations

import base64
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from models.registry import Registry
from pipelines.streaming.kafka_config import KafkaConfig
from pipelines.streaming.replay import replay
from tests.kafka_broker import kafka_broker  # noqa: F401  (fixture)
from tests.model_factory import publish_tiny_model
from tests.stream_fixtures import (
    REPO,
    TOPICS,
    decisions,
    read_topic,
    start_stream,
    stream_args,
    streaming,
    visible_tag_rows,
)
from tests.synthetic import CLASSES, write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(240)]


@pytest.fixture
def images(tmp_path) -> list[str]:
    write_dataset(str(tmp_path / "data"), 120)
    return sorted(glob.glob(str(tmp_path / "data" / "images" / "*.jpg")))


def by_dedup(records) -> dict[str, dict]:
    """Decisions keyed by dedup key (what a consumer does with at-least-once delivery)."""
    return {d["dedup_key"]: d for d in decisions(records)}


def test_replay_to_decisions_and_parquet(kafka_broker, tiny_model, registry_root, tmp_path, images):  # noqa: F811
    kafka_broker.create_topics("images", partitions=3)  # one SDF reader per partition
    kafka_broker.create_topics("decisions", "dlq")
    subset = images[:30]
    out = str(tmp_path / "out")
    with streaming(stream_args(kafka_broker.bootstrap, out, registry_root), str(tmp_path / "job.log")) as job:
        env = dict(os.environ, PYTHONPATH=REPO)
        done = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "stream", "replay", "--bootstrap", kafka_broker.bootstrap,
             "--topic", "images", "--input", os.path.join(os.path.dirname(subset[0]), "img_0000*.jpg"),
             "--rate", "50"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "replayed 10 images" in done.stdout
        got = by_dedup(read_topic(kafka_broker.bootstrap, "decisions", 10, 60, job))

    assert sorted(d["id"] for d in got.values()) == [f"img_{i:05d}.jpg" for i in range(10)]
    one = next(iter(got.values()))
    assert (one["model_name"], one["model_version"]) == ("tagger", tiny_model.version)
    assert set(one["probabilities"]) == set(CLASSES)
    assert set(one["tags"]) == {c for c, p in one["probabilities"].items() if p >= 0.5}
    assert one["source_topic"] == "images"
    assert one["dedup_key"] == f"images/{one['source_partition']}/{one['source_offset']}"
    partitions = {d["source_partition"] for d in got.values()}
    assert len(partitions) > 1, "the keys spread over several partitions"
    rows = visible_tag_rows(out)
    for p in partitions:  # every partition's offsets exactly once, from 0 up
        offsets = sorted(r["source_offset"] for r in rows if r["source_partition"] == p)
        assert offsets == list(range(len(offsets)))
    assert len(rows) == 10
    assert {r["message_id"] for r in rows} == {d["id"] for d in got.values()}


def test_malformed_messages_go_to_the_dlq_with_reasons(kafka_broker, tiny_model, registry_root, tmp_path,  # noqa: F811
                                                      images):
    from kafka import KafkaProducer

    kafka_broker.create_topics(*TOPICS)
    allowed_dir, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed_dir.mkdir()
    outside.mkdir()
    good = open(images[0], "rb").read()
    (allowed_dir / "by-uri.jpg").write_bytes(good)
    (outside / "secret.jpg").write_bytes(good)
    jpeg = [(b"content-type", b"image/jpeg")]

    def hdr(pairs):
        return [(k.decode(), v) for k, v in pairs]

    messages = [
        ("good-inline", good, hdr(jpeg + [(b"id", b"good-inline")])),
        ("not-json", b"this is { not json", []),
        ("missing-image", json.dumps({"id": "missing-image"}).encode(), []),
        ("corrupt", good[: len(good) // 3], hdr(jpeg + [(b"id", b"corrupt")])),
        ("outside", json.dumps({"id": "outside", "uri": str(outside / "secret.jpg")}).encode(), []),
        ("oversized", b"\xff" * 300_000, hdr(jpeg + [(b"id", b"oversized")])),
        ("good-uri", json.dumps({"id": "good-uri", "uri": str(allowed_dir / "by-uri.jpg")}).encode(), []),
        ("good-b64", json.dumps({"id": "good-b64", "image_base64": base64.b64encode(good).decode()}).encode(), []),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for key, value, headers in messages:
        producer.send("images", key=key.encode(), value=value, headers=headers)
    producer.flush()
    producer.close()

    out = str(tmp_path / "out")
    args = stream_args(kafka_broker.bootstrap, out, registry_root, "moderation",
                       "--allow-prefix", str(allowed_dir), "--max-message-bytes", "200000")
    with streaming(args, str(tmp_path / "job.log")) as job:
        dead = [json.loads(r.value) for r in read_topic(kafka_broker.bootstrap, "dlq", 5, 60, job)]
        got = by_dedup(read_topic(kafka_broker.bootstrap, "decisions", 3, 30, job))

    assert sorted(d["id"] for d in got.values()) == ["good-b64", "good-inline", "good-uri"]
    reasons = {base64.b64decode(d["key_base64"]).decode(): (d["stage"], d["reason"]) for d in dead}
    assert reasons == {
        "not-json": ("parse", "not_json"),
        "missing-image": ("parse", "missing_image"),
        "corrupt": ("decode", "corrupt"),
        "outside": ("read", "uri_not_allowed"),
        "oversized": ("parse", "oversized"),
    }
    corrupt = next(d for d in dead if d["reason"] == "corrupt")
    assert corrupt["id"] == "corrupt" and corrupt["payload"]["size"] == len(good) // 3
    assert ["content-type", base64.b64encode(b"image/jpeg").decode()] in corrupt["headers"]
    # Every record is accounted for in the Parquet output too: 3 tag rows, 5 dead-letter rows.
    manifests = [json.load(open(p)) for p in glob.glob(os.path.join(out, "_manifests", "*.json"))]
    assert sum(m["matched"] for m in manifests) == 8
    assert sum(m["tagged"] for m in manifests) == 3 and sum(m["failed"] for m in manifests) == 5


def _replay_in_background(bootstrap: str, paths: list[str], rate: float) -> threading.Thread:
    errors: list[BaseException] = []

    def run():
        try:
            replay(KafkaConfig(bootstrap), "images", paths, rate=rate)
        except BaseException as exc:  # surfaced by the test through thread.errors
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def _wait_for(bootstrap: str, count: int, timeout_s: float, job=None) -> dict[str, dict]:
    return by_dedup(read_topic(bootstrap, "decisions", count, timeout_s, job))


def test_job_crash_and_broker_stall_lose_nothing_and_parquet_stays_exactly_once(  # noqa: F811
        kafka_broker, tiny_model, registry_root, tmp_path, images):
    kafka_broker.create_topics(*TOPICS)
    out = str(tmp_path / "out")
    args = stream_args(kafka_broker.bootstrap, out, registry_root)
    feeder = _replay_in_background(kafka_broker.bootstrap, images, rate=8)  # 120 images over ~15 s

    job = start_stream(args, str(tmp_path / "job1.log"))
    try:
        assert len(_wait_for(kafka_broker.bootstrap, 20, 60, job)) >= 20
        job.kill()  # SIGKILL mid-stream: no flush, no commit
        job = start_stream(args, str(tmp_path / "job2.log"))
        assert len(_wait_for(kafka_broker.bootstrap, 50, 60, job)) >= 50
        # job1 may have produced 50 decisions from its backlog before the kill, so wait for job2's own line
        deadline, resumed = time.monotonic() + 60, None
        while resumed is None and time.monotonic() < deadline:
            resumed = re.search(r"reading images/0 from offset (\d+)", job.log())
            time.sleep(0.2)
        assert resumed and int(resumed.group(1)) >= 10, "the restart resumes from the committed offset, not 0"
        kafka_broker.pause()  # the broker stalls mid-stream for 10 s
        time.sleep(10)
        kafka_broker.resume()
        feeder.join(timeout=90)
        assert not feeder.is_alive() and not feeder.errors
        records = read_topic(kafka_broker.bootstrap, "decisions", 120, 90, job)
        # Give late duplicates a moment, then read everything once more.
        records = read_topic(kafka_broker.bootstrap, "decisions", len(records) + 1, 3, job)
    finally:
        job.stop()

    got = by_dedup(records)
    ids = sorted(d["id"] for d in got.values())
    assert ids == sorted(os.path.basename(p) for p in images), "every input exactly once after dedup"
    assert len(records) >= 120  # at-least-once: duplicates allowed in the topic, none missing
    rows = visible_tag_rows(out)
    assert sorted(r["source_offset"] for r in rows) == list(range(120)), "Parquet rows visible exactly once"


def test_promotion_mid_stream_switches_version_without_restart(  # noqa: F811
        kafka_broker, tiny_model, registry_root, tmp_path, images):
    kafka_broker.create_topics(*TOPICS)
    v2 = publish_tiny_model(registry_root, CLASSES, seed=1, threshold=0.4, promote=False)
    out = str(tmp_path / "out")
    feeder = _replay_in_background(kafka_broker.bootstrap, images[:80], rate=8)  # ~10 s of traffic
    with streaming(stream_args(kafka_broker.bootstrap, out, registry_root), str(tmp_path / "job.log")) as job:
        assert len(_wait_for(kafka_broker.bootstrap, 15, 60, job)) >= 15
        promoted_at = time.time()
        Registry(registry_root).promote("tagger", v2.version, reason="test: new model mid-stream")
        feeder.join(timeout=60)
        got = _wait_for(kafka_broker.bootstrap, 80, 60, job)
        assert job.process.poll() is None  # the same process all along: no restart

    assert sorted(d["id"] for d in got.values()) == sorted(os.path.basename(p) for p in images[:80])
    ordered = sorted(got.values(), key=lambda d: d["source_offset"])
    versions = [d["model_version"] for d in ordered]
    assert versions[0] == tiny_model.version and versions[-1] == v2.version
    switch = versions.index(v2.version)
    assert set(versions[switch:]) == {v2.version}, "once switched, later records never go back"
    first_v2 = min(d["decided_at"] for d in ordered if d["model_version"] == v2.version)
    from datetime import datetime

    lag = datetime.fromisoformat(first_v2).timestamp() - promoted_at
    assert lag < 30, f"switched {lag:.1f}s after the promotion"
    # v2's own thresholds (0.4) apply to its decisions.
    for d in ordered[switch:]:
        assert set(d["tags"]) == {c for c, p in d["probabilities"].items() if p >= 0.4}
