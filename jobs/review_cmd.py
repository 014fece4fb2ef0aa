"""``tagger review queue|serve|export-labelstudio|import-labelstudio``: the reviewer's side of the loop."""
from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import secrets
import socket

from jobs.common_args import add_registry_arg, int_at_least, non_negative_int, positive_int, registry_root
from schemas.errors import UserError

STRATEGY_HELP = ("uncertainty: probabilities nearest their class thresholds, with a per-class quota; "
                 "disagreement: two model versions disagree on the same content hash (--compare); "
                 "label-issues: training labels contradicted by out-of-fold predictions (cleanlab, --data); "
                 "random: the control")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("review", help="review queues, the review page and the Label Studio round-trip")
    sub = parser.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    q = sub.add_parser("queue", help="choose images worth a reviewer's minute from committed tagging runs",
                       description=STRATEGY_HELP)
    q.add_argument("--tags", required=True, metavar="DIR", help="tagging output directory (tagger tag --output)")
    q.add_argument("--model", required=True, metavar="NAME@vN", help="model version whose predictions to review")
    q.add_argument("--strategy", required=True, choices=("uncertainty", "disagreement", "label-issues", "random"),
                   help="how items are chosen for review")
    q.add_argument("--limit", type=positive_int, required=True, metavar="N", help="items in the queue")
    q.add_argument("--out", required=True, metavar="QUEUE", help="queue file to write (JSON)")
    q.add_argument("--measure", choices=("margin", "entropy"), default="margin",
                   help="uncertainty: rank images by their nearest class (margin) or summed entropy (default: margin)")
    q.add_argument("--per-class", type=non_negative_int, default=1, metavar="K",
                   help="uncertainty: each class, rarest first, first gets its K most uncertain images (default: 1)")
    q.add_argument("--compare", metavar="NAME@vN", help="disagreement: the other model version")
    q.add_argument("--data", help="label-issues: training labels (as for tagger train --data)")
    q.add_argument("--images", help="label-issues: image root for COCO/VOC annotations")
    q.add_argument("--folds", type=int_at_least(2), default=5, help="label-issues: cross-validation folds (default: 5)")
    q.add_argument("--seed", type=non_negative_int, default=0, help="random / label-issues seed (default: 0)")
    q.add_argument("--feedback", nargs="*", default=[], metavar="DIR",
                   help="feedback datasets whose corrected images are skipped as already reviewed")
    q.add_argument("--inbox", nargs="*", default=[], metavar="DIR",
                   help="inboxes whose pending (and done/) correction files count as already reviewed")
    add_registry_arg(q)
    q.set_defaults(func=_queue)

    s = sub.add_parser("serve", help="serve the review page for a queue (localhost by default)",
                       description="Each submit writes correction records (feedback format) atomically to the "
                       "inbox, or to a Kafka topic, for tagger feedback ingest.")
    s.add_argument("--queue", required=True, metavar="QUEUE", help="queue file written by tagger review queue")
    sink = s.add_mutually_exclusive_group(required=True)
    sink.add_argument("--inbox", metavar="DIR", help="write one JSONL file per submit here")
    sink.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (with --topic)")
    s.add_argument("--topic", default="tag-corrections", help="Kafka corrections topic (default: tag-corrections)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=non_negative_int, default=8765, help="port (default: 8765; 0 picks a free one)")
    s.add_argument("--token", help="access token; required (generated when omitted) beyond localhost; "
                   "default from $TAGGER_REVIEW_TOKEN")
    s.add_argument("--annotator", default=None, help="default reviewer name (default: your user name)")
    s.add_argument("--threads", type=positive_int, default=4, help="waitress worker threads (default: 4)")
    s.set_defaults(func=_serve)

    e = sub.add_parser("export-labelstudio", help="a queue as Label Studio tasks with pre-annotations (JSON)")
    e.add_argument("--queue", required=True, metavar="QUEUE", help="queue file written by tagger review queue")
    e.add_argument("--out", required=True, metavar="FILE", help="tasks JSON to import into Label Studio")
    e.add_argument("--image-mode", choices=("uri", "url", "local-files"), default="uri",
                   help="uri: the image URI as is; url: --url-prefix + path under --root; local-files: Label "
                   "Studio local storage (/data/local-files/?d=path under --root) (default: uri)")
    e.add_argument("--root", help="url/local-files: the directory image paths are made relative to "
                   "(for local-files: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
    e.add_argument("--url-prefix", help="url: e.g. https://images.example.org/archive")
    e.add_argument("--config-out", metavar="FILE", help="also write the labelling config (XML) here")
    e.set_defaults(func=_export)

    i = sub.add_parser("import-labelstudio", help="a Label Studio JSON export -> correction records (JSONL)")
    i.add_argument("--input", required=True, metavar="FILE", help="Label Studio JSON export")
    target = i.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE", help="JSONL file of correction records")
    target.add_argument("--inbox", metavar="DIR", help="write the records as one new file into this inbox")
    add_registry_arg(i)
    i.set_defaults(func=_import)


def _queue(args: argparse.Namespace) -> int:
    from review.build import QueueRequest, build_queue

    queue = build_queue(QueueRequest(
        tags_dir=args.tags, model_ref=args.model, strategy=args.strategy, limit=args.limit,
        registry_root=registry_root(args), measure=args.measure, per_class=args.per_class,
        compare_ref=args.compare, data=args.data, images=args.images, folds=args.folds, seed=args.seed,
        feedback_dirs=args.feedback, inbox_dirs=args.inbox))
    queue.write(args.out)
    print(f"review queue {args.out}: {len(queue.items)} items ({args.strategy}, "
          f"{queue.model_name}@{queue.model_version})")
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from waitress.server import create_server

    from review.app import ProgressLog, create_app
    from review.queue_file import read_queue
    from review.sinks import InboxSink, KafkaSink

    queue = read_queue(args.queue)
    token = args.token or os.environ.get("TAGGER_REVIEW_TOKEN")
    loopback = is_loopback(args.host)
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    sink = InboxSink(args.inbox) if args.inbox else KafkaSink(args.bootstrap, args.topic)
    app = create_app(queue, sink, ProgressLog(args.queue + ".progress.json"),
                     annotator=args.annotator or getpass.getuser(), token=token, loopback_only=loopback)
    try:
        server = create_server(app, host=args.host, port=args.port, threads=args.threads)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    port = server.effective_port
    shown = "127.0.0.1" if loopback else (socket.getfqdn() if args.host in ("0.0.0.0", "::") else args.host)
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"review page for {len(queue.items)} items: {url}", flush=True)
    try:
        server.run()
    finally:
        sink.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    from models import storage
    from review.labelstudio import export_tasks, labeling_config
    from review.queue_file import read_queue

    queue = read_queue(args.queue)
    tasks = export_tasks(queue, args.image_mode, args.root, args.url_prefix)
    storage.write_bytes_atomic(args.out, json.dumps(tasks, indent=1).encode())
    if args.config_out:
        storage.write_bytes_atomic(args.config_out, labeling_config(queue.classes).encode())
    print(f"{len(tasks)} Label Studio tasks: {args.out}" + (f"; labelling config: {args.config_out}"
                                                             if args.config_out else ""))
    return 0


def _import(args: argparse.Namespace) -> int:
    from models import storage
    from models.registry import Registry, RegistryError
    from review.labelstudio import import_export, read_export
    from review.sinks import InboxSink

    doc = read_export(args.input)
    registry = Registry(registry_root(args))
    refs = {t["data"]["tagger"]["model_name"] + "@" + t["data"]["tagger"]["model_version"]
            for t in doc if isinstance(t, dict) and isinstance(t.get("data"), dict)
            and isinstance(t["data"].get("tagger"), dict)
            and {"model_name", "model_version"} <= set(t["data"]["tagger"])} if isinstance(doc, list) else set()
    classes = {}
    for ref in refs:
        name, _, version = ref.partition("@")
        try:
            classes[ref] = registry.card(name, version).classes
        except RegistryError as exc:
            raise UserError(f"{args.input}: {exc}") from exc
    records = import_export(doc, classes, args.input)
    if args.inbox:
        where = InboxSink(args.inbox).write(records) if records else "(nothing to write)"
    else:
        storage.write_bytes_atomic(args.out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
        where = args.out
    print(f"{len(records)} correction records from {args.input}: {where}")
    return 0
