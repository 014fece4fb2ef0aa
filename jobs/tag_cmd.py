"""``tagger tag``: run the batch tagging pipeline over an archive and print a one-screen summary."""
from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import logging
import os
import sys
from typing import Iterator

from jobs.common_args import (
    add_precision_arg,
    add_progress_args,
    add_registry_arg,
    auto_or_positive_int,
    check_output_dir,
    fraction,
    model_ref,
    positive_float,
    positive_int,
    progress_style,
    registry_root,
)
from schemas.errors import EXIT_TOO_MANY_FAILURES


DEFAULT_MAX_FAILED_FRACTION = 0.1  # a few corrupt files in an archive are normal; a tenth is a broken input


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tag",
        help="tag an image archive into partitioned Parquet (Apache Beam)",
        description="Tag images matched by globs or listed in a manifest (.txt/.lst/.list/.manifest, one URI "
        "per line) and write hive-partitioned Parquet, dead letters and a run manifest under --output. "
        "Other options must be Beam pipeline options, e.g. --runner=DataflowRunner --project=... "
        "--setup_file ./setup.py (checked before the run). Exit status 3: the run committed its output but "
        "more than --max-failed-fraction of its inputs failed (docs/cli.md).",
    )
    parser.add_argument("--input", action="extend", nargs="+", required=True, metavar="GLOB_OR_MANIFEST",
                        help="globs on any Beam filesystem, or manifest files; repeatable")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (local or gs://...)")
    add_registry_arg(parser)
    parser.add_argument("--model", type=model_ref, default="tagger@production",
                        help="the model: NAME@production, NAME@vN, or NAME (its production version)")
    parser.add_argument("--incremental", action="store_true",
                        help="skip images whose content this model version already tagged under --output")
    parser.add_argument("--batch-size", type=auto_or_positive_int, default=0,
                        help="max RunInference batch size (0 = 8 for local CPU runs, 32 with a GPU or a distributed "
                             "runner)")
    parser.add_argument("--workers", type=auto_or_positive_int, default=0,
                        help="local worker threads (0 = one per core)")
    parser.add_argument("--onnx-threads", type=auto_or_positive_int, default=0,
                        help="onnxruntime intra-op threads per worker (0 = cores / workers locally, cores / worker "
                             "threads per host on Dask, 1 on other distributed runners)")
    parser.add_argument("--max-pixels", type=positive_int, default=None,
                        help="decompression-bomb limit: images with more pixels become dead letters (default: "
                             "the decoder's limit, pipelines/decode.py)")
    # Light, Beam-free modules: the defaults are defined once, next to the code that enforces them.
    from pipelines.memory import DEFAULT_MAX_DECODED_BYTES
    from pipelines.reading import DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT

    parser.add_argument("--max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                        help=f"largest input file read, in bytes (default {DEFAULT_MAX_BYTES >> 20} MiB); larger "
                             "ones are dead letters")
    parser.add_argument("--max-decoded-bytes", type=positive_int, default=DEFAULT_MAX_DECODED_BYTES,
                        help=f"most memory decoding one image may need, in bytes (default "
                             f"{DEFAULT_MAX_DECODED_BYTES >> 20} MiB); all concurrent decodes share this budget")
    parser.add_argument("--read-timeout", type=positive_float, default=DEFAULT_READ_TIMEOUT,
                        help=f"seconds reading one input may take (default {DEFAULT_READ_TIMEOUT:g})")
    add_precision_arg(parser)
    parser.add_argument("--max-failed-fraction", type=fraction, default=DEFAULT_MAX_FAILED_FRACTION,
                        metavar="F", help="exit with status 3 when more than this share of the matched inputs "
                        "failed (skipped ones count as done; output and dead letters are still committed); 1 = never")
    add_progress_args(parser)
    parser.set_defaults(func=run, accepts_extra_args=True, beam_options=True)


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
    (2 s of every run) for a GPU memory manager this job does not use. Quiet Beam's per-worker INFO logs
    (jobs.cli drops the warnings nobody can act on)."""
    if "apache_beam.ml.inference.base" not in sys.modules:
        sys.modules.setdefault("apache_beam.ml.inference.model_manager", None)  # type: ignore[arg-type]
    if not verbose:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("__main__").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output, "--output")  # before the model, Beam or any image is touched
    model = args.model if "@" in args.model else f"{args.model}@production"
    if "://" not in registry_root(args):  # a local registry answers in milliseconds, Beam takes seconds to import
        from models.registry import Registry

        Registry(registry_root(args)).resolve(model)
    # Only when this process is `tagger tag` (a caller running it in-process may need pandas afterwards, and
    # pyarrow remembers a failed probe) and runs the pipeline itself (a remote runner's submission code is
    # not ours to second-guess).
    with _pandas_hidden(_is_own_process() and _runs_locally(list(args.extra_args))):
        _quiet_startup(getattr(args, "verbose", False))
        from pipelines.batch import TagJob, run_tag_job
        from pipelines.summary import format_summary

        job = TagJob(
            inputs=args.input,
            output=args.output,
            registry_root=registry_root(args),
            model_ref=model,
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
            progress=progress_style(args),
        )
        result = run_tag_job(job)
    output = args.output if "://" in args.output else os.path.abspath(args.output)
    print(format_summary(result, output), file=sys.stdout)
    code = _failure_status(result.manifest, args.max_failed_fraction)
    _exit_now_if_top_level(code)
    return code


def _failure_status(manifest, max_failed_fraction: float) -> int:
    """3 when more than ``max_failed_fraction`` of the matched inputs failed. Inputs --incremental skipped count
    as done: a nightly incremental run retries an archive's few permanently broken files every night, which
    must not make every night fail once little else is new."""
    if manifest.matched and manifest.failed / manifest.matched > max_failed_fraction:
        print(f"tagger tag: error: {manifest.failed} of {manifest.matched} inputs failed "
              f"({manifest.failed / manifest.matched:.0%} > --max-failed-fraction {max_failed_fraction:g}); "
              "output and dead letters are committed", file=sys.stderr)
        return EXIT_TOO_MANY_FAILURES
    return 0


def _runs_locally(beam_args: list[str]) -> bool:
    """No --runner, or a local one (the same rule as pipelines.batch.is_local_run, without importing Beam)."""
    from jobs.beam_options import runner_name
    from pipelines.runner_names import LOCAL_RUNNERS

    runner = runner_name(beam_args)

    return runner is None or runner in LOCAL_RUNNERS


def _is_own_process() -> bool:
    return os.path.basename(sys.argv[0]) == "tagger" and sys.argv[1:2] == ["tag"]


def _exit_now_if_top_level(code: int) -> None:
    """When this process *is* ``tagger tag``, skip interpreter teardown once everything is committed and
    printed: freeing Beam's worker state, gRPC and the onnxruntime session costs ~0.25 s per run. Never
    when called in-process (tests, ``tagger demo``), where the caller continues."""
    if not _is_own_process():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
