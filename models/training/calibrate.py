"""Per-class decision thresholds chosen on validation data to maximise F1.

A class with fewer than ``min_support`` validation positives gets the global threshold instead (the single
threshold that maximises macro-F1 over the classes present in validation): an F1-optimal cut on one or two
examples is noise. Macro rather than micro, because micro-F1 is dominated by the frequent classes, which
have their own thresholds anyway, while the fallback serves the rare ones.
Each threshold sits halfway between the chosen score and the next lower one, so it does not hug the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.training.metrics import counts_at, f1_from_counts, pr_curve

DEFAULT_MIN_SUPPORT = 3
GLOBAL_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


@dataclass(frozen=True)
class Calibration:
    thresholds: list[float]  # class order
    source: list[str]  # "class" (own F1 max) or "global" (fallback)
    global_threshold: float
    min_support: int

    def as_dict(self, classes: Sequence[str]) -> dict:
        return {
            "method": "per-class F1 max on validation, global macro-F1 fallback",
            "min_support": self.min_support,
            "global_threshold": self.global_threshold,
            "fallback_classes": [c for c, s in zip(classes, self.source) if s == "global"],
        }


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score >= threshold``; the first (highest) threshold wins ties."""
    precision, recall, cut = pr_curve(y_true, scores)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    k = int(np.argmax(f1))
    lower = cut[k + 1] if k + 1 < len(cut) else 0.0
    return float((cut[k] + lower) / 2), float(f1[k])


def global_threshold(targets: np.ndarray, probs: np.ndarray, grid: np.ndarray = GLOBAL_GRID) -> float:
    """The grid threshold with the best macro-F1 over classes with positives (ties: the one nearest 0.5)."""
    present = targets.sum(axis=0) > 0
    if not present.any():
        return 0.5
    best, best_f1 = 0.5, -1.0
    for t in sorted(grid, key=lambda g: abs(g - 0.5)):
        tp, fp, fn = counts_at(targets[:, present], probs[:, present] >= t)
        f1 = float(f1_from_counts(tp, fp, fn).mean())
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


def calibrate(targets: np.ndarray, probs: np.ndarray, min_support: int = DEFAULT_MIN_SUPPORT) -> Calibration:
    fallback = global_threshold(targets, probs)
    thresholds, source = [], []
    for c in range(targets.shape[1]):
        if int(targets[:, c].sum()) >= min_support:
            t, _ = best_f1_threshold(targets[:, c], probs[:, c])
            thresholds.append(float(np.clip(t, 0.0, 1.0)))
            source.append("class")
        else:
            thresholds.append(fallback)
            source.append("global")
    return Calibration(thresholds, source, fallback, min_support)
