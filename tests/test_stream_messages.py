"""The streaming message contract and the pure steps around it (no broker, no Beam)."""
from __future__ import annotations

import base64
import json
import os
import random

import pytest

from pipelines.streaming.kafka_config import parse_security_options
from pipelines.streaming.steps import allowed, parse_record
from schemas.errors import UserError
from schemas.messages import DeadLetter, Decision, MessageError, RawRecord, SourceRef, parse_message
from tests.synthetic import encode, make_sample


def record(value: bytes | None, headers=(), key: bytes | None = b"k1", offset: int = 7) -> RawRecord:
    return RawRecord(SourceRef("images", 2, offset), key, value, tuple(headers), 0)


def jpeg() -> bytes:
    return encode(make_sample(random.Random(1)).image)


def test_inline_image_takes_id_from_header_then_key():
    data = jpeg()
    req = parse_message(record(data, [("content-type", b"image/jpeg"), ("id", b"photo-1")]))
    assert (req.id, req.data, req.uri) == ("photo-1", data, None)
    assert parse_message(record(data, [("Content-Type", b"image/png")], key=b"from-key")).id == "from-key"


def test_json_messages_by_uri_or_base64():
    data = jpeg()
    by_uri = parse_message(record(json.dumps({"id": "a", "uri": "gs://bucket/x.jpg"}).encode()))
    assert (by_uri.id, by_uri.uri) == ("a", "gs://bucket/x.jpg")
    inline = parse_message(record(json.dumps({"id": "b", "image_base64": base64.b64encode(data).decode()}).encode()))
    assert inline.data == data


@pytest.mark.parametrize(
    "value, headers, reason",
    [
        (b"\xff\xd8 not json at all", [], "not_json"),
        (b'{"id": "x"}', [], "missing_image"),
        (b'{"uri": "gs://b/x.jpg"}', [], "missing_id"),
        (b"[1, 2]", [], "not_json_object"),
        (b'{"id": "x", "image_base64": "***"}', [], "bad_base64"),
        (b"abc", [("content-type", b"text/plain")], "unsupported_content_type"),
        (b"", [("content-type", b"image/jpeg"), ("id", b"x")], "missing_image"),
    ],
)
def test_malformed_messages_fail_in_parse_with_a_reason(value, headers, reason):
    with pytest.raises(MessageError) as err:
        parse_message(record(value, headers))
    assert (err.value.stage, err.value.reason) == ("parse", reason)


def test_oversized_message_is_refused_before_parsing():
    with pytest.raises(MessageError) as err:
        parse_message(record(b"x" * 101, [("content-type", b"image/jpeg")]), max_bytes=100)
    assert err.value.reason == "oversized"


def test_uris_are_read_only_under_allowed_prefixes(tmp_path):
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    (allowed_dir / "ok.jpg").write_bytes(jpeg())
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.jpg", allowed_dir / "link.jpg")
    prefixes = [str(allowed_dir)]
    assert allowed(str(allowed_dir / "ok.jpg"), prefixes)
    assert not allowed(str(allowed_dir / ".." / "secret.jpg"), prefixes)
    assert not allowed(str(allowed_dir / "link.jpg"), prefixes)  # symlink escaping the prefix
    assert not allowed(str(tmp_path / "allowed-sibling" / "x.jpg"), prefixes)
    assert allowed("gs://bucket/ok/x.jpg", ["gs://bucket/ok"])
    assert not allowed("gs://bucket/ok/../private/x.jpg", ["gs://bucket/ok"])
    assert not allowed("gs://bucket/okay/x.jpg", ["gs://bucket/ok"])

    good = parse_record(record(json.dumps({"id": "a", "uri": str(allowed_dir / "ok.jpg")}).encode()), prefixes, 10**6)
    assert good.failure is None and good.value.data == (allowed_dir / "ok.jpg").read_bytes()
    bad = parse_record(record(json.dumps({"id": "b", "uri": str(tmp_path / "secret.jpg")}).encode()), prefixes, 10**6)
    assert (bad.failure.stage, bad.failure.error_class) == ("read", "uri_not_allowed")
    assert bad.context.message_id == "b"
    none = parse_record(record(json.dumps({"id": "c", "uri": str(allowed_dir / "ok.jpg")}).encode()), [], 10**6)
    assert none.failure.error_class == "uri_not_allowed"  # no prefixes configured: URIs are refused
    os.mkfifo(allowed_dir / "fifo.jpg")  # would block a plain open() forever
    fifo = parse_record(record(json.dumps({"id": "d", "uri": str(allowed_dir / "fifo.jpg")}).encode()), prefixes, 10**6)
    assert (fifo.failure.stage, fifo.failure.error_class) == ("read", "unreadable")
    assert "not_a_regular_file" in fifo.failure.message
    big = parse_record(record(json.dumps({"id": "e", "uri": str(allowed_dir / "ok.jpg")}).encode()), prefixes, 10)
    assert big.failure.error_class == "oversized"


def test_decision_and_dead_letter_round_trip_through_json():
    decision = Decision("a", ("cat",), {"cat": 0.9, "dog": 0.1}, "tagger", "v2", "images", 2, 7, "images/2/7",
                        "2026-01-01T00:00:00Z")
    assert Decision.from_json(decision.to_json()) == decision
    rec = record(b"not json", [("trace", b"\x00\x01")])
    dead = DeadLetter.for_record(rec, "parse", "not_json", "bad", "2026-01-01T00:00:00Z")
    back = DeadLetter.from_json(dead.to_json())
    assert back == dead
    assert base64.b64decode(back.key_base64) == b"k1"
    assert back.headers == [("trace", base64.b64encode(b"\x00\x01").decode())]
    assert back.payload["size"] == 8 and back.dedup_key == "images/2/7"


def test_security_options_pass_through_and_typos_are_refused():
    assert parse_security_options(["security_protocol=SASL_SSL", "ssl-check-hostname=false"]) == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": False}
    with pytest.raises(UserError, match="not supported"):
        parse_security_options(["sasl_pasword=x"])
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_security_options(["security_protocol"])
