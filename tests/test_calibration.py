"""Threshold calibration against hand-worked examples."""
from __future__ import annotations

import numpy as np
import pytest

from models.training.calibrate import best_f1_threshold, calibrate


def test_f1_max_threshold_sits_between_the_chosen_score_and_the_next_lower_one():
    # cuts: 0.9 F1 .5 | 0.8 F1 .8 | 0.7 F1 .667 | 0.6 F1 6/7 (P 3/4, R 1) | 0.2 F1 .75  -> best at 0.6
    y = np.array([1, 1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    threshold, f1 = best_f1_threshold(y, s)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.4)  # (0.6 + 0.2) / 2


def test_rare_class_falls_back_to_the_global_threshold():
    # class "common": 3 positives at >= 0.85, negatives <= 0.7 -> own cut at 0.85, midpoint with 0.7 = 0.775
    # class "rare": 1 positive (< min_support 3) -> global threshold. Every positive in either class is >= 0.85
    # and every negative <= 0.7, so both classes' F1 (and their macro mean) is 1 for any grid value in
    # (0.70, 0.85]; the one nearest 0.5 is 0.71.
    targets = np.array([[1, 0], [1, 1], [1, 0], [0, 0], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.86, 0.85], [0.85, 0.3], [0.7, 0.7], [0.1, 0.6]])
    cal = calibrate(targets, probs, min_support=3)
    assert cal.source == ["class", "global"]
    assert cal.global_threshold == pytest.approx(0.71)
    assert cal.thresholds == pytest.approx([0.775, 0.71])


def test_calibrated_thresholds_beat_a_fixed_half_when_scores_are_shifted():
    # a model whose scores are systematically low: at 0.5 it predicts nothing, calibration recovers the ranking
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < 0.3).astype(float)
    probs = np.clip(0.1 + 0.25 * targets + 0.05 * rng.standard_normal(targets.shape), 0, 1)
    cal = calibrate(targets, probs)
    from models.training.metrics import threshold_metrics

    assert threshold_metrics(targets, probs, 0.5)["macro_f1"] == 0.0
    assert threshold_metrics(targets, probs, cal.thresholds)["macro_f1"] > 0.95
