"""A real (small, untrained) ONNX model published to a real registry, for tests of the consumers.

Pipelines under test need a model that honours the card contract, not a good one: a fixed-seed torch CNN
exported with torch's ONNX exporter, sigmoid inside the graph, dynamic batch. Training quality is tested
separately with the real training job.
"""
from __future__ import annotations

import os
import tempfile

from models.registry import Registry
from schemas.card import ModelCard, Preprocessing


def export_tiny_model(path: str, num_classes: int, input_size: int = 64, seed: int = 0) -> None:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
        nn.Sigmoid(),
    ).eval()
    example = torch.randn(2, 3, input_size, input_size)
    torch.onnx.export(
        model,
        (example,),
        path,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def publish_tiny_model(
    registry_root: str,
    classes: tuple[str, ...],
    *,
    name: str = "tagger",
    input_size: int = 64,
    seed: int = 0,
    threshold: float = 0.5,
    promote: bool = True,
) -> ModelCard:
    """Export, publish and (by default) promote a tiny model; returns its card."""
    registry = Registry(registry_root)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        export_tiny_model(onnx_path, len(classes), input_size, seed)
        card = ModelCard(
            name=name,
            version="",
            classes=tuple(classes),
            thresholds={c: threshold for c in classes},
            preprocessing=Preprocessing(input_size=input_size),
            architecture="tiny-test-cnn",
        )
        card = registry.publish(card, onnx_path, {"report.html": b"<html><body>test model</body></html>"})
    if promote:
        registry.promote(card.name, card.version, reason="test fixture")
    return card
