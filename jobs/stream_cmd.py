"""``tagger stream``: tag a Kafka topic continuously; ``tagger stream replay``: feed a folder into a topic."""
from __future__ import annotations

import argparse

from jobs.common_args import add_precision_arg, add_registry_arg, registry_root


def _add_kafka_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--bootstrap", required=required, help="HOST:PORT[,HOST:PORT...] of the Kafka cluster")
    parser.add_argument("--security-protocol", help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    parser.add_argument("--sasl-mechanism", help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, GSSAPI")
    parser.add_argument("--sasl-plain-username")
    parser.add_argument("--sasl-plain-password")
    parser.add_argument("--ssl-cafile")
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-keyfile")
    parser.add_argument("--kafka-option", action="append", default=[], metavar="NAME=VALUE",
                        help="any other kafka-python security setting (repeatable), e.g. ssl_check_hostname=false")


def _kafka_config(args: argparse.Namespace):
    from pipelines.streaming.kafka_config import KafkaConfig, parse_security_options

    security = parse_security_options(args.kafka_option)
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(args, key)
        if value is not None:
            security[key] = value
    return KafkaConfig(args.bootstrap, security)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream", help="tag a Kafka topic continuously (decisions topic + Parquet, dead letters to a DLQ)",
        description="Runs until stopped. Unknown options are passed to Beam (e.g. --runner=FlinkRunner).",
    )
    parser.set_defaults(func=_stream, accepts_extra_args=True)
    # Not argparse-required so that ``tagger stream replay`` parses; _stream checks them.
    _add_kafka_args(parser, required=False)
    parser.add_argument("--topic", help="input topic")
    parser.add_argument("--decisions-topic")
    parser.add_argument("--dlq-topic")
    parser.add_argument("--group", help="consumer group whose offsets mark durable progress")
    parser.add_argument("--output", help="Parquet output directory (local or gs://, s3://...)")
    add_registry_arg(parser)
    parser.add_argument("--model", default="tagger@production",
                        help="NAME@production follows promotions while running; NAME@vN pins a version")
    add_precision_arg(parser)
    parser.add_argument("--allow-prefix", action="append", default=[], metavar="PREFIX",
                        help="URI prefix messages may reference (repeatable); none: URI messages are refused")
    parser.add_argument("--max-message-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--reload-interval", type=float, default=5.0,
                        help="seconds between checks of the registry alias (hot reload)")
    parser.add_argument("--start-from", choices=("earliest", "latest"), default="earliest",
                        help="where a group without committed offsets starts")

    replay_sub = parser.add_subparsers(dest="stream_command", metavar="ACTION")
    p_replay = replay_sub.add_parser("replay", help="produce every file matching --input to --topic")
    _add_kafka_args(p_replay)
    p_replay.add_argument("--topic", required=True)
    p_replay.add_argument("--input", required=True, help="glob of image files, e.g. 'photos/**/*.jpg'")
    p_replay.add_argument("--rate", type=float, default=None, help="messages per second (default: unthrottled)")
    p_replay.set_defaults(func=_replay, accepts_extra_args=False)


def _stream(args: argparse.Namespace) -> int:
    from pipelines.streaming.pipeline import StreamJob, run
    from schemas.errors import UserError

    missing = [f"--{n.replace('_', '-')}" for n in ("bootstrap", "topic", "decisions_topic", "dlq_topic", "group",
                                                    "output") if not getattr(args, n)]
    if missing:
        raise UserError(f"missing required options: {' '.join(missing)}")

    run(StreamJob(
        kafka=_kafka_config(args),
        topic=args.topic,
        decisions_topic=args.decisions_topic,
        dlq_topic=args.dlq_topic,
        group=args.group,
        output=args.output,
        registry_root=registry_root(args),
        model_ref=args.model,
        precision=args.precision,
        allowed_prefixes=tuple(args.allow_prefix),
        max_message_bytes=args.max_message_bytes,
        reload_interval_s=args.reload_interval,
        start_from=args.start_from,
        beam_args=tuple(args.extra_args),
    ))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from pipelines.streaming.replay import expand_inputs, replay

    paths = expand_inputs(args.input)
    sent = replay(_kafka_config(args), args.topic, paths, rate=args.rate)
    print(f"replayed {sent} images to {args.topic}")
    return 0
