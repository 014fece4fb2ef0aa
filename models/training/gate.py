"""The promotion gate: a new version replaces ``production`` only if it beats it on the SAME test split.

The production model is evaluated here and now, with onnxruntime and its own card's preprocessing, on the new
run's test images; the scores stored in old cards are never compared, as they come from other splits. Classes
are matched by name and both models are scored on the classes they share.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from models import storage
from models.registry import PRODUCTION, Registry, RegistryError
from models.training.inference import predict
from models.training.metrics import mean_average_precision
from pipelines.decode import DecodeError, decode_image
from pipelines.preprocess import draft_size_for, preprocess


def evaluate_production(registry: Registry, name: str, test_paths: Sequence[str], test_targets: np.ndarray,
                        classes: Sequence[str]) -> dict | None:
    """Production's mAP on these test images, or None if there is no production model.

    Returns ``{"version", "mAP", "classes"}`` (indices of our classes it was scored on) or ``{"error": ...}``
    when the production artifact cannot be loaded or run.
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
    return {"version": version, "mAP": float(m_ap), "classes": ours}


def decide(new_probs: np.ndarray, test_targets: np.ndarray, production: dict | None) -> dict:
    """The gate record stored in the card (and printed): decision, reason and both scores."""
    own, _ = mean_average_precision(test_targets, new_probs)
    if production is None:
        return {"decision": "promote", "reason": "no production model yet", "new_mAP": _f(own),
                "production_version": None, "production_mAP": None}
    if "error" in production:
        return {"decision": "keep", "reason": f"production {production['version']} could not be evaluated "
                f"({production['error']}); not replacing it automatically", "new_mAP": _f(own),
                "production_version": production["version"], "production_mAP": None}
    cols = production["classes"]
    new_map, _ = mean_average_precision(test_targets[:, cols], new_probs[:, cols])
    better = new_map > production["mAP"]
    return {
        "decision": "promote" if better else "keep",
        "reason": ("beats" if better else "does not beat") + f" production {production['version']} on the same "
        f"test split ({len(test_targets)} images, {len(cols)} shared classes)",
        "new_mAP": _f(new_map),
        "production_version": production["version"],
        "production_mAP": _f(production["mAP"]),
        "classes_compared": len(cols),
    }


def describe(gate: dict) -> str:
    new, prod = (f"{v:.4f}" if isinstance(v, float) else "n/a" for v in (gate["new_mAP"], gate["production_mAP"]))
    return (f"gate: {gate['decision'].upper()} - new mAP {new} vs production "
            f"{gate.get('production_version') or '(none)'} mAP {prod}: {gate['reason']}")


def _f(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
