"""ONNX export: one self-contained file with probabilities and a dynamic batch, and a parity check that bites."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from models.training.export import ExportError, check_parity, export_onnx
from models.training.inference import predict
from pipelines.decode import decode_image
from pipelines.preprocess import preprocess
from schemas.card import Preprocessing
from tests.synthetic import encode, make_sample


def _model(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 6)).eval()


def _real_inputs(n: int = 5, size: int = 48) -> np.ndarray:
    import random

    rng = random.Random(0)
    spec = Preprocessing(input_size=size)
    return np.stack([preprocess(decode_image(encode(make_sample(rng).image)).image, spec) for _ in range(n)])


def test_export_is_one_file_with_probabilities_and_dynamic_batch(tmp_path):
    model = _model()
    path = tmp_path / "model.onnx"
    export_onnx(model, str(path), input_size=48)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    assert proto.graph.output[0].name == "probabilities"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    inputs = _real_inputs(5)
    diff = check_parity(str(path), model, inputs)
    assert diff <= 1e-4
    probs = predict(str(path), inputs, batch_size=3)  # batches of 3 and 2, neither the traced batch of 2 only
    assert probs.shape == (5, 6) and ((probs > 0) & (probs < 1)).all()


def test_parity_check_rejects_an_export_that_drifted_from_the_trained_model(tmp_path):
    import torch

    model = _model()
    path = tmp_path / "model.onnx"
    export_onnx(model, str(path), input_size=48)
    with torch.no_grad():  # the graph on disk no longer matches the weights we would publish
        model[-1].bias[2] += 0.01
    with pytest.raises(ExportError, match=r"max \|diff\| .* > 0.0001"):
        check_parity(str(path), model, _real_inputs(5))
