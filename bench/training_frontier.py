"""The quality/cost frontier of the probe recipe: cross-validated mAP against inference images/s, per backbone and
input size (docs/training.md shows the table and plot this prints and draws).

    python bench/training_frontier.py cv --data ../shared/data/coco128 efficientnet_lite0@320 mobilenet_v2@224 ...
    python bench/training_frontier.py speed efficientnet_lite0@320 mobilenet_v2@192 ...   # FP32 and INT8
    python bench/training_frontier.py plot --out docs/img/training_frontier.svg

``cv`` extracts frozen features once per (backbone, size) into var/bench/features/ (and mirror images: --flip),
then runs the recipe's own 5-fold cross-validation (``probe.cross_validate``, content-hash folds over all images)
for a few head settings; ``speed`` exports each backbone with an 80-class head to ONNX and times onnxruntime on
one thread at batch 32 (median of interleaved repeats; images per CPU-second of the process, so a busy shared
machine does not distort it), also after onnxruntime's static INT8 quantization (QDQ, per-channel, calibrated on
random inputs: a speed figure, not an accuracy one).
Results accumulate in var/bench/frontier.json. Run it with ``nice``: it is CPU-bound for minutes.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.training import architectures, probe, split  # noqa: E402
from models.training.export import export_onnx  # noqa: E402
from pipelines.decode import decode_image  # noqa: E402
from pipelines.preprocess import draft_size_for, preprocess  # noqa: E402
from schemas.card import Preprocessing  # noqa: E402

OUT = os.path.join("var", "bench")
RESULTS = os.path.join(OUT, "frontier.json")


def _spec(arch: str, size: int) -> Preprocessing:
    a = architectures.ARCHITECTURES[arch]
    return Preprocessing(input_size=size, mean=a.mean, std=a.std)


def _load(path: str) -> dict:
    return json.load(open(path)) if os.path.exists(path) else {}


def _save(results: dict) -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(RESULTS + ".tmp", "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=True)
    os.replace(RESULTS + ".tmp", RESULTS)


def features(arch: str, size: int, data: str, rows: list[dict], args) -> tuple[probe.Features, str]:
    cache = os.path.join(OUT, "features", f"{arch}_{size}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        return probe.Features(z["plain"], z["mirrored"] if z["mirrored"].size else None), str(z["seconds"])
    import torch

    torch.set_num_threads(1)
    spec = _spec(arch, size)
    module = architectures.ARCHITECTURES[arch].features(architectures.build(arch, 1).model)
    started = time.perf_counter()
    parts = []
    for i in range(0, len(rows), 32):
        batch = np.stack([preprocess(decode_image(open(os.path.join(data, r["image"]), "rb").read(),
                                                  draft_size=draft_size_for(spec)).image, spec) for r in rows[i:i + 32]])
        parts.append(probe.extract(module, batch, mirror=args.flip))
    seconds = time.perf_counter() - started
    f = probe.Features(np.concatenate([p.plain for p in parts]),
                       np.concatenate([p.mirrored for p in parts]) if args.flip else None)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, plain=f.plain, mirrored=f.mirrored if f.mirrored is not None else np.zeros(0), seconds=seconds)
    return f, f"{seconds:.0f}"


def cmd_cv(args) -> None:
    rows = list(csv.DictReader(open(os.path.join(args.data, "labels.csv"))))
    classes = sorted({t for r in rows for t in r["labels"].split("|") if t})
    targets = np.array([[c in r["labels"].split("|") for c in classes] for r in rows], dtype=np.float32)
    from models.registry import sha256_file

    folds = split.content_folds([sha256_file(os.path.join(args.data, r["image"])) for r in rows], 5)
    results = _load(RESULTS)
    for job in args.jobs:
        arch, size = job.split("@")
        f, seconds = features(arch, int(size), args.data, rows, args)
        for wd in args.weight_decay:
            for tta in (False, True) if args.flip else (False,):
                cv = probe.cross_validate(f, targets, folds, wd, 10, tta)
                key = f"{arch}@{size}" + (" +flip" if tta else "") + (f" wd={wd:g}" if wd != probe.DEFAULT_WEIGHT_DECAY else "")
                results.setdefault(key, {}).update(cv_mAP=cv.mean, cv_sd=cv.std, fold_mAP=cv.fold_mAP,
                                                   arch=arch, size=int(size), flip=tta, weight_decay=wd)
                print(f"{key:40s} CV mAP {cv.mean:.3f} +- {cv.std:.3f} (features {seconds}s)", flush=True)
        _save(results)


def _throughput(path: str, size: int, repeats: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
    sess.run(None, {"images": x})
    rates = []
    for _ in range(repeats):
        # CPU time of this process: with one intra-op thread onnxruntime computes on the calling thread, so this
        # is what an idle core would take, whatever else the shared machine is running (wall time is not).
        t = time.process_time()
        sess.run(None, {"images": x})
        rates.append(32 / (time.process_time() - t))
    return statistics.median(rates)


def _quantize(fp32: str, int8: str, size: int) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.batches = iter([{"images": rng.standard_normal((4, 3, size, size)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    pre = int8 + ".pre.onnx"
    quant_pre_process(fp32, pre)
    quantize_static(pre, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def cmd_speed(args) -> None:
    import torch

    torch.set_num_threads(1)
    results = _load(RESULTS)
    models = {}
    for job in args.jobs:
        arch, size = job.split("@")
        for tta in (False, True) if args.flip else (False,):
            path = os.path.join(OUT, "onnx", f"{arch}_{size}{'_flip' if tta else ''}.onnx")
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                feats = architectures.ARCHITECTURES[arch].features(architectures.build(arch, 1).model)
                dim = feats(torch.zeros(1, 3, 64, 64)).shape[1]
                head = probe.LinearHead(np.zeros((80, dim), np.float32), np.zeros(80, np.float32))
                export_onnx(probe.build_module(feats, head, tta), path, int(size))
            models[f"{arch}@{size}" + (" +flip" if tta else "")] = (path, int(size))
            if args.int8 and not tta:
                q = path[:-5] + ".int8.onnx"
                if not os.path.exists(q):
                    _quantize(path, q, int(size))
                models[f"{arch}@{size} int8"] = (q, int(size))
    rates: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):  # interleaved: each round times every model once
        for key, (path, size) in models.items():
            rates[key].append(_throughput(path, size, args.repeats))
    load = os.getloadavg()[0]
    for key, r in rates.items():
        base = key.replace(" int8", "")
        entry = results.setdefault(base, {})
        field = "int8_images_per_s" if key.endswith(" int8") else "images_per_s"
        entry[field] = statistics.median(r)
        entry[field + "_load"] = round(load, 1)
        print(f"{key:40s} {statistics.median(r):7.1f} images/CPU-s (1 thread, batch 32; load {load:.1f})", flush=True)
    _save(results)


def cmd_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {k: v for k, v in _load(RESULTS).items() if "cv_mAP" in v and "images_per_s" in v and "wd=" not in k}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arch in sorted({v["arch"] for v in results.values()}):
        pts = sorted((v["images_per_s"], v["cv_mAP"], v["cv_sd"], k) for k, v in results.items()
                     if v["arch"] == arch and not v["flip"])
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=arch)
        for x, y, _, k in pts:
            ax.annotate(k.split("@")[1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("inference images per CPU-second (onnxruntime FP32, 1 thread, batch 32; log scale)")
    ax.set_ylabel("5-fold cross-validated mAP (+- 1 sd)")
    ax.set_title("probe recipe on coco128: quality against inference cost")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fig.savefig(args.out, format="svg", metadata={"Date": None})
    print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    cv = sub.add_parser("cv")
    cv.add_argument("--data", default=os.path.join("..", "shared", "data", "coco128"))
    cv.add_argument("--weight-decay", type=float, nargs="+", default=[probe.DEFAULT_WEIGHT_DECAY])
    cv.add_argument("--flip", action="store_true", help="also extract mirror images and score flip TTA")
    cv.add_argument("jobs", nargs="+", help="ARCH@SIZE")
    sp = sub.add_parser("speed")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--int8", action="store_true")
    sp.add_argument("--flip", action="store_true", help="also time the mirror-averaging graphs (2x the work)")
    sp.add_argument("jobs", nargs="+")
    pl = sub.add_parser("plot")
    pl.add_argument("--out", default=os.path.join("docs", "img", "training_frontier.svg"))
    args = p.parse_args()
    if args.cmd == "cv" and not os.path.exists(os.path.join(args.data, "labels.csv")):
        sys.exit(f"skipped: {args.data}/labels.csv not found (the coco128 development set lives in ../shared/data)")
    {"cv": cmd_cv, "speed": cmd_speed, "plot": cmd_plot}[args.cmd](args)


if __name__ == "__main__":
    main()
