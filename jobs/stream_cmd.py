"""``tagger stream``: tag a Kafka topic continuously; ``tagger stream replay``: feed a folder into a topic."""
from __future__ import annotations

import argparse

from schemas.messages import DEFAULT_MAX_MESSAGE_BYTES

from jobs.common_args import (
    add_precision_arg,
    add_kafka_args,
    add_registry_arg,
    check_kafka_reachable,
    check_output_dir,
    kafka_config,
    kafka_name,
    model_ref,
    positive_float,
    positive_int,
    registry_root,
)

DEFAULT_RELOAD_INTERVAL_S = 5.0  # pipelines.streaming.hot_model.DEFAULT_CHECK_INTERVAL_S (that module imports Beam)
REQUIRED = ("bootstrap", "topic", "decisions_topic", "dlq_topic", "group", "output")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream", help="tag a Kafka topic continuously (decisions topic + Parquet, dead letters to a DLQ)",
        description="Runs until stopped (Ctrl-C or SIGTERM). Other options must be Beam pipeline options "
        "(e.g. --runner=FlinkRunner), checked before the run.",
    )
    parser.set_defaults(func=_stream, accepts_extra_args=True, beam_options=True)
    # Not argparse-required so that ``tagger stream replay`` parses; _stream checks them before any import.
    add_kafka_args(parser, required=False, note=" (required)")
    parser.add_argument("--topic", type=kafka_name, help="input topic (required)")
    parser.add_argument("--decisions-topic", type=kafka_name, help="topic the tagging decisions go to (required)")
    parser.add_argument("--dlq-topic", type=kafka_name,
                        help="dead-letter topic for messages that cannot be tagged, with the reason (required)")
    parser.add_argument("--group", type=kafka_name,
                        help="consumer group whose offsets mark durable progress (required)")
    parser.add_argument("--output", metavar="DIR",
                        help="Parquet output directory (local or gs://, s3://...) (required)")
    add_registry_arg(parser)
    parser.add_argument("--model", type=model_ref, default="tagger@production",
                        help="NAME@production follows promotions while running; NAME@vN pins a version")
    add_precision_arg(parser)
    parser.add_argument("--allow-prefix", action="append", default=[], metavar="PREFIX",
                        help="URI prefix messages may reference (repeatable); none: URI messages are refused")
    parser.add_argument("--max-message-bytes", type=positive_int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        help="larger messages go to the dead-letter topic")
    parser.add_argument("--reload-interval", type=positive_float, default=DEFAULT_RELOAD_INTERVAL_S,
                        metavar="SECONDS", help="seconds between checks of the registry alias (hot reload)")
    parser.add_argument("--start-from", choices=("earliest", "latest"), default="earliest",
                        help="where a group without committed offsets starts")

    replay_sub = parser.add_subparsers(dest="stream_command", metavar="ACTION")
    p_replay = replay_sub.add_parser("replay", help="produce every file matching --input to --topic")
    add_kafka_args(p_replay)
    p_replay.add_argument("--topic", type=kafka_name, required=True, help="topic to produce to")
    p_replay.add_argument("--input", required=True, help="glob of image files, e.g. 'photos/**/*.jpg'")
    p_replay.add_argument("--rate", type=positive_float, default=None,
                          help="messages per second (default: unthrottled)")
    p_replay.set_defaults(func=_replay, accepts_extra_args=False, beam_options=False)


def _stream(args: argparse.Namespace) -> int:
    from schemas.errors import UserError

    missing = [f"--{n.replace('_', '-')}" for n in REQUIRED if not getattr(args, n)]
    if missing:  # before importing Beam (seconds) or touching Kafka
        raise UserError(f"missing required options: {' '.join(missing)}")
    check_output_dir(args.output, "--output")
    from jobs.beam_options import runner_name
    from pipelines.runner_names import LOCAL_RUNNERS

    runner = runner_name(args.extra_args)
    if runner and runner not in LOCAL_RUNNERS:  # before the network: no broker makes this runner work
        from pipelines.streaming.pipeline import STREAM_RUNNERS_ERROR

        raise UserError(STREAM_RUNNERS_ERROR.format(runner=runner))
    config = kafka_config(args)
    from models.registry import Registry

    Registry(registry_root(args)).resolve(args.model)  # local checks first, then the network
    check_kafka_reachable(args.bootstrap)

    from pipelines.interrupts import hard_stop
    from pipelines.streaming.pipeline import StreamJob, run

    # The normal way to stop a stream. Outputs are durable per bundle and offsets are committed after them, so
    # ending at once loses nothing: whatever was in flight is read again by the next start.
    with hard_stop("tagger stream", lambda: "messages in flight are read again on restart"):
        run(StreamJob(
            kafka=config,
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
    config = kafka_config(args)
    check_kafka_reachable(args.bootstrap)
    sent = replay(config, args.topic, paths, rate=args.rate)
    print(f"replayed {sent} images to {args.topic}")
    return 0
