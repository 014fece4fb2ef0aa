"""The registry on an object store (no atomic directory rename): card.json written last marks a version complete."""
from __future__ import annotations

import pytest

from models.registry import Registry, RegistryError
from schemas.card import ModelCard
from tests.object_store import SCHEME, InMemoryObjectStore


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGER_REGISTRY_LOCK_DIR", str(tmp_path / "locks"))  # writers' host-local lock files
    InMemoryObjectStore.objects.clear()
    yield f"{SCHEME}://bucket/registry"
    InMemoryObjectStore.objects.clear()
    InMemoryObjectStore.fail_uploads_ending_with = None


def _card() -> ModelCard:
    return ModelCard(name="tagger", version="", classes=("a", "b"), thresholds={"a": 0.5, "b": 0.5})


def test_publish_load_and_promote_on_an_object_store(tmp_path, bucket):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model bytes")
    registry = Registry(bucket)
    card = registry.publish(_card(), str(model), {"report.html": b"<html></html>"})
    registry.promote("tagger", card.version)
    loaded = registry.load("tagger@production", cache_dir=str(tmp_path / "cache"))
    assert loaded.card.version == "v1"
    assert open(loaded.model_path, "rb").read() == b"model bytes"  # copied locally, hash-verified
    assert registry.names() == ["tagger"]


def test_interrupted_upload_is_invisible_and_alias_survives(tmp_path, bucket):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"v1 bytes")
    registry = Registry(bucket)
    registry.promote("tagger", registry.publish(_card(), str(model)).version)

    InMemoryObjectStore.fail_uploads_ending_with = "/card.json"  # the network dies at the last upload
    with pytest.raises(ConnectionError):
        registry.publish(_card(), str(model), {"report.html": b"<html></html>"})
    InMemoryObjectStore.fail_uploads_ending_with = None
    assert any("/tagger/v2/model.onnx" in p for p in InMemoryObjectStore.objects)  # debris exists...
    assert registry.versions("tagger") == ["v1"]  # ...but no card, so no version
    assert registry.resolve("tagger@production") == ("tagger", "v1")
    assert registry.publish(_card(), str(model)).version == "v3"  # never reuses the debris' number


def test_corrupt_remote_model_is_refused(tmp_path, bucket):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"good")
    registry = Registry(bucket)
    registry.publish(_card(), str(model))
    key = f"{bucket}/tagger/v1/model.onnx"
    InMemoryObjectStore.objects[key] = (b"evil", 0.0)
    with pytest.raises(RegistryError, match="corrupt"):
        registry.load("tagger@v1", cache_dir=str(tmp_path / "cache"))
