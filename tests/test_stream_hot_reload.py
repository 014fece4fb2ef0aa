"""Hot reload of the model with real onnxruntime and a real registry (no Beam needed)."""
from __future__ import annotations

import numpy as np

from models.registry import Registry
from pipelines.streaming.hot_model import HotReloadModelHandler
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES


def test_handler_follows_production_and_refuses_an_incompatible_version(registry_root, tiny_model):
    handler = HotReloadModelHandler(registry_root, "tagger@production", check_interval_s=0)
    model = handler.load_model()
    batch = [np.random.default_rng(0).random((3, 64, 64), dtype=np.float32), None]
    before = list(handler.run_inference(batch, model))
    assert before[0].model_id == f"tagger@{tiny_model.version}#fp32" and before[1].inference is None

    v2 = publish_tiny_model(registry_root, CLASSES, seed=7)  # promoted
    after = list(handler.run_inference(batch, model))
    assert after[0].model_id == f"tagger@{v2.version}#fp32"
    assert not np.allclose(after[0].inference, before[0].inference)  # really a different network

    v3 = publish_tiny_model(registry_root, CLASSES, seed=8, input_size=32)  # other preprocessing: not hot-swappable
    assert Registry(registry_root).alias("tagger") == v3.version
    assert not handler.maybe_reload(model)
    assert list(handler.run_inference(batch, model))[0].model_id == f"tagger@{v2.version}#fp32"


def test_checks_are_rate_limited(registry_root, tiny_model):
    handler = HotReloadModelHandler(registry_root, "tagger@production", check_interval_s=30)
    model = handler.load_model()
    assert not handler.maybe_reload(model, now=100.0)  # first check: nothing new
    publish_tiny_model(registry_root, CLASSES, seed=3)
    assert not handler.maybe_reload(model, now=110.0)  # within the interval: no registry read
    assert handler.maybe_reload(model, now=131.0)
