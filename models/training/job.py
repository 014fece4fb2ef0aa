"""``tagger train`` end to end: data -> split -> fit -> calibrate -> export + parity -> evaluate -> gate -> publish.

Test-split numbers are computed from the exported ONNX file with onnxruntime, on inputs prepared by the same
decode + preprocess functions every consumer uses, so anyone holding ``model.onnx`` and ``card.json`` can
reproduce them exactly.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from models.registry import Registry
from models.training import architectures, calibrate, data, export, gate, inference, presets, quantize, split
from models.training.engine import TrainConfig, TrainData, choose_threads, fit, seed_everything
from models.training.inference import predict
from models.training.metrics import evaluate
from schemas.card import ModelCard, Preprocessing
from schemas.errors import UserError


@dataclass(frozen=True)
class JobArgs:
    data: str
    registry: str
    name: str = "tagger"
    arch: str = architectures.DEFAULT_ARCH
    epochs: int = TrainConfig.epochs
    warmup_epochs: int = TrainConfig.warmup_epochs
    seed: int = 0
    feedback: str | None = None
    image_size: int = 192
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    loss: str = TrainConfig.loss
    patience: int = TrainConfig.patience
    finetune_fraction: float = TrainConfig.finetune_fraction
    min_support: int = calibrate.DEFAULT_MIN_SUPPORT
    images: str | None = None  # image root for COCO / VOC annotations
    skip_bad_rows: bool = False
    pretrained: bool = True
    device: str = "auto"
    threads: int | None = None  # CPU threads; None = all cores, or one when the machine is busy
    work_dir: str | None = None
    resume: str | None = None

    @classmethod
    def from_dict(cls, values: dict) -> "JobArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class JobResult:
    card: ModelCard
    promoted: bool
    work_dir: str
    test_paths: list[str] = field(default_factory=list)


def load_examples(args: JobArgs, spec: Preprocessing, report_path: str):
    """Manifest -> checked rows -> decoded images; fails with the data report unless ``skip_bad_rows``."""
    manifest = data.resolve_manifest(args.data)
    report = data.DataReport(source=manifest)
    rows = data.read_manifest(manifest, report, args.images)
    report.rows = len(rows)
    if args.feedback:
        rows = _with_feedback(rows, args.feedback)
    rows = data.check_rows(rows, report)
    decoded = presets.decode_rows(rows, spec, report)
    data.raise_or_warn(report, args.skip_bad_rows, report_path)
    if report.problems:
        print(f"warning: skipping bad rows: {report.summary()}", file=sys.stderr)
    examples = [data.Example(r.key, r.path, r.labels) for r in rows if r.path in decoded.images]
    if not examples:
        raise data.DataError(f"{manifest}: no usable images")
    return manifest, examples, decoded, report


def _with_feedback(rows: list[data.RawRow], feedback_dir: str) -> list[data.RawRow]:
    try:
        from feedback_ingest.labels import apply_feedback
    except ImportError as exc:
        raise UserError(f"--feedback needs feedback_ingest.labels.apply_feedback, which is unavailable ({exc})") from exc
    by_path = {r.path: r for r in rows}
    merged = apply_feedback([(r.path, r.labels) for r in rows], feedback_dir)
    out = []
    for number, (path, labels) in enumerate(merged, start=1):
        old = by_path.get(path)
        out.append(data.RawRow(old.row if old else len(rows) + number, old.key if old else path, path, frozenset(labels)))
    return out


@dataclass
class Prepared:
    """Everything the loop and the evaluation need, decoded and split once."""

    manifest: str
    classes: list[str]
    examples: list[data.Example]
    subsets: dict[str, list[str]]
    test_paths: list[str]
    train: TrainData
    test_inputs: np.ndarray
    test_targets: np.ndarray
    fingerprint: str
    report: data.DataReport


def prepare(args: JobArgs, spec: Preprocessing, work_dir: str) -> Prepared:
    """Check and decode the data, split it, and build the in-memory arrays (decoded images are then dropped)."""
    manifest, examples, decoded, report = load_examples(args, spec, os.path.join(work_dir, "data_report.txt"))
    classes = sorted({t for ex in examples for t in ex.labels})
    if not classes:
        raise data.DataError(f"{manifest}: no image has any tag; nothing to learn")
    subsets = split.iterative_split([e.key for e in examples], [e.labels for e in examples], seed=args.seed)
    by_key = {e.key: e for e in examples}
    parts = {name: [by_key[k] for k in keys] for name, keys in subsets.items()}

    def targets(exs):
        return np.array([[c in e.labels for c in classes] for e in exs], dtype=np.float32)

    def eval_inputs(exs):
        return np.stack([presets.eval_array(decoded.images[e.path], spec) for e in exs])

    train = TrainData(
        train_images=np.stack([presets.train_cache_array(decoded.images[e.path], spec) for e in parts["train"]]),
        train_targets=targets(parts["train"]),
        val_inputs=eval_inputs(parts["val"]),
        val_targets=targets(parts["val"]),
    )
    print(f"data: {len(examples)} images, {len(classes)} classes; split "
          + ", ".join(f"{k} {len(v)}" for k, v in parts.items()), flush=True)
    return Prepared(manifest, classes, examples, subsets, [e.path for e in parts["test"]], train,
                    eval_inputs(parts["test"]), targets(parts["test"]),
                    data.fingerprint(examples, decoded.content_sha256), report)


def run(args: JobArgs) -> JobResult:
    import torch

    started = time.perf_counter()
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    inference.THREADS = threads
    registry = Registry(args.registry)
    parent = registry.alias(args.name)
    work_dir = args.work_dir or os.path.join(
        "var", "train", f"{args.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    )
    spec = Preprocessing(input_size=args.image_size)
    d = prepare(args, spec, work_dir)  # writes data_report.txt there only if there are problems
    os.makedirs(work_dir, exist_ok=True)

    seed_everything(args.seed)  # the new head's initialisation draws from torch's RNG
    built = architectures.build(args.arch, len(d.classes), pretrained=args.pretrained)
    config = TrainConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                         lr=args.lr, patience=args.patience, finetune_fraction=args.finetune_fraction,
                         loss=args.loss, seed=args.seed, device=args.device)
    fit_started = time.perf_counter()
    result = fit(built, d.train, config, presets.TrainAugment(spec), os.path.join(work_dir, "checkpoint.pt"),
                 job_args=dataclasses.asdict(args), resume_from=args.resume)
    fit_seconds = time.perf_counter() - fit_started

    onnx_path = os.path.join(work_dir, "model.onnx")
    export.export_onnx(result.model, onnx_path, spec.input_size)
    parity = export.check_parity(onnx_path, result.model, d.test_inputs)
    val_probs = predict(onnx_path, d.train.val_inputs)
    calib = calibrate.calibrate(d.train.val_targets, val_probs, args.min_support)
    test_probs = predict(onnx_path, d.test_inputs)
    test_metrics = evaluate(d.test_targets, test_probs, d.classes, calib.thresholds)
    val_metrics = evaluate(d.train.val_targets, val_probs, d.classes, calib.thresholds)
    variants, variant_attachments = quantize.for_training_job(onnx_path, d, spec, calib.thresholds, test_metrics,
                                                        args.min_support, args.seed, work_dir)

    production = gate.evaluate_production(registry, args.name, d.test_paths, d.test_targets, d.classes)
    decision = gate.decide(test_probs, d.test_targets, production)
    print(gate.describe(decision), flush=True)

    card = ModelCard(
        name=args.name,
        version="",
        classes=tuple(d.classes),
        thresholds={c: float(t) for c, t in zip(d.classes, calib.thresholds)},
        preprocessing=spec,
        input_name=export.INPUT_NAME,
        output_name=export.OUTPUT_NAME,
        outputs="probabilities",
        parent_version=parent,
        architecture=args.arch,
        metrics=json_safe({
            "test": test_metrics,
            "validation": {k: v for k, v in val_metrics.items() if k != "per_class"},
            "calibration": calib.as_dict(d.classes),
            "export_parity_max_abs_diff": parity,
        }),
        split={
            "method": "iterative-stratification",
            "seed": args.seed,
            "ratios": dict(zip(split.SUBSETS, split.DEFAULT_RATIOS)),
            "counts": {k: len(v) for k, v in d.subsets.items()},
            "test_images": d.subsets["test"],
            "fingerprints": {k: data.keys_fingerprint(v) for k, v in d.subsets.items()},
            "manifest": d.manifest,
        },
        data_fingerprint=d.fingerprint,
        training=json_safe({
            "args": {k: v for k, v in dataclasses.asdict(args).items() if k not in ("registry", "work_dir")},
            "config": dataclasses.asdict(config),
            "pretrained_weights": built.weights,
            "warnings": built.warnings,
            "device": result.device,
            "threads": threads,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_mAP": result.best_val_map,
            "stopped_early": result.stopped_early,
            "images_per_s_median": result.images_per_s,
            "fit_seconds": round(fit_seconds, 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "skipped_rows": [p.line() for p in d.report.problems],
        }),
        gate=decision,
        library_versions=library_versions(),
        variants=json_safe(variants),
    )
    from models.training.report import render_report

    def report_html(final: ModelCard) -> bytes:
        return render_report(final, result.history, d.test_targets, test_probs, val_probs, d.train.val_targets)

    final = registry.publish(card, onnx_path, {"report.html": report_html, **variant_attachments})
    promoted = decision["decision"] == "promote"
    if promoted:
        registry.promote(final.name, final.version, reason=decision["reason"])
    print(f"published {final.ref} ({'promoted to production' if promoted else 'not promoted'}); test mAP "
          f"{_fmt(test_metrics['mAP'])}, macro-F1 {_fmt(test_metrics['macro_f1'])} calibrated vs "
          f"{_fmt(test_metrics['at_0.5']['macro_f1'])} at 0.5; {time.perf_counter() - started:.0f}s", flush=True)
    return JobResult(final, promoted, work_dir, d.test_paths)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow", "image-tagger"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def json_safe(value):
    """NaN (an undefined metric) -> None, recursively: cards are strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "n/a"
