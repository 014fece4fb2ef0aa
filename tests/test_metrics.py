"""Metrics against hand calculations on arrays small enough to check on paper."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.training.metrics import average_precision, evaluate, mean_average_precision, threshold_metrics


def test_average_precision_matches_hand_calculation():
    # ranked: 0.9 pos (P=1, R=1/2), 0.8 neg, 0.7 pos (P=2/3, R=1)  ->  AP = 1/2*1 + 1/2*2/3 = 5/6
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)


def test_tied_scores_count_as_one_threshold():
    # both images at 0.5: the only cut predicts both, P = 1/2, R = 1  ->  AP = 1/2 (not 1, whatever the order)
    assert average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_class_without_positives_is_left_out_of_the_mean():
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.3], [0.1, 0.8], [0.8, 0.2]])
    m_ap, per_class = mean_average_precision(targets, probs)
    assert per_class[0] == pytest.approx(1.0) and math.isnan(per_class[1])
    assert m_ap == pytest.approx(1.0)


def test_threshold_metrics_match_hand_counts():
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3]])
    # at 0.5 predictions are [[1,0],[0,1],[1,0]]
    # class 0: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F1 1/2;  class 1: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3
    m = threshold_metrics(targets, probs, 0.5)
    assert m["precision"] == pytest.approx([0.5, 1.0])
    assert m["recall"] == pytest.approx([0.5, 0.5])
    assert m["f1"] == pytest.approx([0.5, 2 / 3])
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # TP 2, FP 1, FN 2 -> 4/7
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["hamming_loss"] == pytest.approx(3 / 6)  # wrong cells: (1,0), (2,0), (2,1)
    assert m["exact_match"] == pytest.approx(1 / 3)  # only row 0 fully right


def test_per_class_thresholds_change_the_decisions():
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3]])
    # class 0 at 0.35 predicts all three (TP 2, FP 1); class 1 at 0.25 predicts rows 1 and 2 (TP 2)
    m = threshold_metrics(targets, probs, [0.35, 0.25])
    assert m["f1"] == pytest.approx([0.8, 1.0])
    report = evaluate(targets, probs, ("a", "b"), [0.35, 0.25])
    assert report["macro_f1"] == pytest.approx(0.9)
    assert report["at_0.5"]["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert report["per_class"]["b"] == pytest.approx(
        {"AP": 1.0, "threshold": 0.25, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    )
