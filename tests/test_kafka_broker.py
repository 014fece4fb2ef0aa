"""The test broker itself: starts, keeps data across a SIGSTOP/SIGCONT stall, stops only its own process."""
from __future__ import annotations

import pytest

from tests.kafka_broker import kafka_broker, running_broker  # noqa: F401  (fixture)

pytestmark = [pytest.mark.kafka]


def test_broker_round_trips_records_across_a_stall(kafka_broker):  # noqa: F811
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    kafka_broker.create_topics("roundtrip", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    producer.send("roundtrip", key=b"a", value=b"first", headers=[("content-type", b"image/jpeg")]).get(10)
    kafka_broker.pause()
    kafka_broker.resume()
    producer.send("roundtrip", key=b"b", value=b"second").get(10)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, enable_auto_commit=False)
    tp = TopicPartition("roundtrip", 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    records = []
    for _ in range(20):
        records += consumer.poll(500).get(tp, [])
        if len(records) >= 2:
            break
    consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"a", b"first"), (b"b", b"second")]
    assert records[0].headers == [("content-type", b"image/jpeg")]


def test_broker_process_is_gone_after_the_context_exits():
    with running_broker() as broker:
        process = broker.process
        assert process.poll() is None
    assert process.poll() is not None
