"""Scheduled entry points of the feedback loop, for cron or systemd timers (docs/scheduling.md).

    python -m jobs.scheduled nightly --state DIR --input GLOB --tagged DIR --dataset DIR [--inbox DIR] ...
    python -m jobs.scheduled weekly  --state DIR --data DIR --dataset DIR --min-new-feedback N ...

nightly: ``tagger tag --incremental`` over the archive, then ``tagger feedback ingest`` of the files waiting in
the inbox (and/or a Kafka topic), even if tagging failed; ingested files move to ``inbox/done/`` after their
run committed. The run's exit status is the first failing step's.
weekly: ``tagger train --feedback`` only when at least N accepted corrections arrived since the last retrain.

Every run holds ``STATE/<job>.lock`` (a second run exits 75 at once), writes all step output to
``STATE/logs/<job>-<time>.log`` and its outcome to ``STATE/status/<job>.json``; the exit status is 0 on
success (including "skipped"), the failing step's status otherwise, so an operator can alert on either.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import IO, Sequence

from feedback_ingest.locking import LockBusy, exclusive_lock
from jobs.common_args import (
    TaggerArgumentParser,
    add_deprecated_alias,
    bootstrap_servers,
    kafka_name,
    model_name,
    model_ref,
    non_negative_int,
)
from models import storage

EXIT_BUSY = 75  # EX_TEMPFAIL: another run of this job holds the lock
INPUT_PATTERNS = ("*.csv", "*.jsonl", "*.ndjson", "*.parquet")


class Run:
    """One scheduled run: its log file, its steps and its status record."""

    def __init__(self, state: str, job: str) -> None:
        self.state, self.job = state, job
        self.started = dt.datetime.now(dt.timezone.utc)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        os.makedirs(os.path.join(state, "logs"), exist_ok=True)
        self.log_path = os.path.join(state, "logs", f"{job}-{stamp}-{os.getpid()}.log")
        self.log: IO[str] = open(self.log_path, "a", buffering=1)
        self.steps: list[dict] = []
        self.note = ""

    def say(self, message: str) -> None:
        self.log.write(f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {message}\n")

    def step(self, name: str, args: list[str]) -> int:
        """Run ``tagger ARGS`` as a child process with its output in the log; returns its exit status."""
        command = [sys.executable, "-m", "jobs.cli", *args]
        self.say(f"step {name}: {' '.join(command)}")
        began = time.monotonic()
        code = subprocess.call(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds = round(time.monotonic() - began, 1)
        self.steps.append({"step": name, "exit_status": code, "seconds": seconds})
        self.say(f"step {name}: exit {code} after {seconds}s")
        return code

    def finish(self, code: int) -> int:
        status = {
            "job": self.job,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "exit_status": code,
            "result": "ok" if code == 0 else "failed",
            "note": self.note,
            "steps": self.steps,
            "log": self.log_path,
        }
        self.say(f"{self.job} finished: exit {code} {self.note}")
        self.log.close()
        storage.write_bytes_atomic(os.path.join(self.state, "status", f"{self.job}.json"),
                                   json.dumps(status, indent=2).encode())
        return code


def _registry_args(args: argparse.Namespace) -> list[str]:
    return ["--registry", args.registry] if args.registry else []


def nightly(args: argparse.Namespace, run: Run) -> int:
    code = run.step("tag", ["tag", "--input", *args.images, "--output", args.tagged, "--incremental",
                            *(["--model", args.model] if args.model else []), *_registry_args(args),
                            *args.tag_args])
    if code != 0:  # still ingest: corrections of images tagged on earlier nights need not wait a day
        run.note = "tagging failed"
    common = ["--dataset", args.dataset, "--tagged", args.tagged, *_registry_args(args)]
    if args.inbox:
        files = sorted({p for pattern in INPUT_PATTERNS for p in glob.glob(os.path.join(args.inbox, pattern))})
        if files:
            ingest_code = run.step("ingest-files", ["feedback", "ingest", "--input", *files, *common])
            code = code or ingest_code
            if ingest_code == 0:  # after the commit: a crash before the move only means re-reading (adds nothing)
                done = os.path.join(args.inbox, "done")
                os.makedirs(done, exist_ok=True)
                for path in files:
                    shutil.move(path, os.path.join(done, os.path.basename(path)))
        else:
            run.say("inbox is empty")
    if args.bootstrap:
        kafka_code = run.step("ingest-kafka", ["feedback", "ingest", "--bootstrap", args.bootstrap, "--topic",
                                               args.topic, "--group", args.group, *common])
        code = code or kafka_code
    return code


def weekly(args: argparse.Namespace, run: Run) -> int:
    from feedback_ingest.status import accepted_since

    marker = os.path.join(args.state, "weekly-last-retrain.json")
    since = None
    if os.path.exists(marker):
        with open(marker) as fh:
            since = dt.datetime.fromisoformat(json.load(fh)["feedback_cutoff"])
    cutoff = dt.datetime.now(dt.timezone.utc)
    fresh = accepted_since(args.dataset, since)
    if fresh < args.min_new_feedback:
        run.note = f"skipped: {fresh} new accepted corrections since {since or 'the start'} (< {args.min_new_feedback})"
        run.say(run.note)
        return 0
    run.say(f"{fresh} new accepted corrections since {since or 'the start'}: retraining")
    # A dataset nobody ingested into yet is no feedback (train --feedback insists on an existing directory).
    feedback = ["--feedback", args.dataset] if os.path.isdir(args.dataset) else []
    code = run.step("train", ["train", "--data", args.data, *feedback, "--name", args.name,
                              *_registry_args(args), *args.train_args])
    if code == 0:
        run.note = f"retrained on {fresh} new corrections"
        storage.write_bytes_atomic(marker, json.dumps({"feedback_cutoff": cutoff.isoformat(),
                                                       "new_corrections": fresh}).encode())
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = TaggerArgumentParser(prog="tagger scheduled", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="job", required=True)

    n = sub.add_parser("nightly", help="tag new images, then ingest waiting feedback")
    images = n.add_mutually_exclusive_group(required=True)  # --images: the old name, hidden
    images.add_argument("--input", dest="images", action="extend", nargs="+", metavar="GLOB_OR_MANIFEST",
                        help="archive globs or manifest files, as for tagger tag --input (required)")
    add_deprecated_alias(images, "--images", "--input", dest="images", nargs="+")
    n.add_argument("--tagged", required=True, metavar="DIR", help="tagging output directory")
    n.add_argument("--model", type=model_ref, help="NAME@production (default) or NAME@vN")
    n.add_argument("--inbox", metavar="DIR", help="folder where feedback files (CSV/JSONL/Parquet) arrive")
    n.add_argument("--bootstrap", type=bootstrap_servers, metavar="HOST:PORT[,...]",
                   help="Kafka bootstrap servers for a corrections topic")
    n.add_argument("--topic", type=kafka_name, default="tag-corrections", help="Kafka topic of corrections")
    n.add_argument("--group", type=kafka_name, default="tagger-feedback-ingest", help="Kafka consumer group")
    n.add_argument("--tag-arg", dest="tag_args", action="append", default=[],
                   help="extra argument for tagger tag (repeat), e.g. --tag-arg=--workers=2")

    w = sub.add_parser("weekly", help="retrain with feedback when enough new corrections arrived")
    w.add_argument("--data", required=True, help="base training dataset (as for tagger train --data)")
    w.add_argument("--name", type=model_name, default="tagger", help="model name in the registry")
    w.add_argument("--min-new-feedback", type=non_negative_int, default=100, metavar="N",
                   help="retrain only when at least N accepted corrections arrived since the last retrain")
    w.add_argument("--train-arg", dest="train_args", action="append", default=[],
                   help="extra argument for tagger train (repeat), e.g. --train-arg=--epochs=8")
    for p in (n, w):
        p.add_argument("--state", required=True, metavar="DIR", help="locks, logs and status files")
        p.add_argument("--dataset", required=True, metavar="DIR", help="the feedback dataset")
        p.add_argument("--registry", help="model registry (default $TAGGER_REGISTRY)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job = {"nightly": nightly, "weekly": weekly}[args.job]
    from jobs.common_args import check_output_dir
    from schemas.errors import EXIT_USAGE, UserError

    try:
        check_output_dir(args.state, "--state")
    except UserError as exc:
        print(f"tagger scheduled {args.job}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    os.makedirs(args.state, exist_ok=True)
    try:
        with exclusive_lock(os.path.join(args.state, f"{args.job}.lock"), what=f"scheduled job {args.job}"):
            run = Run(args.state, args.job)
            try:
                code = job(args, run)
            except Exception as exc:  # an unexpected failure still leaves a status and a log line
                run.say(f"{args.job} crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                code = 1
            return run.finish(code)
    except LockBusy as exc:
        print(f"{args.job}: {exc}", file=sys.stderr)
        return EXIT_BUSY


if __name__ == "__main__":
    sys.exit(main())
