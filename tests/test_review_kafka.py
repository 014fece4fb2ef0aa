"""The review page writing to the corrections topic of a real Kafka-protocol broker (tansu), and
`tagger feedback ingest --bootstrap` taking the records unchanged."""
from __future__ import annotations

import pytest

from feedback_ingest.dataset import FeedbackDataset
from jobs.cli import main
from review.app import ProgressLog, create_app
from review.sinks import KafkaSink, SinkError
from tests.kafka_broker import kafka_broker  # noqa: F401  (fixture)
from tests.review_fixtures import small_queue, write_images

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
TOPIC = "tag-corrections"


def test_submits_go_to_the_topic_and_ingest_accepts_them(tmp_path, tiny_model, registry_root, kafka_broker, capsys):  # noqa: F811
    kafka_broker.create_topics(TOPIC, partitions=1)
    queue = small_queue(write_images(str(tmp_path / "img"), 2), tiny_model.version)
    sink = KafkaSink(kafka_broker.bootstrap, TOPIC)
    try:
        client = create_app(queue, sink, ProgressLog(str(tmp_path / "p.json")), annotator="kim").test_client()
        ok = client.post("/api/submit", json={"index": 1, "tags": ["square", "green"]})  # started {square}
        assert ok.status_code == 200 and ok.get_json()["where"] == f"kafka topic {TOPIC}"
    finally:
        sink.close()
    capsys.readouterr()
    assert main(["feedback", "ingest", "--bootstrap", kafka_broker.bootstrap, "--topic", TOPIC, "--group", "ingest",
                 "--dataset", str(tmp_path / "feedback"), "--registry", registry_root, "--idle-seconds", "2",
                 "--no-data-docs"]) == 0
    assert "read 2, accepted 2, quarantined 0" in capsys.readouterr().out
    rows = FeedbackDataset(str(tmp_path / "feedback")).read("accepted").to_pylist()
    assert {(r["tag"], r["verdict"], r["annotator"], r["source_kind"]) for r in rows} == {
        ("square", "present", "kim", "kafka"), ("green", "present", "kim", "kafka")}


def test_an_unreachable_broker_is_a_one_line_error_not_a_lost_submit(tmp_path):
    from tests.kafka_broker import free_port

    with pytest.raises(SinkError) as failed:
        sink = KafkaSink(f"127.0.0.1:{free_port()}", TOPIC, timeout_s=2)
        sink.write([{"tag": "x"}])
    assert "Kafka" in str(failed.value) and "\n" not in str(failed.value)
