"""The loop's control flow on a tiny model: early stopping on validation mAP and self-describing checkpoints."""
from __future__ import annotations

import numpy as np

from models.training.architectures import BuiltModel
from models.training.engine import TrainConfig, TrainData, fit, load_checkpoint_args


def _tiny():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.classifier = nn.Sequential(nn.Linear(4, 2))

        def forward(self, x):
            return self.classifier(self.features(x))

    torch.manual_seed(0)
    return BuiltModel(Tiny(), "mobilenet_v2", None, [])  # head prefix "classifier."


def test_early_stopping_keeps_the_best_epoch_and_checkpoints_carry_the_job_args(tmp_path):
    rng = np.random.default_rng(0)
    data = TrainData(
        train_images=rng.integers(0, 255, (8, 3, 12, 12), dtype=np.uint8),
        train_targets=(rng.random((8, 2)) < 0.5).astype(np.float32),
        val_inputs=rng.standard_normal((6, 3, 12, 12)).astype(np.float32),
        val_targets=np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], dtype=np.float32),
    )
    # lr 0: weights never change, so validation mAP never improves after epoch 1 -> stop after `patience` more
    config = TrainConfig(epochs=10, warmup_epochs=0, batch_size=4, lr=0.0, patience=2, finetune_fraction=1.0)
    ckpt = tmp_path / "checkpoint.pt"
    result = fit(_tiny(), data, config, lambda batch: batch.float(), str(ckpt), job_args={"data": "somewhere"})
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.stopped_early and result.best_epoch == 1
    assert load_checkpoint_args(str(ckpt)) == {"data": "somewhere"}


def test_resume_from_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    import pytest

    from schemas.errors import UserError

    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint_args(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint_args(str(tmp_path / "missing.pt"))
