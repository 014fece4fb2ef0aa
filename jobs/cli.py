"""The ``tagger`` command. Each subcommand lives in its own module with ``register(subparsers)``.

Subcommand modules import their heavy dependencies (Beam, torch) inside their run functions so that
``tagger --help`` and ``tagger models list`` stay fast.

One error path for every subcommand (exit codes: docs/cli.md): usage errors and :class:`UserError` are one
line on stderr and exit 2; anything unexpected is one line and exit 1 (``-v`` shows the traceback); Ctrl-C
is one line and 130, SIGTERM 143. Options a subcommand does not define must be Beam pipeline options
(checked before the run, with "did you mean").
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import warnings
from typing import Sequence

from jobs.common_args import TaggerArgumentParser, option_strings
from pipelines import interrupts
from schemas.errors import EXIT_FAILED, EXIT_USAGE, UserError

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


def version() -> str:
    import importlib.metadata as md

    try:
        return md.version("image-tagger")
    except md.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = TaggerArgumentParser(
        prog="tagger",
        description="Image-tagging platform: train models, tag archives and streams, ingest feedback. "
        "Exit codes, environment variables and logging: docs/cli.md.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--version", action="version", version=f"tagger {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not part of this install
            raise
        module.register(subparsers)
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``tagger tag ... -v`` works like ``tagger -v tag ...`` (SUPPRESS: absent leaves the top-level value)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--verbose" not in sub._option_string_actions:
                    sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                     help="debug logging and tracebacks")
                _verbose_everywhere(sub)


def active_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)parser the command line selected, e.g. ``tagger feedback ingest``'s."""
    while parser._subparsers is not None:
        action = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
        chosen = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
        if chosen not in action.choices:
            break
        parser = action.choices[chosen]
    return parser


class _DropNoise(logging.Filter):
    """Warnings nobody can act on: Beam's import says the BigQuery client (apitools) is absent, and
    RunInference says per worker that it cannot read memory usage once ModelManager is skipped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Resource module is not available" not in message and "apitools not found" not in message


class _QuietQuantizer(logging.Filter):
    """onnxruntime's quantizer logs progress at INFO, much of it on the root logger ("Increased scale[20] for
    weight ... by ratio 3385.5": dozens of lines per `tagger train`); without -v only its warnings pass."""

    PACKAGE = f"{os.sep}onnxruntime{os.sep}quantization{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or self.PACKAGE not in record.pathname


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropNoise) for f in handler.filters):
            handler.addFilter(_DropNoise())
        for quiet in [f for f in handler.filters if isinstance(f, _QuietQuantizer)]:
            handler.removeFilter(quiet)
        if not verbose:
            handler.addFilter(_QuietQuantizer())
    if not verbose:
        # Beam's batch-size estimator fits a line to two points: numpy's divide-by-zero RuntimeWarning and
        # polyfit's RankWarning, attributed to Beam's modules; kafka-python logs every reconnect attempt.
        warnings.filterwarnings("ignore", module=r"apache_beam(\.|$)")
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # its import alone logs optional-GCP INFO


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " | ", str(text).strip())


def main(argv: Sequence[str] | None = None) -> int:
    top_level = argv is None  # the `tagger` program itself, not a caller running it in-process
    parser = build_parser()
    try:  # usage errors (one line, printed by the parser), --help and --version: a status, also in-process
        args, extra = parser.parse_known_args(argv)
        selected = active_parser(parser, args)
        if extra and not getattr(args, "accepts_extra_args", False):
            selected.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    prog = selected.prog
    args.extra_args = extra
    configure_logging(args.verbose)
    if top_level:  # a caller running tagger in-process keeps its own SIGTERM handling
        interrupts.install_sigterm()
    try:
        if extra and getattr(args, "beam_options", False):
            from jobs.beam_options import check_beam_args

            check_beam_args(extra, option_strings(selected))
        code = int(args.func(args) or 0)
    except UserError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt as exc:  # SIGINT, and SIGTERM as interrupts.Terminated
        if top_level:
            interrupts.end_process(prog, exc)
        print(f"{prog}: interrupted by {interrupts.signal_name(exc)}", file=sys.stderr)
        code = interrupts.exit_status(exc)
    except Exception as exc:  # noqa: BLE001 - a bug or a broken environment: still one line, no traceback
        if args.verbose:
            logging.exception("unexpected error")
        print(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} (run `tagger -v ...` for the traceback)",
              file=sys.stderr)
        code = EXIT_FAILED
    if top_level and code != 0:
        # Leave without interpreter teardown: native threads (onnxruntime, gRPC, torch) still alive at
        # teardown can abort the process, turning a clean error into "terminate called ..." and exit 134.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
