"""Which images a reviewer should see next: pure functions over arrays, shared by the CLI and the benchmark.

Every selector returns ``[(row index, reason dict)]`` in review order; the reason is stored with the queue item
so a reviewer (and whoever audits the loop) can see why an image was chosen.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

STRATEGIES = ("uncertainty", "disagreement", "label-issues", "random")
MEASURES = ("margin", "entropy")
_EPS = 1e-6

Selection = list[tuple[int, dict]]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def threshold_distance(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """|logit(p) - logit(t)| per (image, class): 0 on the decision boundary. Logits, so that 0.02 vs 0.01 counts
    as far apart as 0.5 vs 0.67 would (a rare class's threshold can be 0.05)."""
    return np.abs(_logit(probs) - _logit(thresholds[None, :]))


def centred_entropy(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Binary entropy (bits) per (image, class) after shifting each class so its threshold sits at 0.5."""
    q = 1.0 / (1.0 + np.exp(-(_logit(probs) - _logit(thresholds[None, :]))))
    q = np.clip(q, _EPS, 1 - _EPS)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def uncertainty(
    probs: np.ndarray,
    thresholds: np.ndarray,
    classes: Sequence[str],
    limit: int,
    *,
    measure: str = "margin",
    per_class: int = 1,
) -> Selection:
    """Images whose probabilities lie nearest their class thresholds.

    Quota phase: ``per_class`` rounds in which every class, rarest first (fewest images predicted positive),
    takes the not-yet-chosen image nearest its own threshold, so rare classes get reviewed even when common ones
    dominate the overall ranking. Fill phase: the rest by image score, ``margin`` = distance of the image's most
    uncertain class to its threshold (smaller first), ``entropy`` = summed threshold-centred entropy (larger
    first).
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}")
    n, c = probs.shape
    limit = min(limit, n)
    distance = threshold_distance(probs, thresholds)
    chosen: Selection = []
    taken = np.zeros(n, dtype=bool)
    positives = (probs >= thresholds[None, :]).sum(axis=0)
    rarity = sorted(range(c), key=lambda j: (positives[j], classes[j]))
    for round_ in range(per_class):
        for j in rarity:
            if len(chosen) >= limit:
                return chosen
            order = np.argsort(distance[:, j], kind="stable")
            pick = next((int(i) for i in order if not taken[i]), None)
            if pick is None:
                return chosen
            taken[pick] = True
            chosen.append((pick, {
                "strategy": "uncertainty", "measure": "margin", "phase": "per-class quota", "round": round_ + 1,
                "class": classes[j], "probability": round(float(probs[pick, j]), 6),
                "threshold": round(float(thresholds[j]), 6), "logit_distance": round(float(distance[pick, j]), 4),
                "class_predicted_positive": int(positives[j]),
            }))
    if measure == "margin":
        score = distance.min(axis=1)
        order = np.argsort(score, kind="stable")
    else:
        score = centred_entropy(probs, thresholds).sum(axis=1)
        order = np.argsort(-score, kind="stable")
    nearest = distance.argmin(axis=1)
    for i in order:
        if len(chosen) >= limit:
            break
        if taken[i]:
            continue
        taken[i] = True
        j = int(nearest[i])
        chosen.append((int(i), {
            "strategy": "uncertainty", "measure": measure, "phase": "overall",
            "score": round(float(score[i]), 6), "class": classes[j],
            "probability": round(float(probs[i, j]), 6), "threshold": round(float(thresholds[j]), 6),
        }))
    return chosen


def disagreement(
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    thresholds_a: np.ndarray,
    thresholds_b: np.ndarray,
    classes: Sequence[str],
    limit: int,
    other_version: str,
) -> Selection:
    """Images (already matched by content hash, same class order) whose tag sets differ between two versions:
    most differing tags first, then the largest probability change. Images both versions agree on are never
    chosen."""
    tags_a = probs_a >= thresholds_a[None, :]
    tags_b = probs_b >= thresholds_b[None, :]
    differ = tags_a != tags_b
    count = differ.sum(axis=1)
    change = np.abs(probs_a - probs_b).max(axis=1) if probs_a.size else np.zeros(len(probs_a))
    order = sorted((i for i in range(len(count)) if count[i] > 0), key=lambda i: (-count[i], -change[i], i))
    out: Selection = []
    for i in order[:limit]:
        cols = np.nonzero(differ[i])[0]
        out.append((int(i), {
            "strategy": "disagreement", "other_version": other_version, "tags_changed": int(count[i]),
            "only_this_version": [classes[j] for j in cols if tags_a[i, j]],
            "only_other_version": [classes[j] for j in cols if tags_b[i, j]],
            "max_probability_change": round(float(change[i]), 6),
        }))
    return out


def label_issues(
    labels: np.ndarray,
    oof_probs: np.ndarray,
    classes: Sequence[str],
    limit: int,
    *,
    method: str = "self_confidence",
) -> Selection:
    """Training labels that out-of-fold predictions contradict, found by cleanlab's multi-label
    ``find_label_issues``, most likely issues first. ``labels`` is the 0/1 (image, class) matrix."""
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    given = [list(np.nonzero(row)[0]) for row in labels]
    ranked = find_label_issues(labels=given, pred_probs=oof_probs, multi_label=True,
                               return_indices_ranked_by=method)
    quality = get_label_quality_scores(given, oof_probs)
    out: Selection = []
    for i in ranked[:limit]:
        i = int(i)
        suspects = [classes[j] for j in range(len(classes)) if abs(labels[i, j] - oof_probs[i, j]) > 0.5]
        out.append((i, {
            "strategy": "label-issues", "method": f"cleanlab find_label_issues(multi_label=True, {method})",
            "label_quality": round(float(quality[i]), 6),
            "given_labels": [classes[j] for j in given[i]],
            "contradicted": {classes[j]: round(float(oof_probs[i, j]), 4) for j in range(len(classes))
                             if classes[j] in suspects},
        }))
    return out


def random_control(n: int, limit: int, seed: int) -> Selection:
    """A uniform sample without replacement: the control every other strategy is measured against."""
    rng = np.random.default_rng(seed)
    picks = rng.permutation(n)[: min(limit, n)]
    return [(int(i), {"strategy": "random", "seed": seed}) for i in picks]

