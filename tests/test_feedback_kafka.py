"""`tagger feedback ingest --bootstrap ... --topic ... --group ...` against a real Kafka-protocol broker (tansu)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from feedback_ingest.dataset import FeedbackDataset
from jobs.cli import main
from tests.feedback_fixtures import correction
from tests.kafka_broker import kafka_broker  # noqa: F401  (fixture)
from tests.synthetic import encode, make_sample

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC, GROUP = "corrections", "feedback-ingest"


@pytest.fixture
def setup(tmp_path, tiny_model, registry_root, kafka_broker):  # noqa: F811
    from kafka import KafkaProducer

    image = tmp_path / "img.jpg"
    image.write_bytes(encode(make_sample(random.Random(0)).image))
    kafka_broker.create_topics(TOPIC, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    messages = [json.dumps(correction(str(image), tag, "present", "2026-01-01T00:00:00Z")).encode()
                for tag in ("circle", "red", "square")]
    messages += [b"{truncated", json.dumps(correction(str(image), "blue", "perhaps", "2026-01-01T00:00:00Z")).encode()]
    for i, value in enumerate(messages):
        producer.send(TOPIC, value=value, partition=i % 2)
    producer.flush()
    producer.close()
    args = ["feedback", "ingest", "--bootstrap", kafka_broker.bootstrap, "--topic", TOPIC, "--group", GROUP,
            "--dataset", str(tmp_path / "feedback"), "--registry", registry_root, "--idle-seconds", "2",
            "--no-data-docs"]
    return {"args": args, "dataset": FeedbackDataset(str(tmp_path / "feedback")), "broker": kafka_broker}


def committed_offsets(bootstrap: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(TOPIC, p)) for p in (0, 1)}
    finally:
        consumer.close()


def summary_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("feedback ingest")).split(": ", 1)[1]


def test_messages_are_validated_stored_with_offsets_and_offsets_committed_after(setup, capsys):
    assert main(setup["args"]) == 0
    assert summary_line(capsys.readouterr().out) == "read 5, accepted 3, quarantined 2, already ingested 0"
    accepted = setup["dataset"].read("accepted").to_pylist()
    assert sorted((r["kafka_partition"], r["kafka_offset"], r["tag"]) for r in accepted) == [
        (0, 0, "circle"), (0, 1, "square"), (1, 0, "red")]
    assert all(r["source_kind"] == "kafka" and r["source_uri"] == TOPIC for r in accepted)
    quarantined = {r["kafka_offset"]: r for r in setup["dataset"].read("quarantine").to_pylist()}
    assert quarantined[1]["reasons"] == ["unparseable_record"] and quarantined[1]["raw"] == "{truncated"
    assert quarantined[2]["reasons"] == ["invalid_verdict"] and quarantined[2]["kafka_partition"] == 0
    assert committed_offsets(setup["broker"].bootstrap) == {0: 3, 1: 2}
    assert setup["dataset"].manifests()[0]["kafka"]["next_offsets"] == {"0": 3, "1": 2}

    assert main(setup["args"]) == 0  # nothing new on the topic: nothing read, nothing added
    assert summary_line(capsys.readouterr().out) == "read 0, accepted 0, quarantined 0, already ingested 0"
    assert setup["dataset"].read("accepted").num_rows == 3


def test_a_crash_between_the_append_and_the_offset_commit_duplicates_nothing(setup):
    environ = dict(os.environ, TAGGER_FAULT_POINT="after_commit")
    crashed = subprocess.run([sys.executable, "-m", "jobs.cli", *setup["args"]], cwd=REPO, env=environ,
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert setup["dataset"].read("accepted").num_rows == 3  # the append is durable...
    assert committed_offsets(setup["broker"].bootstrap) == {0: None, 1: None}  # ...the offsets were not committed

    environ.pop("TAGGER_FAULT_POINT")
    retry = subprocess.run([sys.executable, "-m", "jobs.cli", *setup["args"]], cwd=REPO, env=environ,
                           capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert summary_line(retry.stdout) == "read 5, accepted 0, quarantined 0, already ingested 5"
    assert setup["dataset"].read("accepted").num_rows == 3 and setup["dataset"].read("quarantine").num_rows == 2
    assert committed_offsets(setup["broker"].bootstrap) == {0: 3, 1: 2}


def test_a_broker_outage_at_the_offset_commit_is_a_one_line_error_and_the_next_run_adds_nothing(setup, capsys):
    from feedback_ingest.ingest import ingest
    from feedback_ingest.kafka_source import KafkaCorrections
    from feedback_ingest.lookups import ImageIndex, ModelCatalog
    from feedback_ingest.sources import InputError

    args = setup["args"]
    bootstrap, registry = args[args.index("--bootstrap") + 1], args[args.index("--registry") + 1]
    source = KafkaCorrections(bootstrap, TOPIC, GROUP)
    batch = source.read(idle_seconds=2)
    with setup["dataset"].lock():
        ingest(batch.records, setup["dataset"], ModelCatalog(registry), ImageIndex([]), data_docs=False)
    setup["broker"].pause()
    try:
        with pytest.raises(InputError, match="could not confirm the offset commit.*adds nothing"):
            source.acknowledge(batch, timeout_ms=2000)
    finally:
        setup["broker"].resume()
        source.close()
    capsys.readouterr()
    assert main(args) == 0
    # the stalled commit may land when the broker resumes (then nothing is re-read) or not (then all 5 are
    # re-read and found stored): either way nothing is added and the offsets end up committed
    assert summary_line(capsys.readouterr().out) in (
        "read 0, accepted 0, quarantined 0, already ingested 0", "read 5, accepted 0, quarantined 0, already ingested 5")
    assert setup["dataset"].read("accepted").num_rows == 3
    assert committed_offsets(bootstrap) == {0: 3, 1: 2}
