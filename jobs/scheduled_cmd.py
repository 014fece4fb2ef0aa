"""``tagger scheduled nightly|weekly``: the cron/systemd entry points (jobs/scheduled.py) under the one command."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scheduled",
        help="scheduled jobs: nightly tagging + feedback ingestion, weekly retraining (locked, logged)",
        add_help=False,  # `tagger scheduled --help` is answered by the scheduled jobs' own parser
    )
    parser.add_argument("job_args", nargs=argparse.REMAINDER, help="nightly|weekly and their options (see --help)")
    parser.set_defaults(func=_run, accepts_extra_args=True)  # a leading option (--help) is not in job_args


def _run(args: argparse.Namespace) -> int:
    from jobs.scheduled import main

    try:
        return main([*args.extra_args, *args.job_args] or ["--help"])
    except SystemExit as exc:  # its parser's one-line usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
