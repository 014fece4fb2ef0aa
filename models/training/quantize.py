"""The INT8 variant of a model: static QDQ quantization with onnxruntime's own tooling, published only with a
quality guarantee.

``quant_pre_process`` (shape inference + graph optimisation), then ``quantize_static`` in QDQ format with
per-channel int8 weights and uint8 activations, calibrated (MinMax) on images of the *training* split. The
variant is evaluated on the test split with the same :func:`~models.training.metrics.evaluate` as the FP32
model and is withheld, with the reason in the card, when its test mAP drops more than ``MAX_MAP_DROP`` or
its decisions at the thresholds drop more than ``MAX_F1_DROP`` in macro- or micro-F1. The head (linear layer,
sigmoid) stays FP32. Thresholds are recalibrated for the variant on the validation split when that raises its
validation macro-F1 (decided on validation, never on test) and the validation split was held out from the
model (not for the probe recipe), and the card says which set it carries.
"""
from __future__ import annotations

import hashlib
import math
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.training import calibrate as threshold_calibration
from models.training.inference import predict
from models.training.metrics import evaluate

VARIANT = "int8"
FILE = "model.int8.onnx"
FP32 = "fp32"
MAX_MAP_DROP = 0.01
MAX_F1_DROP = 0.01
CALIBRATION_IMAGES = 64
SETTINGS = {
    "tool": "onnxruntime.quantization",
    "steps": "quant_pre_process + quantize_static",
    "format": "QDQ",
    "per_channel": True,
    "activations": "QUInt8",
    "weights": "QInt8",
    "calibrate_method": "MinMax",
    "fp32_nodes": "the head: the first Gemm/MatMul and every node after it (linear head, sigmoid)",
}


@dataclass(frozen=True)
class Calibration:
    """The calibration inputs and a fingerprint of exactly which images (by key and content) they are."""

    inputs: np.ndarray
    keys: tuple[str, ...]
    fingerprint: str
    split: str = "train"


@dataclass(frozen=True)
class EvalSet:
    """Preprocessed inputs and 0/1 targets of one split, in card class order."""

    inputs: np.ndarray
    targets: np.ndarray


@dataclass
class VariantResult:
    """``path`` is the quantized file to publish, None when withheld; ``entry`` goes into ``card.variants``."""

    path: str | None
    entry: dict
    test_probs: np.ndarray | None = None


def choose_calibration_keys(train_keys: Sequence[str], n: int = CALIBRATION_IMAGES, seed: int = 0) -> list[str]:
    """Up to ``n`` keys of the training split, a seeded sample independent of the keys' order."""
    keys = sorted(train_keys)
    if len(keys) <= n:
        return keys
    picked = np.random.default_rng(seed).choice(len(keys), size=n, replace=False)
    return [keys[i] for i in sorted(picked.tolist())]


def calibration_fingerprint(keys: Sequence[str], content_sha256: Sequence[str]) -> str:
    """sha256 over the sorted (key, content sha256) pairs: names *and* bytes of the calibration images."""
    digest = hashlib.sha256()
    for key, sha in sorted(zip(keys, content_sha256)):
        digest.update(f"{key}\t{sha}\n".encode())
    return digest.hexdigest()


def load_calibration(keys: Sequence[str], paths: Sequence[str], spec) -> Calibration:
    """Decode and preprocess the calibration images exactly as every consumer does (draft decode included)."""
    from models import storage
    from pipelines.decode import decode_image
    from pipelines.preprocess import draft_size_for, preprocess

    inputs, hashes = [], []
    for path in paths:
        data = storage.read_bytes(path)
        hashes.append(hashlib.sha256(data).hexdigest())
        inputs.append(preprocess(decode_image(data, draft_size=draft_size_for(spec)).image, spec))
    return Calibration(np.stack(inputs), tuple(keys), calibration_fingerprint(keys, hashes))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a stack of inputs, in small batches."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch_size: int = 8) -> None:
        self.batches = iter([{input_name: inputs[i : i + batch_size]} for i in range(0, len(inputs), batch_size)])

    def get_next(self):
        return next(self.batches, None)

    def rewind(self) -> None:  # part of the protocol; MinMax reads the data once
        pass


def head_nodes(model) -> list[str]:
    """Names of the nodes kept in FP32: the first Gemm/MatMul (the linear head) and every node after it.

    Quantizing them gains nothing (a few thousand MACs against the backbone's hundreds of millions) and costs
    the ranking: QDQ on the sigmoid's output rounds probabilities to steps of 1/255, so the low probabilities
    of rare classes collapse into ties and their AP with them (coco128, EfficientNet-Lite2 probe: test mAP drop
    0.109 with the head quantized, 0.006 with only the sigmoid kept in FP32, 0.0004 with the whole head).
    ONNX graphs are topologically sorted, so "after" is list order.
    """
    nodes = list(model.graph.node)
    first = next((i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul")), None)
    tail = nodes[first:] if first is not None else [n for n in nodes if n.op_type == "Sigmoid"]
    return [n.name for n in tail if n.name]


def quantize(fp32_path: str, out_path: str, calibration: np.ndarray, input_name: str = "images") -> None:
    """Write the static QDQ INT8 model of ``fp32_path`` to ``out_path`` (one self-contained file); the
    backbone runs in INT8, the head (:func:`head_nodes`) stays FP32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("no calibration images")
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        pre = os.path.join(tmp, "preprocessed.onnx")
        quant_pre_process(fp32_path, pre, skip_symbolic_shape=False)
        keep_fp32 = head_nodes(onnx.load(pre))
        quantize_static(
            pre,
            out_path,
            _Reader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_fp32,
            extra_options={"CalibTensorRangeSymmetric": False},
        )


def compare(fp32: dict, int8: dict, classes: Sequence[str]) -> dict:
    """Drops of the variant against FP32 on the same split (positive = the variant is worse)."""

    def drop(a, b):
        return None if a is None or b is None else float(a) - float(b)

    per_class = [
        (c, drop(fp32["per_class"][c]["AP"], int8["per_class"][c]["AP"])) for c in classes
    ]
    defined = [(c, d) for c, d in per_class if d is not None and not math.isnan(d)]
    worst = max(defined, key=lambda cd: cd[1]) if defined else (None, None)
    return {
        "mAP_drop": drop(fp32["mAP"], int8["mAP"]),
        "macro_f1_drop": drop(fp32["macro_f1"], int8["macro_f1"]),
        "micro_f1_drop": drop(fp32["micro_f1"], int8["micro_f1"]),
        "largest_class_ap_drop": {"class": worst[0], "drop": worst[1]},
    }


def withheld_reason(drops: dict, max_map_drop: float = MAX_MAP_DROP, max_f1_drop: float = MAX_F1_DROP) -> str:
    """Why the variant may not be published, or "" if it may."""
    reasons = []
    if drops["mAP_drop"] is None:
        reasons.append("test mAP is undefined (no test positives), so the variant cannot be checked")
    elif drops["mAP_drop"] > max_map_drop:
        reasons.append(f"test mAP drops {drops['mAP_drop']:.4f} > {max_map_drop} against FP32")
    for key, label in (("macro_f1_drop", "macro-F1"), ("micro_f1_drop", "micro-F1")):
        if drops[key] is not None and drops[key] > max_f1_drop:
            reasons.append(f"thresholds do not hold: test {label} drops {drops[key]:.4f} > {max_f1_drop}")
    return "; ".join(reasons)


def build_variant(
    fp32_path: str,
    out_path: str,
    calibration: Calibration,
    val: EvalSet,
    test: EvalSet,
    classes: Sequence[str],
    thresholds: Sequence[float],
    *,
    min_support: int = threshold_calibration.DEFAULT_MIN_SUPPORT,
    input_name: str = "images",
    max_map_drop: float = MAX_MAP_DROP,
    recalibrate: bool = True,
) -> VariantResult:
    """Quantize, evaluate against FP32 with the same code on the same test split, decide publish/withhold."""
    import onnxruntime

    quantize(fp32_path, out_path, calibration.inputs, input_name)
    fp32_test = predict(fp32_path, test.inputs)
    int8_test = predict(out_path, test.inputs)
    int8_val = predict(out_path, val.inputs)
    fp32_metrics = evaluate(test.targets, fp32_test, classes, thresholds)

    # Recalibrate for the variant only if validation says it is better: the test split stays untouched. Not
    # when the validation images trained the model (the probe's head is fitted on train + val, its thresholds
    # out of fold): thresholds fitted on them are fitted to training scores, and comparing them with the FP32
    # thresholds on the same images favours them (coco128: test macro-F1 0.44 -> 0.18).
    kept_f1 = evaluate(val.targets, int8_val, classes, thresholds)["macro_f1"]
    recal_f1, recalibrated = None, False
    if recalibrate:
        recal = threshold_calibration.calibrate(val.targets, int8_val, min_support)
        recal_f1 = evaluate(val.targets, int8_val, classes, recal.thresholds)["macro_f1"]
        recalibrated = recal_f1 is not None and (kept_f1 is None or recal_f1 > kept_f1)
    chosen = list(recal.thresholds) if recalibrated else [float(t) for t in thresholds]
    int8_metrics = evaluate(test.targets, int8_test, classes, chosen)
    drops = compare(fp32_metrics, int8_metrics, classes)
    reason = withheld_reason(drops, max_map_drop)
    diff = np.abs(int8_test - fp32_test)
    entry = {
        "file": FILE,
        "status": "withheld" if reason else "published",
        "withheld_reason": reason,
        "sha256": "",  # filled in from the file by for_training_job; the registry lists it in card.files
        "quantization": {**SETTINGS, "onnxruntime": onnxruntime.__version__},
        "calibration": {
            "split": calibration.split,
            "images": len(calibration.keys),
            "keys": list(calibration.keys),
            "fingerprint": calibration.fingerprint,
        },
        "thresholds": "recalibrated" if recalibrated else "fp32",
        "metrics": {
            "test": {
                "mAP": int8_metrics["mAP"],
                "macro_f1": int8_metrics["macro_f1"],
                "micro_f1": int8_metrics["micro_f1"],
                "n_images": int8_metrics["n_images"],
                "fp32_mAP": fp32_metrics["mAP"],
                "fp32_macro_f1": fp32_metrics["macro_f1"],
                "fp32_micro_f1": fp32_metrics["micro_f1"],
                **drops,
                "mean_abs_prob_diff": float(diff.mean()) if diff.size else None,
                "max_abs_prob_diff": float(diff.max()) if diff.size else None,
            },
            "validation_macro_f1": {"fp32_thresholds": kept_f1, "recalibrated": recal_f1},
        },
    }
    if recalibrated:
        entry["class_thresholds"] = {c: float(t) for c, t in zip(classes, chosen)}
    return VariantResult(None if reason else out_path, entry, int8_test)


def fp32_entry(test_metrics: dict) -> dict:
    """The card's entry for the FP32 model itself (its sha256 is the card's ``onnx_sha256``)."""
    return {
        "file": "model.onnx",
        "status": "published",
        "withheld_reason": "",
        "sha256": "",
        "metrics": {"test": {k: test_metrics.get(k) for k in ("mAP", "macro_f1", "micro_f1", "n_images")}},
    }


def variant_summary(entry: dict) -> str:
    """One line for logs: published with its numbers, or withheld with its reason."""
    test = entry["metrics"]["test"]

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    worst = test["largest_class_ap_drop"]
    numbers = (f"test mAP {f(test['mAP'])} (FP32 {f(test['fp32_mAP'])}), macro-F1 {f(test['macro_f1'])}, "
               f"largest class AP drop {f(worst['drop'])} ({worst['class']}), thresholds {entry['thresholds']}")
    if entry["status"] == "published":
        return f"INT8 variant published: {numbers}"
    return f"INT8 variant withheld: {entry['withheld_reason']} ({numbers})"


def recalibrate_on_validation(recipe: str) -> bool:
    """Whether the validation split is held out from the model (fine-tune: yes; probe: its head trains on it)."""
    return recipe != "probe"


def for_training_job(onnx_path: str, prepared, spec, thresholds: Sequence[float], test_metrics: dict,
                     min_support: int, seed: int, work_dir: str | None = None,
                     recalibrate: bool = True) -> tuple[dict, dict]:
    """``(card.variants, {file name: local file})`` for a version the training job is about to publish: the
    second is what ``Registry.publish`` takes as attachments (it lists and verifies them in ``card.files``).

    Calibration images come from the training split only (a seeded sample of ``CALIBRATION_IMAGES``). A
    quantizer failure withholds the variant with its reason; it never fails the FP32 model's publication.
    """
    from models.registry import sha256_file

    started = time.perf_counter()
    variants: dict = {FP32: {**fp32_entry(test_metrics), "sha256": sha256_file(onnx_path)}}
    by_key = {e.key: e for e in prepared.examples}
    keys = choose_calibration_keys(prepared.subsets["train"], CALIBRATION_IMAGES, seed)
    out_path = os.path.join(work_dir or os.path.dirname(os.path.abspath(onnx_path)), FILE)
    try:
        calib = load_calibration(keys, [by_key[k].path for k in keys], spec)
        result = build_variant(
            onnx_path, out_path, calib,
            EvalSet(prepared.train.val_inputs, prepared.train.val_targets),
            EvalSet(prepared.test_inputs, prepared.test_targets),
            prepared.classes, thresholds, min_support=min_support, recalibrate=recalibrate,
        )
    except Exception as exc:  # the FP32 model is good on its own; say why there is no INT8 variant
        variants[VARIANT] = {"file": FILE, "status": "withheld", "sha256": "",
                             "withheld_reason": f"quantization failed: {type(exc).__name__}: {exc}"[:500]}
        print(f"INT8 variant withheld: {variants[VARIANT]['withheld_reason']}", flush=True)
        return variants, {}
    variants[VARIANT] = {**result.entry, "sha256": sha256_file(result.path) if result.path else "",
                         "seconds": round(time.perf_counter() - started, 1)}
    print(f"{variant_summary(result.entry)}; {variants[VARIANT]['seconds']:.0f}s", flush=True)
    return variants, ({FILE: pathlib.Path(result.path)} if result.path else {})


def quantize_version(registry, ref: str, data: str | None = None, promote: bool = False) -> tuple[object, str]:
    """Quantize an existing version into a new one (same FP32 model and card, plus the INT8 variant).

    The version's training split is reproduced from its data and recorded seed and checked against the
    card's split fingerprints, so calibration stays on training images and evaluation on its test images.
    Returns (new card or None when the variant is withheld, a one-line outcome).
    """
    from models.registry import RegistryError
    from models.training import data as training_data
    from models.training.job import JobArgs, json_safe, prepare

    loaded = registry.load(ref)
    card = loaded.card
    recorded = dict(card.training.get("args") or {})
    source = data or recorded.get("data") or card.split.get("manifest")
    if not source:
        raise RegistryError(f"{card.ref}: its card does not say which data it was trained on; pass --data")
    args = JobArgs.from_dict({**recorded, "data": source, "registry": registry.root})
    with tempfile.TemporaryDirectory(prefix="tagger-quantize-") as work_dir:
        prepared = prepare(args, card.preprocessing, work_dir)
        if tuple(prepared.classes) != tuple(card.classes):
            raise RegistryError(f"{card.ref}: the data at {source} has other classes than the card; pass --data "
                                "with the dataset this version was trained on")
        recorded_fps = card.split.get("fingerprints") or {}
        for subset in ("train", "test"):
            if training_data.keys_fingerprint(prepared.subsets[subset]) != recorded_fps.get(subset):
                raise RegistryError(f"{card.ref}: the data at {source} does not reproduce the version's {subset} "
                                    "split (fingerprint differs); pass --data with the dataset it was trained on")
        fp32_test = evaluate(prepared.test_targets, predict(loaded.model_path, prepared.test_inputs), card.classes,
                             card.threshold_vector)
        variants, files = for_training_job(
            loaded.model_path, prepared, card.preprocessing, card.threshold_vector, fp32_test,
            int(recorded.get("min_support", threshold_calibration.DEFAULT_MIN_SUPPORT)),
            int(card.split.get("seed", recorded.get("seed", 0))), work_dir=work_dir,
            recalibrate=recalibrate_on_validation(recorded.get("recipe", "finetune")),
        )
        if FILE not in files:
            entry = variants[VARIANT]
            why = variant_summary(entry) if "metrics" in entry else f"INT8 variant withheld: {entry['withheld_reason']}"
            return None, f"{card.ref}: {why}; no new version published"
        report = _report_with_variants(registry, card)
        new = card.replace(version="", onnx_sha256="", files={}, created_at="", parent_version=card.version,
                           variants=json_safe(variants),
                           training={**card.training, "quantized_from": card.ref})
        final = registry.publish(new, loaded.model_path, {**({"report.html": report} if report else {}), **files})
    if promote:
        registry.promote(final.name, final.version, reason=f"INT8 variant of {card.ref}")
    return final, f"published {final.ref}: {card.ref} plus its INT8 variant" + (" (promoted)" if promote else "")


def _report_with_variants(registry, card):
    """The source version's report with the variants table added, as a function of the new card."""
    from models import storage
    from models.training.report import variants_section

    path = storage.join(registry.root, card.name, card.version, "report.html")
    if not storage.exists(path):
        return None
    original = storage.read_bytes(path).decode("utf-8", "replace")

    def render(final) -> bytes:
        note = (f"<p>{final.ref} is {card.ref} with an INT8 variant added by tagger models quantize; the "
                f"report below is {card.ref}'s.</p>{variants_section(final)}")
        marker = "<h2>"
        at = original.find(marker)
        return (original[:at] + note + original[at:] if at >= 0 else original + note).encode()

    return render
