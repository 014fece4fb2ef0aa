"""The ``tagger`` command. Each subcommand lives in its own module with ``register(subparsers)``.

Subcommand modules import their heavy dependencies (Beam, torch) inside their run functions so that
``tagger --help`` and ``tagger models list`` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from schemas.errors import UserError

SUBCOMMAND_MODULES = (
    "jobs.train_cmd",
    "jobs.tag_cmd",
    "jobs.models_cmd",
    "jobs.feedback_cmd",
    "jobs.stream_cmd",
    "jobs.scheduled_cmd",
    "jobs.demo_cmd",
    "jobs.review_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagger",
        description="Image-tagging platform: train models, tag archives and streams, ingest feedback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not part of this install
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"tagger {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tagger {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
