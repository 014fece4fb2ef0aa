"""Out-of-fold predictions for ``label-issues`` and the review simulation: frozen backbone features + a linear head.

cleanlab needs, for every training image, probabilities from a model that did not train on that image. Retraining
the full network k times is what ``tagger train`` would cost k times over; instead the ImageNet MobileNetV2
backbone (offline weights, as training uses) embeds every image once, and a logistic-regression head per class
is fitted k times on the other folds. The same two functions drive the simulation benchmark (bench/), which
retrains the head after every review batch.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from schemas.errors import UserError

log = logging.getLogger(__name__)
FEATURE_SIZE = 224


def backbone_features(paths: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """(n, 1280) pooled MobileNetV2 features of the images that decode, and the paths that did not."""
    import torch

    from models import storage
    from models.training import architectures
    from pipelines.decode import DecodeError, decode_image
    from pipelines.preprocess import draft_size_for, preprocess
    from schemas.card import Preprocessing

    spec = Preprocessing(input_size=FEATURE_SIZE)
    built = architectures.build("mobilenet_v2", 1, pretrained=True)
    if built.weights is None:
        raise UserError("label-issues needs the offline ImageNet weights (run `make install`)")
    backbone = built.model.features.eval()
    inputs, failed = [], []
    for path in paths:
        try:
            inputs.append(preprocess(decode_image(storage.read_bytes(path), draft_size=draft_size_for(spec)).image,
                                     spec))
        except (OSError, DecodeError) as exc:
            log.warning("cannot embed %s: %s", path, exc)
            failed.append(path)
    feats = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.stack(inputs[start:start + batch_size]))
            feats.append(backbone(batch).mean(dim=(2, 3)).numpy())
    return (np.concatenate(feats) if feats else np.zeros((0, 1280), np.float32)), failed


class LinearHead:
    """One balanced logistic regression per class on standardised features; a class with a single label value
    in the training rows predicts that value's rate (there is nothing to learn)."""

    def __init__(self, c: float = 0.1, seed: int = 0) -> None:
        self.c, self.seed = c, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearHead":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        self.scaler = StandardScaler().fit(x)
        xs = self.scaler.transform(x)
        self.models: list = []
        # One BLAS thread: these problems are tiny, and on a busy 2-core machine a thread pool per fit made
        # each class 13x slower (0.4 s vs 0.03 s measured at load 16).
        with threadpool_limits(1):
            for j in range(y.shape[1]):
                column = y[:, j]
                if column.min() == column.max():
                    self.models.append(float(column[0]))
                else:
                    self.models.append(LogisticRegression(C=self.c, class_weight="balanced", max_iter=200,
                                                          random_state=self.seed).fit(xs, column))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        xs = self.scaler.transform(x)
        out = np.empty((len(x), len(self.models)))
        for j, model in enumerate(self.models):
            out[:, j] = model if isinstance(model, float) else model.predict_proba(xs)[:, 1]
        return out


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Probabilities for every row from a head fitted on the other folds (cleanlab's required input)."""
    from sklearn.model_selection import KFold

    if len(x) < folds:
        raise UserError(f"label-issues needs at least {folds} training images, got {len(x)}")
    out = np.zeros(y.shape, dtype=np.float64)
    for train, held in KFold(folds, shuffle=True, random_state=seed).split(x):
        out[held] = LinearHead(seed=seed).fit(x[train], y[train]).predict(x[held])
    return np.clip(out, 1e-4, 1 - 1e-4)
