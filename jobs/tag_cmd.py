"""``tagger tag``: run the batch tagging pipeline over an archive and print a one-screen summary."""
from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import logging
import os
import sys
from typing import Iterator

from jobs.common_args import add_precision_arg, add_registry_arg, registry_root


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tag",
        help="tag an image archive into partitioned Parquet (Apache Beam)",
        description="Tag images matched by globs or listed in a manifest (.txt/.lst/.list/.manifest, one URI "
        "per line) and write hive-partitioned Parquet, dead letters and a run manifest under --output. "
        "Unknown options go to Beam, e.g. --runner=DataflowRunner --project=... --setup_file ./setup.py.",
    )
    parser.add_argument("--input", action="append", required=True, metavar="GLOB_OR_MANIFEST",
                        help="glob on any Beam filesystem, or a manifest file; repeatable")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local or gs://...)")
    add_registry_arg(parser)
    parser.add_argument("--model", default="tagger@production", help="NAME@production or NAME@vN")
    parser.add_argument("--incremental", action="store_true",
                        help="skip images whose content this model version already tagged under --output")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="max RunInference batch size (0 = 8 for local CPU runs, 32 with a GPU or a distributed "
                             "runner)")
    parser.add_argument("--workers", type=int, default=0, help="local worker threads (0 = one per core)")
    parser.add_argument("--onnx-threads", type=int, default=0,
                        help="onnxruntime intra-op threads per worker (0 = cores / workers locally, cores / worker "
                             "threads per host on Dask, 1 on other distributed runners)")
    parser.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb limit in pixels")
    # Light, Beam-free modules: the defaults are defined once, next to the code that enforces them.
    from pipelines.memory import DEFAULT_MAX_DECODED_BYTES
    from pipelines.reading import DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT

    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"largest input file read, in bytes (default {DEFAULT_MAX_BYTES >> 20} MiB); larger "
                             "ones are dead letters")
    parser.add_argument("--max-decoded-bytes", type=int, default=DEFAULT_MAX_DECODED_BYTES,
                        help=f"most memory decoding one image may need, in bytes (default "
                             f"{DEFAULT_MAX_DECODED_BYTES >> 20} MiB); all concurrent decodes share this budget")
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                        help=f"seconds reading one input may take (default {DEFAULT_READ_TIMEOUT:g})")
    add_precision_arg(parser)
    parser.set_defaults(func=run, accepts_extra_args=True)


class _DropNoise(logging.Filter):
    """Beam noise on every run: RunInference warns per worker that it cannot read memory usage once
    ModelManager is skipped, and Beam's import warns that the BigQuery client libraries are absent."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Resource module is not available" not in message and "apitools not found" not in message


class _HiddenPackage(importlib.abc.MetaPathFinder):
    """Makes ``import <name>`` fail as if the package were not installed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"{fullname} is hidden while tagger tag runs", name=fullname)
        return None


@contextlib.contextmanager
def _pandas_hidden(hide: bool) -> Iterator[None]:
    """pandas looks absent: Beam's import only registers DataFrame converters with it, and pyarrow probes for
    it on its first table, which made a worker import it (~0.3 s, under the GIL) in the middle of the run.
    This job never converts to or from pandas."""
    if not hide or "pandas" in sys.modules:
        yield
        return
    finder = _HiddenPackage("pandas")
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _quiet_startup(verbose: bool) -> None:
    """Skip Beam's optional RunInference ModelManager when nothing imported it yet: it imports torch and scipy
    (2 s of every run) for a GPU memory manager this job does not use. Quiet Beam's per-worker INFO logs."""
    if "apache_beam.ml.inference.base" not in sys.modules:
        sys.modules.setdefault("apache_beam.ml.inference.model_manager", None)  # type: ignore[arg-type]
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropNoise())
    if not verbose:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("__main__").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    # Only when this process is `tagger tag` (a caller running it in-process may need pandas afterwards, and
    # pyarrow remembers a failed probe) and runs the pipeline itself (a remote runner's submission code is
    # not ours to second-guess).
    with _pandas_hidden(_is_own_process() and _runs_locally(list(args.extra_args))):
        _quiet_startup(getattr(args, "verbose", False))
        from pipelines.batch import TagJob, run_tag_job
        from pipelines.summary import format_summary

        if args.batch_size < 0:
            from schemas.errors import UserError

            raise UserError("--batch-size must be at least 1 (or 0 for the default)")
        job = TagJob(
            inputs=args.input,
            output=args.output,
            registry_root=registry_root(args),
            model_ref=args.model if "@" in args.model else f"{args.model}@production",
            incremental=args.incremental,
            beam_args=list(args.extra_args),
            workers=args.workers,
            batch_size=args.batch_size,
            onnx_threads=args.onnx_threads,
            max_pixels=args.max_pixels,
            max_bytes=args.max_bytes,
            max_decoded_bytes=args.max_decoded_bytes,
            read_timeout=args.read_timeout,
            precision=args.precision,
        )
        result = run_tag_job(job)
    output = args.output if "://" in args.output else os.path.abspath(args.output)
    print(format_summary(result, output), file=sys.stdout)
    _exit_now_if_top_level()
    return 0


def _runs_locally(beam_args: list[str]) -> bool:
    """No --runner, or a local one (the same rule as pipelines.batch.is_local_run, without importing Beam)."""
    runner = None
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(beam_args):
            runner = beam_args[i + 1]
    from pipelines.runner_names import LOCAL_RUNNERS

    return runner is None or runner in LOCAL_RUNNERS


def _is_own_process() -> bool:
    return os.path.basename(sys.argv[0]) == "tagger" and sys.argv[1:2] == ["tag"]


def _exit_now_if_top_level() -> None:
    """When this process *is* ``tagger tag``, skip interpreter teardown once everything is committed and
    printed: freeing Beam's worker state, gRPC and the onnxruntime session costs ~0.25 s per run. Never
    when called in-process (tests, ``tagger demo``), where the caller continues."""
    if not _is_own_process():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
