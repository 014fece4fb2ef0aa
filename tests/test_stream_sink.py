"""The durable sink against a real broker: Parquet exactly once across a replay, commits after durability."""
from __future__ import annotations

import json

import pytest

from pipelines.records import ImageInfo, Tagged
from pipelines.streaming.kafka_config import KafkaConfig
from pipelines.streaming.sink import DurableSinkFn, IncompleteBundle, check_outcomes
from pipelines.streaming.steps import parse_record
from schemas.messages import RawRecord, SourceRef
from tests.kafka_broker import kafka_broker  # noqa: F401  (fixture)
from tests.stream_fixtures import TOPICS, read_topic, visible_tag_rows

pytestmark = [pytest.mark.kafka]


def item(offset: int, fail: bool = False):
    value = b"not json" if fail else json.dumps({"id": f"m{offset}", "image_base64": "AAAA"}).encode()
    parsed = parse_record(RawRecord(SourceRef("images", 0, offset), b"k", value, (), 0), [], 1000)
    assert parsed.failure is None or fail
    if fail:
        return parsed
    info = ImageInfo(parsed.context.record.source.uri, "0" * 64, 10, 10, "JPEG")
    return parsed._replace(value=Tagged(info, ("cat",), {"cat": 0.9, "dog": 0.1}, "tagger", "v1"))


def run_bundle(sink: DurableSinkFn, items) -> None:
    sink.start_bundle()
    for i in items:
        sink.process(i)
    sink.finish_bundle()
    sink.flush()  # durability runs on the sink's writer thread


def committed(bootstrap: str, group: str) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition("images", 0))
    finally:
        consumer.close()


def test_a_replayed_range_is_visible_once_in_parquet_and_commits_follow_durability(kafka_broker, tmp_path):  # noqa: F811
    kafka_broker.create_topics(*TOPICS)
    out = str(tmp_path / "out")
    args = (KafkaConfig(kafka_broker.bootstrap), "moderation", out, "decisions", "dlq", "tagger")

    first = DurableSinkFn(*args)
    first.setup()
    run_bundle(first, [item(o, fail=(o == 3)) for o in range(10)])
    first.teardown()
    assert committed(kafka_broker.bootstrap, "moderation") == 10

    # A restarted job that crashed after writing 0-9 but before committing re-reads 5-14 in a new bundle shape.
    second = DurableSinkFn(*args)
    second.setup()
    run_bundle(second, [item(o) for o in range(5, 15)])
    second.teardown()
    assert committed(kafka_broker.bootstrap, "moderation") == 15

    rows = visible_tag_rows(out)
    assert sorted(r["source_offset"] for r in rows) == [o for o in range(15) if o != 3]
    dead = read_topic(kafka_broker.bootstrap, "dlq", 1, 10)
    assert [json.loads(r.value)["source_offset"] for r in dead] == [3]
    decided = [json.loads(r.value)["dedup_key"] for r in read_topic(kafka_broker.bootstrap, "decisions", 19, 20)]
    assert len(decided) == 19 and len(set(decided)) == 14  # at-least-once: 5 repeats with the same dedup key


def test_a_record_without_an_outcome_fails_the_bundle_instead_of_being_committed():
    pending = parse_record(RawRecord(SourceRef("images", 0, 0), b"k",
                                     json.dumps({"id": "a", "image_base64": "AAAA"}).encode(), (), 0), [], 1000)
    assert pending.failure is None  # parsed, but never scored
    with pytest.raises(IncompleteBundle):
        check_outcomes([pending])


def test_covered_ranges_stay_few_on_a_long_run():
    from pipelines.streaming.sink import add_range

    ranges: list[tuple[int, int]] = []
    for first in range(0, 10_000, 10):
        add_range(ranges, first, first + 9)
    add_range(ranges, 20_000, 20_004)  # a gap (e.g. compacted topic) starts a new range
    assert ranges == [(0, 9_999), (20_000, 20_004)]
