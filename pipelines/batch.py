"""The nightly batch tagging pipeline: match -> read -> TagImages -> Parquet + dead letters -> manifest.

Local runs use Beam's in-process FnApiRunner (never the Prism download) with one worker per core;
``--runner=DaskRunner`` runs on a dask.distributed cluster through :mod:`pipelines.dask_runner`; any other
``--runner`` and its options go to Beam as given (never replaced by another runner), and a runner that is
unknown or cannot start fails in one line.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from models import storage
from models.registry import Registry
from pipelines.incremental import AlreadyTagged
from pipelines.inputs import MatchInputs, ReadImages, check_inputs
from pipelines.memory import DEFAULT_MAX_DECODED_BYTES
from pipelines.model_handler import CUDA, CardModelHandler, choose_providers, discard_preloaded, preload_session
from pipelines.interrupts import hard_stop
from pipelines.paths import canonical_uri, is_local, printable
from pipelines.precision import INT8, choose_variant, load_for_precision
from pipelines.progress import ProgressPrinter, ProgressStyle
from pipelines.reading import DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT
from pipelines.runner_names import DASK_RUNNERS, LOCAL_RUNNERS
from pipelines.sinks import CommitRun, RunInfo, WriteRows, abandon_staging
from pipelines.staging import clean_orphans, lock_run
from pipelines.transforms import TagImages
from pipelines.uri_shards import DEFAULT_SHARDS
from schemas.card import ModelCard
from schemas.errors import UserError
from schemas.run_ids import new_run_id
from schemas.tagging import RunManifest, manifest_name

LOG = logging.getLogger(__name__)
LOCAL_RUNNER = "FnApiRunner"
# Threads, not processes: Pillow, numpy and onnxruntime release the GIL, so two worker threads with one
# onnxruntime thread each overlap decoding with inference (measured 1.7x a plain loop on 2 cores), while
# subprocess workers pay a Beam import per worker and gRPC copies (0.5x). Override with --direct_running_mode.
LOCAL_RUNNING_MODE = "multi_threading"
SHARDS_PER_LOCAL_WORKER = 32
# RunInference's max batch. With one onnxruntime thread per local worker, small batches are as fast per image
# as big ones (MobileNetV2 at 224: 7.6 ms at 8, 8.7 ms at 32) and hold a quarter of the activations: measured
# `tagger tag` peak 0.65 GB at 8 vs 1.2-1.3 GB at 32. GPUs and many-core remote workers want bigger batches.
LOCAL_CPU_BATCH = 8
GPU_OR_REMOTE_BATCH = 32


@dataclass
class TagJob:
    """Everything ``tagger tag`` needs; ``beam_args`` are passed to Beam untouched."""

    inputs: list[str]
    output: str
    registry_root: str
    model_ref: str = "tagger@production"
    incremental: bool = False
    beam_args: list[str] = field(default_factory=list)
    workers: int = 0  # local runs: 0 = one per core
    batch_size: int = 0  # 0 = default_batch_size()
    onnx_threads: int = 0  # 0 = cores / workers
    max_pixels: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    precision: str = "auto"  # auto | fp32 | int8 (pipelines/precision.py)
    progress: ProgressStyle | None = None  # None: ProgressStyle.choose() (a terminal or a log, on stderr)
    progress_interval: float | None = None  # for progress=None: seconds between lines in a log (default 30)


@dataclass
class TagResult:
    manifest: RunManifest
    metrics: dict[str, int]
    orphans_removed: list[str] = field(default_factory=list)  # run ids of interrupted runs' staging cleaned up


def is_local_run(beam_args: list[str]) -> bool:
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner in LOCAL_RUNNERS


def choose_runner(options: PipelineOptions):
    """(name recorded in the manifest, runner object or None for Beam's own lookup); a one-line UserError for
    a runner name Beam does not know or whose dependencies are missing. Never substitutes another runner."""
    name = options.view_as(StandardOptions).runner
    if name is None or name in LOCAL_RUNNERS:
        return LOCAL_RUNNER, _local_runner()
    if name in DASK_RUNNERS:
        try:
            from pipelines.dask_runner import DaskRunner
        except ImportError as exc:
            raise UserError(f"--runner={name} needs dask.distributed here and on the workers "
                            f"(pip install 'image-tagger[dask]'): {exc}") from exc
        return "DaskRunner", DaskRunner()
    from apache_beam.runners.runner import create_runner

    try:
        create_runner(name)
    except (ValueError, ImportError) as exc:
        raise UserError(f"--runner={name}: {str(exc).splitlines()[0]}") from exc
    return name, None


def remote_onnx_threads(name: str, options: PipelineOptions) -> int:
    """onnxruntime intra-op threads per worker task on a distributed runner: cores / worker threads of the
    busiest Dask host (0, onnxruntime's default of all cores, oversubscribes: every task thread would start
    that many); 1 elsewhere (Dataflow and Flink run one SDK worker per core)."""
    if name != "DaskRunner":
        return 1
    from pipelines.dask_runner import DaskOptions, cluster_shape

    dask_options = options.view_as(DaskOptions)
    if not (dask_options.address or dask_options.scheduler_file):
        return 1  # Beam then starts a LocalCluster of its own: one worker process per core
    return cluster_shape(dask_options.address, dask_options.timeout or 30,
                         dask_options.scheduler_file).intra_op_threads


def local_options(beam_args: list[str], workers: int) -> tuple[PipelineOptions, int]:
    """FnApiRunner options: ``workers`` threads (default: one per core) plus whatever the user passed."""
    workers = workers or os.cpu_count() or 1
    options = PipelineOptions(
        [f"--direct_num_workers={workers}", f"--direct_running_mode={LOCAL_RUNNING_MODE}", *beam_args]
    )
    workers = options.view_as(DirectOptions).direct_num_workers or workers
    return options, workers


def default_batch_size(local: bool) -> int:
    """8 for local runs on CPU, 32 with a local GPU or on a distributed runner (see LOCAL_CPU_BATCH)."""
    if not local:
        return GPU_OR_REMOTE_BATCH
    import onnxruntime as ort

    return GPU_OR_REMOTE_BATCH if CUDA in choose_providers(ort.get_available_providers()) else LOCAL_CPU_BATCH


def run_tag_job(job: TagJob) -> TagResult:
    registry = Registry(job.registry_root)
    loaded = registry.load(job.model_ref)  # verifies sha256 before we start; a bad ref fails in one line
    card = loaded.card
    # One identity per local path (absolute, normalised, file:// resolved), so image_uri names the same file
    # whichever directory the job ran from.
    job.inputs = [canonical_uri(os.path.expanduser(p)) if is_local(p) else p for p in job.inputs]
    check_inputs(job.inputs)
    pixels = 1 if job.max_pixels is None else job.max_pixels
    for name, value in (("--max-bytes", job.max_bytes), ("--max-decoded-bytes", job.max_decoded_bytes),
                        ("--read-timeout", job.read_timeout), ("--max-pixels", pixels)):
        if not 0 < value < math.inf:  # NaN and infinity too: a time cap that never fires is no cap
            raise UserError(f"{name} must be a positive number")
    for name, value in (("--workers", job.workers), ("--onnx-threads", job.onnx_threads)):
        if value < 0:
            raise UserError(f"{name} must be 0 (the default) or more")
    if not job.output:
        raise UserError("--output must name a directory")
    local = is_local_run(job.beam_args)
    if local:
        options, workers = local_options(job.beam_args, job.workers)
    else:
        options, workers = PipelineOptions(job.beam_args), 1
    runner_name, runner = choose_runner(options)

    now = dt.datetime.now(dt.timezone.utc)
    output = os.path.abspath(job.output) if storage.is_local(job.output) else job.output
    info = RunInfo(
        output=output,
        run_id=new_run_id(now),
        run_date=f"{now:%Y-%m-%d}",
        model_name=card.name,
        model_version=card.version,
        runner=runner_name,
        started_at=now.isoformat(timespec="milliseconds"),
        incremental=job.incremental,
        inputs=list(job.inputs),
    )
    already_tagged = None
    if job.incremental:
        if not storage.is_local(output):
            raise UserError("--incremental needs a local (or mounted) --output to read earlier runs")
        already_tagged = AlreadyTagged(output, card.name, card.version, info.run_id)
        if local:  # loaded here for the log line; in-process workers share this copy
            LOG.info("--incremental: %d images already tagged by %s will be skipped",
                     len(already_tagged.load()), card.ref)
        else:  # each worker process loads the set; the launcher holds no per-image state
            LOG.info("--incremental: workers skip images already tagged by %s", card.ref)

    batch_size = job.batch_size or default_batch_size(local)
    intra_op_threads = job.onnx_threads or (max(1, (os.cpu_count() or 1) // workers) if local
                                            else remote_onnx_threads(runner_name, options))
    if local:  # the workers run on this machine: choose the variant once, here
        loaded, why = load_for_precision(registry, card.ref, job.precision, loaded=loaded)
        variant = loaded.variant
    else:  # decided here unless the version has an INT8 variant for `auto`: then each worker's hardware decides
        variant, why = choose_variant(card, job.precision, gpu=False)  # an explicit int8 is checked here
        if job.precision == "auto" and INT8 in card.published_variants():
            variant, why = "auto", "chosen per worker"
    LOG.info("model %s: --precision %s runs the %s variant (%s)", card.ref, job.precision, variant, why)
    info = info._replace(model_variant=variant)
    handler = CardModelHandler(
        registry.root,
        card.ref,
        intra_op_threads=intra_op_threads,
        # Locally a fixed size: Beam's batch-size estimator fits a regression per batch under the GIL, and with
        # one onnxruntime thread per worker the batch size barely changes the cost per image.
        min_batch_size=batch_size if local else max(1, batch_size // 2),
        max_batch_size=batch_size,
        precision=variant,
    )
    if local and "multi_processing" not in (options.view_as(DirectOptions).direct_running_mode or ""):
        # Same process as the workers: build the (already sha256-verified) session while Beam sets up.
        preload_session(registry.root, loaded.model_path, card, handler.intra_op_threads, variant)
    # Workers on this machine or with the output mounted count into it; a remote output has no progress line.
    progress_dir = storage.join(info.staging, "progress") if storage.is_local(output) else None

    pipeline = beam.Pipeline(runner=runner, options=options)
    # Locally, shards are a multiple of the worker count so every worker gets the same number of images;
    # elsewhere the runner's shuffle spreads the URIs one by one.
    matching = MatchInputs(
        job.inputs,
        num_shards=workers * SHARDS_PER_LOCAL_WORKER if local else DEFAULT_SHARDS,
        redistribute=not local,
        progress_dir=progress_dir,
    )
    limits = InputLimits(job.max_bytes, job.read_timeout, job.max_decoded_bytes, job.max_pixels)
    build_tagging(pipeline, matching, card, handler, info, already_tagged, progress_dir, limits)

    progress = job.progress or ProgressStyle.choose(interval=job.progress_interval)
    run_lock = None

    # Ctrl-C / SIGTERM while Beam runs locally: remove this run's staging and end the process at once (its
    # worker threads cannot be unwound); nothing of the run becomes visible without its manifest. A remote
    # runner's job is the runner's to cancel: there the interrupt unwinds as usual.
    def on_interrupt() -> str:
        shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
        note = abandon_staging(info.staging)
        if run_lock:
            run_lock.release()  # its lock file, then _staging itself when no other run uses it
        return note

    try:
        try:
            run_lock = lock_run(output, info.run_id)
        except OSError as exc:  # --output is a file, or not writable by this user
            raise UserError(f"cannot write to --output {printable(output)}: {exc.strerror or exc}") from exc
        orphans = clean_orphans(output, info.run_id)  # staging left by interrupted runs; never a live run's
        with hard_stop("tagger tag", on_interrupt) if local else nullcontext():
            printer = ProgressPrinter(progress_dir, style=progress) if progress_dir and progress.enabled else None
            with printer or nullcontext():
                result = _start(pipeline, runner_name, local)
                result.wait_until_finish()
    finally:
        shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)  # Pipeline.run only removes it if it ran
        discard_preloaded()
        if already_tagged:
            already_tagged.release()
        if run_lock:
            run_lock.release()

    manifest_path = storage.join(output, manifest_name(info.run_id))
    if not storage.exists(manifest_path):
        raise UserError(f"run {info.run_id} finished without a manifest; its output is not visible")
    manifest = RunManifest.from_json(storage.read_bytes(manifest_path))
    return TagResult(manifest=manifest, metrics=_counters(result), orphans_removed=orphans)


@dataclass(frozen=True)
class InputLimits:
    """What one input may cost: bytes read, seconds reading, bytes decoding, pixels."""

    max_bytes: int = DEFAULT_MAX_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_pixels: int | None = None


def build_tagging(
    pipeline: beam.Pipeline,
    matching: MatchInputs,
    card: ModelCard,
    handler: CardModelHandler,
    info: RunInfo,
    already_tagged: AlreadyTagged | None = None,
    progress_dir: str | None = None,
    limits: InputLimits = InputLimits(),
) -> None:
    """Add the whole job to ``pipeline``: match, read, tag, write tags and dead letters, commit the run."""
    pixels = {"max_pixels": limits.max_pixels} if limits.max_pixels else {}
    uris = pipeline | "MatchInputs" >> matching
    images, read_failed, skipped = uris | "ReadImages" >> ReadImages(
        already_tagged, progress_dir, limits.max_bytes, limits.read_timeout)
    tagged, tag_failed = images | "TagImages" >> TagImages(
        card, handler, max_decoded_bytes=limits.max_decoded_bytes, **pixels)
    failed = (read_failed, tag_failed) | "Failures" >> beam.Flatten()
    written = (
        tagged | "WriteTags" >> WriteRows("tags", info.staging, info.run_id, progress_dir),
        failed | "WriteDeadLetters" >> WriteRows("failed", info.staging, info.run_id, progress_dir),
    ) | "Written" >> beam.Flatten()
    _ = (written, uris, skipped) | "CommitRun" >> CommitRun(info)


def _start(pipeline: beam.Pipeline, runner_name: str, local: bool):
    """``pipeline.run()``; a runner that cannot even start (a job-server jar or Prism binary it cannot
    download, an unreachable cluster) fails in one line saying so instead of a traceback."""
    if local:
        return pipeline.run()
    try:
        return pipeline.run()
    except Exception as exc:
        LOG.debug("runner %s failed to start", runner_name, exc_info=True)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"--runner={runner_name} could not start the job: {type(exc).__name__}: {detail[:300]}"
                        ) from exc


def _local_runner():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def _counters(result) -> dict[str, int]:
    """Beam counters of the run as {"namespace:name": value} (empty if the runner cannot report them)."""
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # some runners do not support metric queries
        return {}
    out: dict[str, int] = {}
    for c in counters:
        key = f"{c.key.metric.namespace}:{c.key.metric.name}"
        out[key] = out.get(key, 0) + int(c.committed if c.committed is not None else c.attempted or 0)
    return out
