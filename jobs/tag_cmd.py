"""``tagger tag``: run the batch tagging pipeline over an archive and print a one-screen summary."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from jobs.common_args import add_registry_arg, registry_root


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
    parser.add_argument("--batch-size", type=int, default=32, help="max RunInference batch size")
    parser.add_argument("--workers", type=int, default=0, help="local worker threads (0 = one per core)")
    parser.add_argument("--onnx-threads", type=int, default=0,
                        help="onnxruntime intra-op threads per worker (0 = cores / workers locally)")
    parser.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb limit in pixels")
    parser.set_defaults(func=run, accepts_extra_args=True)


class _DropNoise(logging.Filter):
    """Beam's RunInference warns per worker that it cannot read memory usage once ModelManager is skipped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resource module is not available" not in record.getMessage()


def _quiet_startup(verbose: bool) -> None:
    """Skip Beam's optional RunInference ModelManager when nothing imported it yet: it imports torch and scipy
    (2 s of every run) for a GPU memory manager this job does not use. Quiet Beam's per-worker INFO logs."""
    if "apache_beam.ml.inference.base" not in sys.modules:
        sys.modules.setdefault("apache_beam.ml.inference.model_manager", None)  # type: ignore[arg-type]
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropNoise())
    _import_beam_without_pandas()
    if not verbose:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("__main__").setLevel(logging.WARNING)


def _import_beam_without_pandas() -> None:
    """Import Beam while pandas looks absent: Beam only registers DataFrame batch converters with it, which
    this job never uses, and pandas is ~0.25 s of every run's start-up. pandas stays importable afterwards."""
    if "apache_beam" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import apache_beam  # noqa: F401
    finally:
        if sys.modules.get("pandas", 0) is None:
            del sys.modules["pandas"]


def run(args: argparse.Namespace) -> int:
    _quiet_startup(getattr(args, "verbose", False))
    from pipelines.batch import TagJob, run_tag_job
    from pipelines.summary import format_summary

    if args.batch_size < 1:
        from schemas.errors import UserError

        raise UserError("--batch-size must be at least 1")
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
    )
    result = run_tag_job(job)
    output = args.output if "://" in args.output else os.path.abspath(args.output)
    print(format_summary(result, output), file=sys.stdout)
    _exit_now_if_top_level()
    return 0


def _exit_now_if_top_level() -> None:
    """When this process *is* ``tagger tag``, skip interpreter teardown once everything is committed and
    printed: freeing Beam's worker state, gRPC and the onnxruntime session costs ~0.25 s per run. Never
    when called in-process (tests, ``tagger demo``), where the caller continues."""
    if os.path.basename(sys.argv[0]) != "tagger" or sys.argv[1:2] != ["tag"]:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
