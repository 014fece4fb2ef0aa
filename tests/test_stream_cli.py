"""``tagger stream`` argument handling: one-line errors, security settings reaching kafka-python."""
from __future__ import annotations

import argparse

import pytest

from jobs.cli import build_parser, main
from jobs.common_args import kafka_config as _kafka_config


def test_missing_options_and_empty_replay_are_one_line_errors(capsys, tmp_path):
    assert main(["stream", "--topic", "images"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--bootstrap" in err and "--group" in err
    assert main(["stream", "replay", "--bootstrap", "127.0.0.1:1", "--topic", "t",
                 "--input", str(tmp_path / "*.jpg")]) == 2
    assert "matches no files" in capsys.readouterr().err


def test_unknown_model_fails_before_anything_starts(capsys, tmp_path, tiny_model, registry_root):
    code = main(["stream", "--bootstrap", "127.0.0.1:1", "--topic", "i", "--decisions-topic", "d",
                 "--dlq-topic", "q", "--group", "g", "--output", str(tmp_path / "o"), "--registry", registry_root,
                 "--model", "nosuch@production"])
    assert code == 2 and "nosuch" in capsys.readouterr().err


def test_security_flags_pass_through_to_kafka_python(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    parser = build_parser()
    args, _ = parser.parse_known_args(
        ["stream", "--bootstrap", "b1:9093,b2:9093", "--security-protocol", "SASL_SSL", "--sasl-mechanism",
         "SCRAM-SHA-512", "--sasl-plain-username", "u", "--sasl-plain-password", "p", "--ssl-cafile", str(ca),
         "--kafka-option", "ssl_check_hostname=false"])
    kwargs = _kafka_config(args).client_kwargs()
    assert kwargs == {
        "bootstrap_servers": ["b1:9093", "b2:9093"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "u", "sasl_plain_password": "p",
        "ssl_cafile": str(ca), "ssl_check_hostname": False}
    with pytest.raises(Exception, match="not supported"):
        _kafka_config(argparse.Namespace(**{**vars(args), "kafka_option": ["sasl_pasword=x"]}))


def test_sasl_password_from_a_file_or_the_environment_never_only_the_command_line(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    base = ["stream", "--bootstrap", "b:9093", "--sasl-plain-username", "u"]
    from_file, _ = build_parser().parse_known_args([*base, "--sasl-plain-password-file", str(secret)])
    assert _kafka_config(from_file).client_kwargs()["sasl_plain_password"] == "s3cret"
    monkeypatch.setenv("TAGGER_KAFKA_PASSWORD", "from-env")
    from_env, _ = build_parser().parse_known_args(base)
    assert _kafka_config(from_env).client_kwargs()["sasl_plain_password"] == "from-env"
    assert _kafka_config(from_file).client_kwargs()["sasl_plain_password"] == "s3cret"  # the file wins


def test_unreachable_broker_is_a_one_line_error():
    from pipelines.streaming.kafka_config import KafkaConfig
    from pipelines.streaming.source import KafkaTopicError, list_partitions
    from tests.kafka_broker import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaTopicError, match=f"cannot reach Kafka at {bootstrap}") as err:
        list_partitions(KafkaConfig(bootstrap), "images", connect_timeout_s=1)
    assert "\n" not in str(err.value)
