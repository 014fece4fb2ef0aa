"""Losses for imbalanced multi-label data: positive-weighted BCE (default) and asymmetric loss."""
from __future__ import annotations

import numpy as np

LOSSES = ("weighted_bce", "bce", "asymmetric")


def positive_weights(targets: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Per-class negatives/positives, clipped to [1, max_weight]: rare tags count more, never absurdly so."""
    pos = targets.sum(axis=0)
    neg = targets.shape[0] - pos
    return np.clip(neg / np.maximum(pos, 1.0), 1.0, max_weight).astype(np.float32)


def make_loss(name: str, targets: np.ndarray):
    """A callable (logits, targets) -> scalar loss."""
    import torch
    from torch import nn

    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "weighted_bce":
        return nn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(positive_weights(targets)))
    if name == "asymmetric":
        return AsymmetricLoss()
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


class AsymmetricLoss:
    """Ridnik et al. 2021: focus on hard negatives and shift easy ones to zero (``clip``)."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def __call__(self, logits, targets):
        import torch

        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        loss_pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p) ** self.gamma_pos
        loss_neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg**self.gamma_neg
        return -(loss_pos + loss_neg).sum() / logits.shape[0]
