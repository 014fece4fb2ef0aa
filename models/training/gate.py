"""The promotion gate: a new version replaces ``production`` only if it is better on images neither model saw.

Fairness: production is run here and now, with onnxruntime and its own card's preprocessing, on the new run's
evaluation (test) split; old cards' scores are never compared. The split is a function of image content
(``split.content_split``), so when production's card records the same split definition, no image of this test
split can have been in production's training or calibration data, whatever data was added since. When the
definitions differ (e.g. production predates the content split) that guarantee is gone: the gate says so and
keeps production unless a person passes ``--promote``.

Significance: the mAP difference is bootstrapped over test images (paired resamples, both models on the same
draws); the candidate is promoted only if the 95% interval's lower end is above zero. It must also beat, by the
same rule, the label-prior scorer (each class's training frequency as a constant score): a model that learned
nothing from the pixels is never promoted, not even with ``--promote``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from models import storage
from models.registry import PRODUCTION, Registry, RegistryError
from models.training.inference import predict
from models.training.metrics import bootstrap_maps, mean_average_precision
from pipelines.decode import DecodeError, decode_image
from pipelines.preprocess import draft_size_for, preprocess

RESAMPLES = 1000
CONFIDENCE = 0.95


def evaluate_production(registry: Registry, name: str, test_paths: Sequence[str], test_targets: np.ndarray,
                        classes: Sequence[str]) -> dict | None:
    """Production's probabilities and mAP on these test images, or None if there is no production model.

    Returns ``{"version", "mAP", "classes", "probabilities", "split_definition"}`` (``classes``: indices of our
    classes it was scored on) or ``{"version", "error"}`` when the artifact cannot be loaded or run.
    """
    version = registry.alias(name, PRODUCTION)
    if version is None:
        return None
    try:
        loaded = registry.load(f"{name}@{version}")
        card = loaded.card
        common = [c for c in classes if c in set(card.classes)]
        if not common:
            return {"version": version, "error": "shares no classes with the new model"}
        spec = card.preprocessing
        inputs = np.stack(
            [preprocess(decode_image(storage.read_bytes(p), draft_size=draft_size_for(spec)).image, spec)
             for p in test_paths]
        )
        probs = predict(loaded.model_path, inputs, outputs=card.outputs)
    except (RegistryError, DecodeError, OSError, ValueError, RuntimeError) as exc:
        return {"version": version, "error": f"{type(exc).__name__}: {exc}"}
    ours = [list(classes).index(c) for c in common]
    theirs = [list(card.classes).index(c) for c in common]
    m_ap, _ = mean_average_precision(test_targets[:, ours], probs[:, theirs])
    return {"version": version, "mAP": float(m_ap), "classes": ours, "probabilities": probs[:, theirs],
            "split_definition": (card.split or {}).get("definition")}


def prior_probabilities(train_targets: np.ndarray, n: int) -> np.ndarray:
    """The label-prior scorer: each class's training frequency, the same for every image."""
    return np.tile(train_targets.mean(axis=0), (n, 1))


def compare(targets: np.ndarray, new: np.ndarray, other: np.ndarray, seed: int = 0) -> dict:
    """mAP of both, their difference and its bootstrap interval (paired over images)."""
    maps = bootstrap_maps(targets, [new, other], RESAMPLES, seed)
    diff = maps[0] - maps[1]
    diff = diff[~np.isnan(diff)]
    alpha = (1 - CONFIDENCE) / 2
    a, _ = mean_average_precision(targets, new)
    b, _ = mean_average_precision(targets, other)
    return {"new_mAP": _f(a), "other_mAP": _f(b), "difference": _f(a - b),
            "interval": [_f(float(np.quantile(diff, alpha))), _f(float(np.quantile(diff, 1 - alpha)))]
            if len(diff) else [None, None],
            "confidence": CONFIDENCE, "resamples": RESAMPLES, "images": int(len(targets)),
            "classes": int((targets.sum(axis=0) > 0).sum())}


def decide(new_probs: np.ndarray, test_targets: np.ndarray, production: dict | None, prior_probs: np.ndarray,
           split_definition: dict, force: bool = False, seed: int = 0) -> dict:
    """The gate record stored in the card (and printed): decision, reason, scores and intervals."""
    prior = compare(test_targets, new_probs, prior_probs, seed)
    record = {"new_mAP": prior["new_mAP"], "production_version": None, "production_mAP": None,
              "vs_prior": prior, "forced": force}
    beats_prior = prior["interval"][0] is not None and prior["interval"][0] > 0
    if not beats_prior:
        return record | {"decision": "keep", "reason": (
            f"not better than the label-prior scorer (mAP {_s(prior['new_mAP'])} vs {_s(prior['other_mAP'])}, "
            f"95% interval of the difference {_interval(prior)}); never promoted, --promote or not")}
    if production is None:
        return record | {"decision": "promote", "reason": "no production model yet; beats the label prior"}
    record["production_version"] = production["version"]
    if "error" in production:
        return record | _forced_or_keep(force, f"production {production['version']} could not be evaluated "
                                        f"({production['error']})")
    cols = production["classes"]
    vs = compare(test_targets[:, cols], new_probs[:, cols], production["probabilities"], seed)
    record |= {"new_mAP": vs["new_mAP"], "production_mAP": vs["other_mAP"], "vs_production": vs,
               "classes_compared": len(cols), "same_split_definition": production["split_definition"] == split_definition}
    if not record["same_split_definition"]:
        return record | _forced_or_keep(force, (
            f"production {production['version']} was split differently ({_method(production['split_definition'])} "
            f"vs {_method(split_definition)}), so these {len(test_targets)} test images may be in its training data "
            f"and its score means nothing"))
    lower = vs["interval"][0]
    if lower is not None and lower > 0:
        return record | {"decision": "promote", "reason": (
            f"beats production {production['version']} on the same {len(test_targets)} unseen test images "
            f"({len(cols)} shared classes); 95% interval of the mAP gain {_interval(vs)}")}
    return record | _forced_or_keep(force, (
        f"does not beat production {production['version']} by a margin the data supports on the same "
        f"{len(test_targets)} unseen test images (95% interval of the mAP gain {_interval(vs)})"))


def _forced_or_keep(force: bool, why: str) -> dict:
    if force:
        return {"decision": "promote", "reason": f"promoted by --promote although {why}"}
    return {"decision": "keep", "reason": f"{why}; not replacing it automatically (--promote overrides)"}


def describe(gate: dict) -> str:
    new, prod = (f"{v:.4f}" if isinstance(v, float) else "n/a" for v in (gate["new_mAP"], gate["production_mAP"]))
    return (f"gate: {gate['decision'].upper()} - new mAP {new} vs production "
            f"{gate.get('production_version') or '(none)'} mAP {prod}: {gate['reason']}")


def _method(definition) -> str:
    return definition.get("method", "?") if isinstance(definition, dict) else "no recorded split definition"


def _interval(c: dict) -> str:
    lo, hi = c["interval"]
    return f"[{_s(lo)}, {_s(hi)}]"


def _s(x) -> str:
    return f"{x:+.4f}" if isinstance(x, float) and x < 0 else (f"{x:.4f}" if isinstance(x, float) else "n/a")


def _f(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
