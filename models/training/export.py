"""Export to one self-contained ONNX file (sigmoid inside, dynamic batch) and prove it matches torch.

Consumers read probabilities straight from the graph, so the card says ``outputs: probabilities``. The parity
check runs the exported file with onnxruntime on real preprocessed images, at a batch size different from the
one used for tracing (which also proves the batch axis is dynamic), and fails the job beyond ``tolerance``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from models.training.inference import predict
from schemas.errors import UserError

OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


class ExportError(UserError):
    """The exported model is unusable or disagrees with the trained model."""


def with_sigmoid(model):
    import torch
    from torch import nn

    class Probabilities(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return torch.sigmoid(self.inner(images))

    return Probabilities(model).eval()


def export_onnx(model, path: str, input_size: int, opset: int = OPSET) -> None:
    """Write ``model`` (logits) as an ONNX graph producing probabilities, with a dynamic batch axis."""
    import onnx
    import torch

    wrapped = with_sigmoid(model).cpu()
    example = torch.zeros(2, 3, input_size, input_size)
    directory = os.path.dirname(os.path.abspath(path))
    before = set(os.listdir(directory))
    with torch.no_grad(), warnings.catch_warnings():
        # the mirror-image TTA is a reversed slice; the exporter notes it cannot constant-fold it (harmless)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            wrapped,
            (example,),
            path,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    stray = set(os.listdir(directory)) - before - {os.path.basename(path)}
    proto = onnx.load(path, load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if stray or external:
        raise ExportError(f"export wrote external data ({sorted(stray) or external[:3]}); expected one file")
    onnx.checker.check_model(proto)
    if proto.opset_import[0].version < OPSET:
        raise ExportError(f"exported opset {proto.opset_import[0].version} < {OPSET}")


def torch_probabilities(model, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    import torch

    model = model.eval().cpu()
    parts = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            parts.append(torch.sigmoid(model(torch.from_numpy(inputs[i : i + batch_size]))).numpy())
    return np.concatenate(parts).astype(np.float64)


def check_parity(onnx_path: str, model, inputs: np.ndarray, tolerance: float = PARITY_TOLERANCE) -> float:
    """Max |p_onnx - p_torch| over ``inputs``; raises :class:`ExportError` above ``tolerance``."""
    if len(inputs) == 0:
        raise ExportError("no images to check the export against")
    expected = torch_probabilities(model, inputs, batch_size=len(inputs))
    actual = predict(onnx_path, inputs, batch_size=max(1, len(inputs) - 1))
    if actual.shape != expected.shape:
        raise ExportError(f"exported model outputs {actual.shape}, torch {expected.shape}")
    diff = float(np.max(np.abs(actual - expected)))
    if not diff <= tolerance:
        raise ExportError(
            f"exported ONNX disagrees with the torch model: max |diff| {diff:.3g} > {tolerance:g} on "
            f"{len(inputs)} real images; refusing to publish"
        )
    return diff
