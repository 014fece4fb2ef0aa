"""Shared fixtures. Area-specific fixtures live in the test modules (or tests/<area>_fixtures.py)."""
from __future__ import annotations

import os

import pytest

from tests.synthetic import CLASSES

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture
def registry_root(tmp_path) -> str:
    return str(tmp_path / "registry")


@pytest.fixture
def tiny_model(registry_root):
    """A real ONNX model over the synthetic classes, published and promoted to ``production``."""
    from tests.model_factory import publish_tiny_model

    return publish_tiny_model(registry_root, CLASSES)


def shared_dataset(name: str) -> str:
    """Path of a development dataset in ../shared/data, or skip the test saying why."""
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} is absent (development data, not part of a fresh clone)")
    return path
