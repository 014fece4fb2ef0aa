"""Simulated review loop on coco128: does uncertainty sampling buy more mAP per reviewed image than random?

Set-up per seed: a stratification-free random split of coco128 into a test set (30%), a small labelled start
set and a pool whose labels are hidden. Each round the strategy picks a batch from the pool, a simulated
reviewer answers with the true labels, the model is retrained on everything labelled so far and test mAP is
measured (macro over classes with test positives, models.training.metrics). Strategies are the very functions
``tagger review queue`` uses (review/strategies.py).

Kept cheap on purpose, and that is part of the result: the model is the frozen ImageNet MobileNetV2 backbone
(offline weights) whose pooled features are computed once and cached, plus a per-class balanced logistic
regression head retrained from scratch each round (review/oof.py); ``tagger train`` fine-tunes the backbone,
which would cost minutes per round. Thresholds for the uncertainty margin are 0.5 (balanced heads).

Second experiment (label issues): every non-test image is labelled but a share of the images has corrupted
labels (one true tag dropped, one wrong tag added); each round the reviewer fixes the batch chosen by
cleanlab on out-of-fold predictions (``label-issues``) or at random; the head is retrained on the fixed labels.

    .venv/bin/python bench/review_simulation.py                      # 5 seeds, plot in docs/review_simulation.png
    .venv/bin/python bench/review_simulation.py --data /work/shared/data/coco128   # data elsewhere
    .venv/bin/python bench/review_simulation.py --seeds 2 --quick    # a smoke run

Needs ../shared/data/coco128 (skips with a message when it is absent).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.training.metrics import mean_average_precision  # noqa: E402
from review import strategies  # noqa: E402
from review.oof import LinearHead, backbone_features, out_of_fold  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data", "coco128")  # the repository's ../shared; --data elsewhere
CACHE = os.path.join(ROOT, "var", "bench", "review")


def load_coco128(root: str) -> tuple[list[str], list[set[str]]]:
    with open(os.path.join(root, "labels.csv")) as fh:
        rows = list(csv.DictReader(fh))
    paths = [os.path.abspath(os.path.join(root, r["image"])) for r in rows]
    return paths, [{t for t in (r["labels"] or "").split("|") if t} for r in rows]


def cached_features(paths: list[str]) -> np.ndarray:
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, f"mobilenet_v2_{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    started = time.perf_counter()
    feats, failed = backbone_features(paths)
    if failed:
        raise SystemExit(f"cannot embed {failed}")
    os.makedirs(CACHE, exist_ok=True)
    np.save(path, feats)
    print(f"features: {feats.shape} in {time.perf_counter() - started:.0f}s (cached in {path})", flush=True)
    return feats


def test_map(x_train, y_train, x_test, y_test, seed) -> float:
    return mean_average_precision(y_test, LinearHead(seed=seed).fit(x_train, y_train).predict(x_test))[0]


def split(n: int, seed: int, test_share: float, start: int):
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_share))
    return order[:n_test], order[n_test:n_test + start], order[n_test + start:]


def active_learning(x, y, classes, seed, strategy, args) -> list[tuple[int, float]]:
    """[(reviewed images, test mAP)] for one strategy and seed. Each round's head is both measured on the test
    set and used to rank the pool."""
    test, labelled, pool = split(len(x), seed, args.test_share, args.start)
    labelled, pool = list(labelled), list(pool)
    thresholds = np.full(len(classes), 0.5)
    curve = []
    reviewed = 0
    while True:
        head = LinearHead(seed=seed).fit(x[labelled], y[labelled])
        curve.append((reviewed, mean_average_precision(y[test], head.predict(x[test]))[0]))
        if reviewed >= args.budget or not pool:
            return curve
        batch = min(args.batch, args.budget - reviewed, len(pool))
        if strategy == "random":
            picks = strategies.random_control(len(pool), batch, seed * 1000 + reviewed)
        else:
            measure = "entropy" if strategy == "uncertainty-entropy" else "margin"
            per_class = 0 if strategy == "uncertainty-entropy" else 1
            picks = strategies.uncertainty(head.predict(x[pool]), thresholds, classes, batch, measure=measure,
                                           per_class=per_class)
        chosen = {pool[i] for i, _ in picks}
        labelled += sorted(chosen)  # the reviewer answers with the true labels
        pool = [i for i in pool if i not in chosen]
        reviewed += len(chosen)


def corrupt(y: np.ndarray, rows: np.ndarray, share: float, rng) -> tuple[np.ndarray, set[int]]:
    """Drop one true tag and add one wrong tag on ``share`` of ``rows``."""
    noisy = y.copy()
    bad = set(int(i) for i in rng.choice(rows, int(round(len(rows) * share)), replace=False))
    for i in bad:
        present = np.nonzero(noisy[i])[0]
        absent = np.nonzero(noisy[i] == 0)[0]
        if len(present):
            noisy[i, rng.choice(present)] = 0
        noisy[i, rng.choice(absent)] = 1
    return noisy, bad


def label_cleaning(x, y, classes, seed, strategy, args) -> tuple[list[tuple[int, float]], list[float]]:
    """[(reviewed images, test mAP)] and the share of each batch that was really corrupted."""
    rng = np.random.default_rng(seed + 7919)
    test, start, pool = split(len(x), seed, args.test_share, args.start)
    train = np.concatenate([start, pool])
    noisy, bad = corrupt(y, train, args.corrupt, rng)
    labels = noisy.copy()
    unreviewed = [int(i) for i in train]
    curve = [(0, test_map(x[train], labels[train], x[test], y[test], seed))]
    hit_rates = []
    reviewed = 0
    while reviewed < args.clean_budget:
        batch = min(args.batch, args.clean_budget - reviewed)
        if strategy == "random":
            picks = [unreviewed[i] for i, _ in strategies.random_control(len(unreviewed), batch, seed * 1000 + reviewed)]
        else:
            oof = out_of_fold(x[train], labels[train], folds=5, seed=seed)
            ranked = strategies.label_issues(labels[train], oof, classes, len(train))
            open_ = set(unreviewed)
            picks = [int(train[k]) for k, _ in ranked if int(train[k]) in open_][:batch]
            if len(picks) < batch:  # cleanlab flagged fewer than a batch: fill at random
                rest = [i for i in unreviewed if i not in picks]
                picks += [rest[i] for i, _ in strategies.random_control(len(rest), batch - len(picks), seed)]
        hit_rates.append(sum(i in bad for i in picks) / len(picks))
        for i in picks:
            labels[i] = y[i]  # the reviewer fixes the labels
        unreviewed = [i for i in unreviewed if i not in set(picks)]
        reviewed += len(picks)
        curve.append((reviewed, test_map(x[train], labels[train], x[test], y[test], seed)))
    return curve, hit_rates


def summarise(curves: dict[str, list[list[tuple[int, float]]]]) -> dict:
    out = {}
    for name, runs in curves.items():
        steps = [n for n, _ in runs[0]]
        values = np.array([[m for _, m in run] for run in runs])
        out[name] = {"reviewed": steps, "median": np.median(values, 0).tolist(), "min": values.min(0).tolist(),
                     "max": values.max(0).tolist(), "runs": values.tolist()}
    return out


def reviews_to_reach(run: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, m in run if m >= target), None)


def print_table(title: str, summary: dict) -> None:
    """A markdown table: test mAP median [min, max] over seeds per number of reviewed images."""
    print(f"\n{title}: test mAP median [min, max] over seeds\n")
    print("| reviewed | " + " | ".join(summary) + " |\n|---:|" + "---|" * len(summary))
    for k, n in enumerate(summary["random"]["reviewed"]):
        print(f"| {n} | " + " | ".join(f"{s['median'][k]:.3f} [{s['min'][k]:.3f}, {s['max'][k]:.3f}]"
                                        for s in summary.values()) + " |")


def plot(al: dict, clean: dict, path: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, data, title in ((axes[0], al, f"Hidden pool: mAP vs reviewed images (start {args.start} labelled)"),
                            (axes[1], clean, f"{int(args.corrupt * 100)}% of images with corrupted labels")):
        for name, s in data.items():
            ax.plot(s["reviewed"], s["median"], marker="o", ms=3, label=f"{name} (median)")
            ax.fill_between(s["reviewed"], s["min"], s["max"], alpha=0.15)
        ax.set_xlabel("reviewed images")
        ax.set_ylabel("test mAP")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"coco128, frozen MobileNetV2 + linear head, {args.seeds} seeds (band: min-max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA, help="coco128 folder with labels.csv (default: ../shared/data/coco128)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--test-share", type=float, default=0.3)
    parser.add_argument("--start", type=int, default=20, help="labelled images before the first review")
    parser.add_argument("--batch", type=int, default=10, help="images reviewed per round")
    parser.add_argument("--budget", type=int, default=100, help="reviews per active-learning run")
    parser.add_argument("--corrupt", type=float, default=0.2, help="share of training images with bad labels")
    parser.add_argument("--clean-budget", type=int, default=60, help="reviews per label-cleaning run")
    parser.add_argument("--quick", action="store_true", help="budget 30, clean budget 20")
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "review_simulation.png"))
    parser.add_argument("--json", default=os.path.join(CACHE, "results.json"))
    args = parser.parse_args()
    # cleanlab warns per round that classes with a handful of examples may hide issues: true, and expected here
    warnings.filterwarnings("ignore", message="May not flag all label issues")
    if args.quick:
        args.budget, args.clean_budget = 30, 20
    if not os.path.isdir(args.data):
        print(f"skipped: {args.data} is absent (development data; pass --data)")
        return 0
    started = time.perf_counter()
    paths, label_sets = load_coco128(args.data)
    classes = tuple(sorted(set().union(*label_sets)))
    y = np.array([[c in s for c in classes] for s in label_sets], dtype=np.int64)
    x = cached_features(paths)

    al = {name: [] for name in ("random", "uncertainty", "uncertainty-entropy")}
    clean = {name: [] for name in ("random", "label-issues")}
    hits = {name: [] for name in clean}
    for seed in range(args.seeds):
        for name in al:
            al[name].append(active_learning(x, y, classes, seed, name, args))
        for name in clean:
            curve, rate = label_cleaning(x, y, classes, seed, name, args)
            clean[name].append(curve)
            hits[name].append(statistics.mean(rate))
        print(f"seed {seed}: " + ", ".join(f"{n} {al[n][-1][-1][1]:.3f}" for n in al) + "; cleaning "
              + ", ".join(f"{n} {clean[n][-1][-1][1]:.3f}" for n in clean) + f" ({time.perf_counter() - started:.0f}s)",
              flush=True)

    al_s, clean_s = summarise(al), summarise(clean)
    plot(al_s, clean_s, args.plot, args)
    print(f"\ncoco128: {len(paths)} images, {len(classes)} classes; {args.seeds} seeds; test {args.test_share:.0%}, "
          f"start {args.start}, batches of {args.batch}; load {os.getloadavg()[0]:.1f}; {platform.node()}")
    print_table("hidden pool", al_s)
    reach = {}
    for name in ("uncertainty", "uncertainty-entropy"):
        counts = [reviews_to_reach(run, rnd[-1][1]) for run, rnd in zip(al[name], al["random"])]
        reach[name] = counts
        print(f"reviews {name} needed to reach random's final mAP (random used {args.budget}), per seed: "
              f"{['never' if c is None else c for c in counts]}")
    print_table("label cleaning", clean_s)
    for name, rates in hits.items():
        print(f"share of reviewed images that were really corrupted, {name}: median {statistics.median(rates):.2f} "
              f"[{min(rates):.2f}, {max(rates):.2f}]")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"args": vars(args), "active_learning": al_s, "cleaning": clean_s, "reach": reach,
                   "corrupted_share_of_picks": hits}, fh, indent=1)
    print(f"\nplot: {args.plot}; numbers: {args.json}; {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
