"""``tagger feedback ingest|status``: validated corrections into the feedback dataset that retraining reads."""
from __future__ import annotations

import argparse
import json

from jobs.common_args import (
    add_registry_arg,
    bootstrap_servers,
    check_kafka_reachable,
    check_output_dir,
    existing_dir,
    kafka_name,
    model_name,
    positive_float,
    positive_int,
    registry_root,
)
from schemas.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feedback", help="ingest reviewers' tag corrections; inspect the dataset")
    sub = parser.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "ingest",
        help="validate corrections (files or a Kafka topic) and append them to the feedback dataset",
        description="Each run appends accepted rows and quarantines invalid ones (with the failing "
        "expectations), keeps its GX validation result and data docs under DATASET/_runs/RUN_ID/, and prints "
        "a summary. Re-ingesting the same rows adds nothing.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="extend", nargs="+", metavar="FILE",
                        help="CSV, JSONL or Parquet files of corrections (this or --bootstrap is required)")
    source.add_argument("--bootstrap", type=bootstrap_servers, metavar="HOST:PORT[,...]",
                        help="Kafka bootstrap servers (with --topic, --group)")
    p.add_argument("--topic", type=kafka_name, help="Kafka topic of JSON correction messages")
    p.add_argument("--group", type=kafka_name, help="Kafka consumer group whose offsets record what was ingested")
    p.add_argument("--dataset", required=True, metavar="DIR", help="the feedback dataset directory")
    p.add_argument("--tagged", action="extend", nargs="*", default=[], metavar="DIR",
                   help="tagging output directories whose images count as known (besides the image store)")
    p.add_argument("--model-name", type=model_name, default="tagger",
                   help="model name for records whose model_version is a bare vN")
    p.add_argument("--max-messages", type=positive_int, default=100_000, help="Kafka: at most this many per run")
    p.add_argument("--idle-seconds", type=positive_float, default=5.0,
                   help="Kafka: stop when nothing new arrives for this many seconds")
    p.add_argument("--no-data-docs", action="store_true",
                   help="skip the HTML validation page (the validation result JSON is kept)")
    add_registry_arg(p)
    p.set_defaults(func=_ingest)

    s = sub.add_parser("status", help="committed runs and row counts of a feedback dataset (JSON)")
    s.add_argument("--dataset", required=True, type=existing_dir, metavar="DIR", help="the feedback dataset directory")
    s.add_argument("--since", metavar="TIMESTAMP",
                   help="also count accepted rows ingested at or after this ISO-8601 timestamp")
    s.set_defaults(func=_status)


def _ingest(args: argparse.Namespace) -> int:
    from feedback_ingest.dataset import FeedbackDataset
    from feedback_ingest.ingest import ingest
    from feedback_ingest.lookups import ImageIndex, ModelCatalog
    from feedback_ingest.sources import read_file

    if args.bootstrap and not (args.topic and args.group):
        raise UserError("--bootstrap needs --topic and --group")
    check_output_dir(args.dataset, "--dataset")
    if args.bootstrap:
        check_kafka_reachable(args.bootstrap)
    dataset = FeedbackDataset(args.dataset)
    catalog = ModelCatalog(registry_root(args), default_name=args.model_name)
    images = ImageIndex(args.tagged)
    with dataset.lock():
        if args.input:
            records = [record for path in args.input for record in read_file(path)]
            summary = ingest(records, dataset, catalog, images, data_docs=not args.no_data_docs)
        else:
            from feedback_ingest.kafka_source import KafkaCorrections

            source = KafkaCorrections(args.bootstrap, args.topic, args.group)
            try:
                batch = source.read(args.max_messages, args.idle_seconds)
                summary = ingest(batch.records, dataset, catalog, images,
                                 kafka=batch.manifest_entry(args.topic, args.group),
                                 data_docs=not args.no_data_docs)
                source.acknowledge(batch)  # only now: the run above is committed and durable
            finally:
                source.close()
    print("\n".join(summary.lines()))
    return 0


def _status(args: argparse.Namespace) -> int:
    import os

    from feedback_ingest.dataset import MANIFESTS, RUNS
    from feedback_ingest.status import dataset_status

    entries = set(os.listdir(args.dataset))
    if entries and not entries & {MANIFESTS, RUNS, "accepted", "quarantine"}:  # an empty one is a new dataset
        raise UserError(f"--dataset {args.dataset} is not a feedback dataset (no {MANIFESTS}/, accepted/ or "
                        "quarantine/ in it)")

    print(json.dumps(dataset_status(args.dataset, args.since), indent=2, sort_keys=True))
    return 0
