"""The promotion gate's rules on known scores: bootstrap AP matches scikit-learn, a model no better than the label
prior is never promoted, a production model split another way is not compared on faith, and a clearly better
model is promoted with an interval that supports it."""
from __future__ import annotations

import numpy as np
import pytest

from models.training import gate
from models.training.metrics import weighted_average_precision
from models.training.split import content_split_definition


def _data(n=120, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, classes)) < 0.3).astype(float)
    good = np.clip(targets * 0.6 + rng.random((n, classes)) * 0.5, 0, 1)  # informative scores
    noise = rng.random((n, classes))  # uninformative scores
    return targets, good, noise


def test_bootstrap_average_precision_is_scikit_learns_with_sample_weights():
    from sklearn.metrics import average_precision_score

    targets, good, _ = _data()
    scores = np.round(good[:, 0], 1)  # ties included
    weights = np.stack([np.bincount(np.random.default_rng(s).integers(0, 120, 120), minlength=120) for s in range(5)])
    ours = weighted_average_precision(targets[:, 0], scores, weights)
    theirs = [average_precision_score(targets[:, 0], scores, sample_weight=w) for w in weights]
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_model_no_better_than_the_label_prior_is_never_promoted_even_by_a_person():
    targets, _, _ = _data()
    prior = gate.prior_probabilities(targets, len(targets))
    decision = gate.decide(prior.copy(), targets, None, prior, content_split_definition(), force=True)
    assert decision["decision"] == "keep" and "label-prior" in decision["reason"]


def test_production_split_another_way_is_not_compared_unless_a_person_promotes():
    targets, good, noise = _data()
    prior = gate.prior_probabilities(targets, len(targets))
    production = {"version": "v1", "mAP": 0.5, "classes": list(range(5)), "probabilities": noise,
                  "split_definition": None}  # a card from before the content split
    kept = gate.decide(good, targets, production, prior, content_split_definition())
    assert kept["decision"] == "keep" and "split differently" in kept["reason"] and "--promote" in kept["reason"]
    assert kept["same_split_definition"] is False
    forced = gate.decide(good, targets, production, prior, content_split_definition(), force=True)
    assert forced["decision"] == "promote" and forced["reason"].startswith("promoted by --promote")


def test_clearly_better_model_is_promoted_and_a_tie_is_kept():
    targets, good, noise = _data()
    prior = gate.prior_probabilities(targets, len(targets))
    definition = content_split_definition()
    production = {"version": "v1", "classes": list(range(5)), "probabilities": noise, "split_definition": definition}
    better = gate.decide(good, targets, production, prior, definition)
    lo, hi = better["vs_production"]["interval"]
    assert better["decision"] == "promote" and 0 < lo <= better["vs_production"]["difference"] <= hi
    same = gate.decide(good, targets, dict(production, probabilities=good.copy()), prior, definition)
    assert same["decision"] == "keep" and "does not beat production v1" in same["reason"]
    assert same["vs_production"]["interval"] == [0.0, 0.0]


def test_test_split_without_any_positive_cannot_promote():
    targets = np.zeros((10, 3))
    prior = gate.prior_probabilities(np.eye(3), 10)
    decision = gate.decide(np.random.default_rng(0).random((10, 3)), targets, None, prior, content_split_definition())
    assert decision["decision"] == "keep" and decision["vs_prior"]["interval"] == [None, None]
