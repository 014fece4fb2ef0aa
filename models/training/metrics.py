"""Multi-label metrics on (n_images, n_classes) arrays of 0/1 targets and probabilities. Pure numpy.

Averages over classes ("macro") use only the classes with at least one positive in the evaluated set: a class
absent from a small test split has no defined AP or recall and would otherwise count as 0 (or be skipped
inconsistently). The number of classes evaluated is always reported alongside.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over distinct score thresholds of (R_k - R_{k-1}) * P_k (the step-wise area, no interpolation).

    NaN when there is no positive.
    """
    y_true = np.asarray(y_true, dtype=bool)
    positives = int(y_true.sum())
    if positives == 0:
        return math.nan
    precision, recall, _ = pr_curve(y_true, scores)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall when predicting ``score >= t`` for each distinct score ``t`` (descending)."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tp / predicted
    recall = tp / max(int(y.sum()), 1)
    return precision, recall, s[last_of_tie]


def mean_average_precision(targets: np.ndarray, probs: np.ndarray) -> tuple[float, list[float]]:
    """(macro mAP over classes with positives, per-class AP with NaN for classes without positives)."""
    per_class = [average_precision(targets[:, c], probs[:, c]) for c in range(targets.shape[1])]
    defined = [a for a in per_class if not math.isnan(a)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def counts_at(targets: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positives, false positives and false negatives."""
    t, p = targets.astype(bool), predicted.astype(bool)
    return (t & p).sum(axis=0), (~t & p).sum(axis=0), (t & ~p).sum(axis=0)


def f1_from_counts(tp, fp, fn):
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def threshold_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] | float) -> dict:
    """P/R/F1 per class and micro/macro F1, Hamming loss and exact match when predicting ``prob >= threshold``."""
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
    predicted = probs >= thr
    tp, fp, fn = counts_at(targets, predicted)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=(tp + fn) > 0)
    f1 = f1_from_counts(tp, fp, fn)
    support = targets.astype(bool).sum(axis=0)
    evaluated = support > 0
    micro_f1 = float(f1_from_counts(tp.sum(), fp.sum(), fn.sum()))
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "micro_precision": float(tp.sum() / max(tp.sum() + fp.sum(), 1)),
        "micro_recall": float(tp.sum() / max(tp.sum() + fn.sum(), 1)),
        "micro_f1": micro_f1,
        "macro_f1": float(f1[evaluated].mean()) if evaluated.any() else math.nan,
        "hamming_loss": float((predicted != targets.astype(bool)).mean()),
        "exact_match": float((predicted == targets.astype(bool)).all(axis=1).mean()),
    }


def evaluate(targets: np.ndarray, probs: np.ndarray, classes: Sequence[str], thresholds: Sequence[float]) -> dict:
    """The full report for one split: mAP, per-class AP/P/R/F1 at ``thresholds``, and the same at 0.5."""
    m_ap, ap = mean_average_precision(targets, probs)
    calibrated = threshold_metrics(targets, probs, thresholds)
    fixed = threshold_metrics(targets, probs, 0.5)
    per_class = {
        name: {
            "AP": _num(ap[c]),
            "threshold": float(thresholds[c]),
            "precision": calibrated["precision"][c],
            "recall": calibrated["recall"][c],
            "f1": calibrated["f1"][c],
            "support": int(calibrated["support"][c]),
        }
        for c, name in enumerate(classes)
    }
    return {
        "mAP": _num(m_ap),
        "classes_evaluated": int(sum(1 for a in ap if not math.isnan(a))),
        "n_images": int(targets.shape[0]),
        "micro_f1": calibrated["micro_f1"],
        "macro_f1": _num(calibrated["macro_f1"]),
        "micro_precision": calibrated["micro_precision"],
        "micro_recall": calibrated["micro_recall"],
        "hamming_loss": calibrated["hamming_loss"],
        "exact_match": calibrated["exact_match"],
        "at_0.5": {k: _num(fixed[k]) for k in ("micro_f1", "macro_f1", "hamming_loss", "exact_match")},
        "per_class": per_class,
    }


def _num(x: float) -> float | None:
    """JSON-safe: NaN (undefined) becomes None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def weighted_average_precision(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AP of one class under each row of ``weights`` (B, N): image i counted ``weights[b, i]`` times.

    Same step-wise definition as :func:`average_precision` (and scikit-learn's ``average_precision_score`` with
    ``sample_weight``); a bootstrap resample is a row of counts, so all resamples cost one sort. NaN where a row
    has no positive.
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order], np.asarray(weights, dtype=np.float64)[:, order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(w * y, axis=1)[:, last_of_tie]
    predicted = np.cumsum(w, axis=1)[:, last_of_tie]
    positives = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        recall = tp / positives
        ap = np.sum(np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1) * precision, axis=1)
    return np.where(positives[:, 0] > 0, ap, np.nan)


def bootstrap_maps(targets: np.ndarray, models: Sequence[np.ndarray], resamples: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """(len(models), resamples) macro mAPs over the same bootstrap resamples of the images (paired).

    Each resample averages over the classes with a positive in it, for every model alike.
    """
    n = targets.shape[0]
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    out = np.full((len(models), resamples), np.nan)
    if not targets.astype(bool).any(axis=0).any():  # no class has a positive: mAP is undefined everywhere
        return out
    for m, probs in enumerate(models):
        per_class = np.stack([weighted_average_precision(targets[:, c], probs[:, c], weights)
                              for c in range(targets.shape[1]) if targets[:, c].any()], axis=1)
        out[m] = np.nanmean(per_class, axis=1)
    return out
