"""``tagger train`` end to end: data -> split -> fit -> calibrate -> export + parity -> evaluate -> gate -> publish.

Two recipes share everything but the fit: ``probe`` (default; frozen backbone + linear head, k-fold
cross-validated, thresholds calibrated on out-of-fold predictions, see ``probe.py``) and ``finetune`` (the
warm-up + partial fine-tune loop of ``engine.py``, thresholds calibrated on the validation split).

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

from models import storage
from models.registry import Registry
from models.training import architectures, calibrate, data, export, gate, inference, presets, probe, quantize, split
from models.training.engine import TrainConfig, TrainData, choose_threads, fit, predict_torch, seed_everything
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
    recipe: str = "probe"  # probe | finetune
    folds: int = 5  # cross-validation folds (probe recipe)
    head_weight_decay: float = probe.DEFAULT_WEIGHT_DECAY
    flip_tta: bool = False  # mirror-image averaging inside model.onnx: 2x cost, +0.005-0.008 CV mAP on coco128
    promote: bool = False  # a person overrides the gate's comparison with production (never the prior check)
    feedback_as_of: str | None = None  # feedback dataset version (ingest run id); default: its latest
    epochs: int = TrainConfig.epochs
    warmup_epochs: int = TrainConfig.warmup_epochs
    seed: int = 0
    feedback: str | None = None
    image_size: int = architectures.DEFAULT_IMAGE_SIZE
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
        rows = _with_feedback(rows, args.feedback, args.feedback_as_of)
    rows = data.check_rows(rows, report)
    decoded = presets.decode_rows(rows, spec, report)
    data.raise_or_warn(report, args.skip_bad_rows, report_path)
    if report.problems:
        print(f"warning: skipping bad rows: {report.summary()}", file=sys.stderr)
    examples = [data.Example(r.key, r.path, r.labels) for r in rows if r.path in decoded.images]
    if not examples:
        raise data.DataError(f"{manifest}: no usable images")
    return manifest, examples, decoded, report


def _with_feedback(rows: list[data.RawRow], feedback_dir: str, as_of: str | None = None) -> list[data.RawRow]:
    try:
        from feedback_ingest.labels import apply_feedback
    except ImportError as exc:
        raise UserError(f"--feedback needs feedback_ingest.labels.apply_feedback, which is unavailable ({exc})") from exc
    by_path = {r.path: r for r in rows}
    merged = apply_feedback([(r.path, r.labels) for r in rows], feedback_dir, as_of=as_of)
    out = []
    for number, (path, labels) in enumerate(merged, start=1):
        old = by_path.get(path)
        out.append(data.RawRow(old.row if old else len(rows) + number, old.key if old else path, path, frozenset(labels)))
    return out


@dataclass
class Prepared:
    """Everything the recipes and the evaluation need, decoded and split once."""

    manifest: str
    classes: list[str]
    examples: list[data.Example]
    subsets: dict[str, list[str]]
    parts: dict[str, list[data.Example]]
    decoded: presets.Decoded
    test_paths: list[str]
    test_inputs: np.ndarray
    test_targets: np.ndarray
    fingerprint: str
    report: data.DataReport
    split_definition: dict
    spec: Preprocessing | None = None

    @property
    def train(self):
        """The validation split's inputs and targets (``quantize.for_training_job`` re-checks the INT8 variant's
        thresholds on them): images outside the test split, like every calibration set here."""
        from types import SimpleNamespace

        val = self.parts["val"]
        side = self.spec.input_size
        inputs = self.eval_inputs(val, self.spec) if val else np.zeros((0, 3, side, side), np.float32)
        return SimpleNamespace(val_inputs=inputs, val_targets=self.targets(val))

    def targets(self, exs: list[data.Example]) -> np.ndarray:
        return np.array([[c in e.labels for c in self.classes] for e in exs], dtype=np.float32).reshape(
            len(exs), len(self.classes))

    def eval_inputs(self, exs: list[data.Example], spec: Preprocessing) -> np.ndarray:
        return np.stack([presets.eval_array(self.decoded.images[e.path], spec) for e in exs])

    def sha256(self, e: data.Example) -> str:
        return self.decoded.content_sha256[e.path]


def prepare(args: JobArgs, spec: Preprocessing, work_dir: str) -> Prepared:
    """Check and decode the data and split it by content (the test split never moves as data is added)."""
    manifest, examples, decoded, report = load_examples(args, spec, os.path.join(work_dir, "data_report.txt"))
    classes = sorted({t for ex in examples for t in ex.labels})
    if not classes:
        raise data.DataError(f"{manifest}: no image has any tag; nothing to learn")
    definition = split.content_split_definition()
    subsets = split.content_split([e.key for e in examples], [decoded.content_sha256[e.path] for e in examples],
                                  definition)
    by_key = {e.key: e for e in examples}
    parts = {name: [by_key[k] for k in keys] for name, keys in subsets.items()}
    print(f"data: {len(examples)} images, {len(classes)} classes; split "
          + ", ".join(f"{k} {len(v)}" for k, v in parts.items()), flush=True)
    d = Prepared(manifest, classes, examples, subsets, parts, decoded, [e.path for e in parts["test"]],
                 np.zeros(0), np.zeros(0), data.fingerprint(examples, decoded.content_sha256), report, definition, spec)
    d.test_inputs, d.test_targets = d.eval_inputs(parts["test"], spec), d.targets(parts["test"])
    return d


@dataclass
class Trained:
    """What a recipe hands back: the torch model (logits) and how its thresholds were calibrated."""

    model: object
    calibration: calibrate.Calibration
    calibration_targets: np.ndarray  # the images the thresholds were chosen on, and the model's scores there
    calibration_probs: np.ndarray
    calibrated_on: str  # "out-of-fold" or "validation"
    train_targets: np.ndarray  # for the label-prior scorer
    built: architectures.BuiltModel
    info: dict  # recipe-specific facts for card.training
    history: list[dict] = field(default_factory=list)
    cross_validation: dict | None = None
    device: str = "cpu"


def train_probe(args: JobArgs, spec: Preprocessing, d: Prepared) -> Trained:
    """Frozen backbone features once, k-fold CV of the head (quality figure + out-of-fold calibration), then the
    head on every non-test image."""
    arch = architectures.ARCHITECTURES[args.arch]
    if arch.features is None:
        raise UserError(f"--recipe probe needs a backbone with a feature extractor: "
                        f"{', '.join(n for n, a in architectures.ARCHITECTURES.items() if a.features)}")
    seed_everything(args.seed)
    built = architectures.build(args.arch, len(d.classes), pretrained=args.pretrained)
    features = arch.features(built.model)
    train = d.parts["train"] + d.parts["val"]  # everything but the evaluation split
    train.sort(key=lambda e: e.key)
    started = time.perf_counter()
    chunks = [probe.extract(features, d.eval_inputs(train[i : i + 32], spec), mirror=args.flip_tta)
              for i in range(0, len(train), 32)]
    feats = probe.Features(np.concatenate([c.plain for c in chunks]),
                           np.concatenate([c.mirrored for c in chunks]) if args.flip_tta else None)
    extract_seconds = time.perf_counter() - started
    targets = d.targets(train)
    folds = split.content_folds([d.sha256(e) for e in train], args.folds)
    cv = probe.cross_validate(feats, targets, folds, args.head_weight_decay, args.epochs, args.flip_tta)
    calib = calibrate.calibrate(targets, cv.oof_probabilities, args.min_support)
    head = probe.fit_head(feats, targets, args.head_weight_decay, args.epochs, args.seed)
    cv_record = cv.as_dict()
    cv_record["oof_mAP"] = float(evaluate(targets, cv.oof_probabilities, d.classes, calib.thresholds)["mAP"] or 0)
    print(f"cross-validation: mAP {cv.mean:.4f} +- {cv.std:.4f} over {cv.folds} folds of {len(train)} images "
          f"(features {extract_seconds:.0f}s, {len(train) * (1 + args.flip_tta) / max(extract_seconds, 1e-9):.1f} img/s)", flush=True)
    return Trained(probe.build_module(features, head, flip_tta=args.flip_tta), calib, targets,
                   cv.oof_probabilities, "out-of-fold", targets, built,
                   {"recipe": "probe", "flip_tta": args.flip_tta, "head_weight_decay": args.head_weight_decay,
                    "feature_seconds": round(extract_seconds, 1), "train_images": len(train)},
                   cross_validation=cv_record)


def train_finetune(args: JobArgs, spec: Preprocessing, d: Prepared, work_dir: str, progress=None) -> Trained:
    """The fine-tune loop on the train split, early stopping and calibration on the validation split."""
    seed_everything(args.seed)  # the new head's initialisation draws from torch's RNG
    built = architectures.build(args.arch, len(d.classes), pretrained=args.pretrained)
    train = TrainData(
        train_images=np.stack([presets.train_cache_array(d.decoded.images[e.path], spec) for e in d.parts["train"]]),
        train_targets=d.targets(d.parts["train"]),
        val_inputs=d.eval_inputs(d.parts["val"], spec),
        val_targets=d.targets(d.parts["val"]),
    )
    config = TrainConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                         lr=args.lr, patience=args.patience, finetune_fraction=args.finetune_fraction,
                         loss=args.loss, seed=args.seed, device=args.device)
    result = fit(built, train, config, presets.TrainAugment(spec), os.path.join(work_dir, "checkpoint.pt"),
                 job_args=dataclasses.asdict(args), resume_from=args.resume, progress=progress)
    val_probs = predict_torch(result.model, train.val_inputs, "cpu")
    calib = calibrate.calibrate(train.val_targets, val_probs, args.min_support)
    return Trained(result.model, calib, train.val_targets, val_probs, "validation", train.train_targets, built,
                   {"recipe": "finetune", "config": dataclasses.asdict(config), "best_epoch": result.best_epoch,
                    "best_val_mAP": result.best_val_map, "stopped_early": result.stopped_early,
                    "images_per_s_median": result.images_per_s},
                   history=result.history, device=result.device)


def feedback_version(args: JobArgs) -> JobArgs:
    """Pin the feedback dataset version the run reads (its latest committed ingest run, unless given)."""
    if not args.feedback or args.feedback_as_of:
        return args
    from feedback_ingest.dataset import FeedbackDataset

    return dataclasses.replace(args, feedback_as_of=FeedbackDataset(args.feedback).version())


def feedback_lineage(args: JobArgs) -> dict | None:
    """The card's record of which feedback the model learned from: folder, version and every run up to it."""
    if not args.feedback:
        return None
    from feedback_ingest.dataset import FeedbackDataset

    manifests = FeedbackDataset(args.feedback).manifests(args.feedback_as_of) if args.feedback_as_of else []
    return {"dir": os.path.abspath(args.feedback), "version": args.feedback_as_of,
            "runs": [m.get("run_id") for m in manifests],
            "accepted_rows": sum(int((m.get("counts") or {}).get("accepted", 0) or 0) for m in manifests)}


def run(args: JobArgs, progress=None) -> JobResult:
    """``progress``: a pipelines.progress.ProgressStyle for the epoch progress (default: chosen for stderr)."""
    import torch

    if args.recipe not in ("probe", "finetune"):
        raise UserError(f"--recipe {args.recipe!r}: choose probe or finetune")
    started = time.perf_counter()
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    inference.THREADS = threads
    registry = Registry(args.registry)
    parent = registry.alias(args.name)
    work_dir = args.work_dir or os.path.join(
        "var", "train", f"{args.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    )
    args = feedback_version(args)
    arch = architectures.ARCHITECTURES.get(args.arch)
    if arch is None:
        raise UserError(f"unknown architecture {args.arch!r}; choose one of {', '.join(architectures.ARCHITECTURES)}")
    spec = Preprocessing(input_size=args.image_size, mean=arch.mean, std=arch.std)
    d = prepare(args, spec, work_dir)  # writes data_report.txt there only if there are problems
    os.makedirs(work_dir, exist_ok=True)

    fit_started = time.perf_counter()
    trained = (train_probe(args, spec, d) if args.recipe == "probe"
               else train_finetune(args, spec, d, work_dir, progress))
    fit_seconds = time.perf_counter() - fit_started
    calib = trained.calibration

    onnx_path = os.path.join(work_dir, "model.onnx")
    export.export_onnx(trained.model, onnx_path, spec.input_size)
    parity = export.check_parity(onnx_path, trained.model, d.test_inputs)
    test_probs = predict(onnx_path, d.test_inputs)
    test_metrics = evaluate(d.test_targets, test_probs, d.classes, calib.thresholds)
    calib_metrics = evaluate(trained.calibration_targets, trained.calibration_probs, d.classes, calib.thresholds)
    variants, variant_attachments = quantize.for_training_job(onnx_path, d, spec, calib.thresholds, test_metrics,
                                                        args.min_support, args.seed, work_dir,
                                                        quantize.recalibrate_on_validation(args.recipe))

    production = gate.evaluate_production(registry, args.name, d.test_paths, d.test_targets, d.classes)
    prior = gate.prior_probabilities(trained.train_targets, len(d.test_targets))
    decision = gate.decide(test_probs, d.test_targets, production, prior, d.split_definition, force=args.promote,
                           seed=args.seed)
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
            # "validation": where the thresholds were chosen (out-of-fold predictions for the probe recipe)
            "validation": {k: v for k, v in calib_metrics.items() if k != "per_class"} | {"source": trained.calibrated_on},
            "calibration": calib.as_dict(d.classes) | {"calibrated_on": trained.calibrated_on},
            "cross_validation": trained.cross_validation,
            "export_parity_max_abs_diff": parity,
        }),
        split={
            "method": d.split_definition["method"],
            "definition": d.split_definition,
            "seed": args.seed,
            "ratios": {"train": 1 - d.split_definition["test_fraction"] - d.split_definition["val_fraction"],
                       "val": d.split_definition["val_fraction"], "test": d.split_definition["test_fraction"]},
            "counts": {k: len(v) for k, v in d.subsets.items()},
            "trained_on": ["train", "val"] if args.recipe == "probe" else ["train"],
            "test_images": d.subsets["test"],
            "test_sha256": sorted(d.sha256(e) for e in d.parts["test"]),
            "fingerprints": {k: data.keys_fingerprint(v) for k, v in d.subsets.items()},
            "manifest": d.manifest,
        },
        data_fingerprint=d.fingerprint,
        training=json_safe({
            "args": {k: v for k, v in dataclasses.asdict(args).items() if k not in ("registry", "work_dir")},
            **trained.info,
            "feedback": feedback_lineage(args),
            "pretrained_weights": trained.built.weights,
            "warnings": trained.built.warnings,
            "device": trained.device,
            "threads": threads,
            "history": trained.history,
            "fit_seconds": round(fit_seconds, 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "skipped_rows": [p.line() for p in d.report.problems],
        }),
        gate=json_safe(decision),
        library_versions=library_versions(),
        variants=json_safe(variants),
    )
    from models.training.report import render_report

    def report_html(final: ModelCard) -> bytes:
        return render_report(final, trained.history, d.test_targets, test_probs, trained.calibration_probs,
                             trained.calibration_targets)

    final = registry.publish(card, onnx_path, {"report.html": report_html, **variant_attachments})
    promoted = decision["decision"] == "promote"
    if promoted:
        registry.promote(final.name, final.version, reason=decision["reason"])
    cv = trained.cross_validation
    print(f"published {final.ref} ({'promoted to production' if promoted else 'not promoted'}); test mAP "
          f"{_fmt(test_metrics['mAP'])}" + (f", CV mAP {cv['mAP_mean']:.4f} +- {cv['mAP_std']:.4f}" if cv else "")
          + f", macro-F1 {_fmt(test_metrics['macro_f1'])} calibrated vs "
          f"{_fmt(test_metrics['at_0.5']['macro_f1'])} at 0.5; {time.perf_counter() - started:.0f}s; report: "
          f"{storage.join(registry.root, final.name, final.version, 'report.html')}", flush=True)
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
