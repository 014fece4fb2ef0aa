"""Tamper evidence: a version whose card or any listed file changed after publishing is refused in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jobs.cli import main
from models.registry import Registry, RegistryError
from pipelines.streaming.hot_model import HotReloadModelHandler
from schemas.card import ModelCard
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")


def _card(name: str = "tagger") -> ModelCard:
    return ModelCard(name=name, version="", classes=("a", "b"), thresholds={"a": 0.4, "b": 0.6})


def _publish(registry_root: str, tmp_path, content: bytes = b"model bytes", **attachments) -> ModelCard:
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    return Registry(registry_root).publish(_card(), str(model), attachments or None)


def _edit_card(registry_root: str, version: str, **changes) -> str:
    path = os.path.join(registry_root, "tagger", version, "card.json")
    data = json.load(open(path))
    data.update(changes)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    return path


def _tagger(*args: str, registry_root: str) -> subprocess.CompletedProcess:
    return subprocess.run([TAGGER, *args, "--registry", registry_root], capture_output=True, text=True, timeout=120)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr.strip()


def test_thresholds_set_to_zero_by_hand_are_refused_everywhere(registry_root, tmp_path):
    """The issue's attack: every threshold 0 in card.json (every image would get every tag)."""
    card = publish_tiny_model(registry_root, CLASSES)
    _edit_card(registry_root, card.version, thresholds={c: 0.0 for c in CLASSES})
    registry = Registry(registry_root)
    for call in (lambda: registry.load("tagger@production"), lambda: registry.card("tagger", card.version),
                 lambda: registry.card_of(f"tagger@{card.version}")):
        with pytest.raises(RegistryError, match="card.json changed after publishing"):
            call()

    shown = _tagger("models", "show", "tagger", registry_root=registry_root)
    assert shown.returncode == 2 and "changed after publishing" in _one_line(shown)
    assert shown.stdout == ""
    images = tmp_path / "images"
    images.mkdir()
    tagged = _tagger("tag", "--input", str(images), "--output", str(tmp_path / "out"), "--model", "tagger",
                     registry_root=registry_root)
    assert tagged.returncode == 2 and "changed after publishing" in _one_line(tagged)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_list_shows_a_tampered_version_as_broken_and_lists_the_rest(registry_root, tmp_path):
    for i in range(3):
        _publish(registry_root, tmp_path, f"model {i}".encode())
    Registry(registry_root).promote("tagger", "v3")
    _edit_card(registry_root, "v2", thresholds={"a": 0.0, "b": 0.0})
    result = _tagger("models", "list", registry_root=registry_root)
    assert result.returncode == 1
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"v1", "v2", "v3"}
    assert "BROKEN" in rows["v2"] and "changed after publishing" in rows["v2"]
    assert "BROKEN" not in rows["v1"] and rows["v3"].split()[2] == "production"
    assert "1 broken entry" in _one_line(result)


def test_list_verify_finds_a_damaged_attachment_that_plain_list_does_not_read(registry_root, tmp_path):
    for i in range(2):
        _publish(registry_root, tmp_path, f"model {i}".encode(), **{"report.html": b"<html></html>"})
    with open(os.path.join(registry_root, "tagger", "v1", "report.html"), "ab") as fh:
        fh.write(b"<script>")
    assert _tagger("models", "list", registry_root=registry_root).returncode == 0  # cards only: fast
    result = _tagger("models", "list", "--verify", registry_root=registry_root)
    assert result.returncode == 1
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert "BROKEN" in rows["v1"] and "report.html is corrupt or was replaced" in rows["v1"]
    assert "BROKEN" not in rows["v2"]


def test_editing_card_and_seal_together_is_caught_by_the_alias(registry_root, tmp_path):
    """A careful forger rewrites the seal too; the production alias recorded the card it was moved to."""
    _publish(registry_root, tmp_path)
    registry = Registry(registry_root)
    registry.promote("tagger", "v1")
    path = _edit_card(registry_root, "v1", thresholds={"a": 0.0, "b": 0.0})
    seal_path = os.path.join(registry_root, "tagger", "_seals", "v1.json")
    seal = json.load(open(seal_path))
    seal["card_sha256"] = __import__("hashlib").sha256(open(path, "rb").read()).hexdigest()
    json.dump(seal, open(seal_path, "w"))
    assert registry.card("tagger", "v1").thresholds["a"] == 0.0  # seal and card agree again...
    with pytest.raises(RegistryError, match="not the one tagger@production was moved to"):
        registry.load("tagger@production")  # ...but not with what production was promoted to
    registry.promote("tagger", "v1", reason="accept the edited thresholds")  # an explicit, recorded act
    assert registry.load("tagger@production").card.thresholds["a"] == 0.0


def test_a_removed_seal_is_refused_and_sealing_is_an_explicit_recorded_act(registry_root, tmp_path):
    _publish(registry_root, tmp_path)
    os.remove(os.path.join(registry_root, "tagger", "_seals", "v1.json"))
    registry = Registry(registry_root)
    with pytest.raises(RegistryError, match="has no seal .*tagger models seal tagger@v1"):
        registry.load("tagger@v1")
    assert main(["models", "seal", "tagger@v1", "--reason", "checked by hand", "--registry", registry_root]) == 0
    assert registry.load("tagger@v1").card.version == "v1"
    assert not registry.seal("tagger", "v1", "again")  # idempotent
    _edit_card(registry_root, "v1", thresholds={"a": 0.0, "b": 0.0})
    with pytest.raises(RegistryError, match="changed after publishing"):
        registry.seal("tagger", "v1", "a seal cannot launder an edit")


def test_sealing_checks_the_files_the_card_lists(registry_root, tmp_path):
    _publish(registry_root, tmp_path)
    os.remove(os.path.join(registry_root, "tagger", "_seals", "v1.json"))
    with open(os.path.join(registry_root, "tagger", "v1", "model.onnx"), "ab") as fh:
        fh.write(b"!")
    with pytest.raises(RegistryError, match="model.onnx is corrupt"):
        Registry(registry_root).seal("tagger", "v1", "trust me")
    assert not os.path.exists(os.path.join(registry_root, "tagger", "_seals", "v1.json"))


@pytest.mark.parametrize("victim", ["report.html", "model.int8.onnx"])
def test_every_file_the_card_lists_is_verified_on_load(registry_root, tmp_path, victim):
    """Attachments and variants (bytes or files) are listed with their sha256 and checked like model.onnx."""
    variant = tmp_path / "variant.onnx"
    variant.write_bytes(b"int8 bytes")
    card = _publish(registry_root, tmp_path, **{"report.html": b"<html></html>", "model.int8.onnx": variant})
    assert set(card.files) == {"model.onnx", "report.html", "model.int8.onnx"}
    registry = Registry(registry_root)
    loaded = registry.load("tagger@v1")
    assert open(loaded.paths["model.int8.onnx"], "rb").read() == b"int8 bytes"
    with open(os.path.join(registry_root, "tagger", "v1", victim), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(RegistryError, match=f"{victim} is corrupt or was replaced"):
        registry.load("tagger@v1")
    os.remove(os.path.join(registry_root, "tagger", "v1", victim))
    with pytest.raises(RegistryError, match=f"{victim} is missing"):
        registry.load("tagger@v1")


def test_hot_reload_never_switches_to_a_tampered_version(registry_root, tiny_model, caplog):
    handler = HotReloadModelHandler(registry_root, "tagger@production", check_interval_s=0)
    model = handler.load_model()
    v2 = publish_tiny_model(registry_root, CLASSES, seed=7)  # promoted
    _edit_card(registry_root, v2.version, thresholds={c: 0.0 for c in CLASSES})
    batch = [np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)]
    assert not handler.maybe_reload(model)
    assert list(handler.run_inference(batch, model))[0].model_id == f"tagger@{tiny_model.version}#fp32"
    assert any("changed after publishing" in r.getMessage() for r in caplog.records)


def test_publishing_with_an_invalid_attachment_name_is_refused(registry_root, tmp_path):
    with pytest.raises(RegistryError, match="not a plain file name"):
        _publish(registry_root, tmp_path, **{"../escape.html": b"x"})
    assert Registry(registry_root).versions("tagger") == []


def test_a_card_edited_on_an_object_store_is_refused(tmp_path, monkeypatch):
    from tests.object_store import SCHEME, InMemoryObjectStore

    monkeypatch.setenv("TAGGER_REGISTRY_LOCK_DIR", str(tmp_path / "locks"))
    InMemoryObjectStore.objects.clear()
    try:
        root = f"{SCHEME}://bucket/registry"
        model = tmp_path / "model.onnx"
        model.write_bytes(b"remote model")
        registry = Registry(root)
        registry.promote("tagger", registry.publish(_card(), str(model)).version)
        key = f"{root}/tagger/v1/card.json"
        data = json.loads(InMemoryObjectStore.objects[key][0])
        data["thresholds"] = {"a": 0.0, "b": 0.0}
        InMemoryObjectStore.objects[key] = (json.dumps(data).encode(), 0.0)
        with pytest.raises(RegistryError, match=f"{key} changed after publishing"):
            registry.load("tagger@production", cache_dir=str(tmp_path / "cache"))
    finally:
        InMemoryObjectStore.objects.clear()


@pytest.mark.slow
def test_training_stops_in_one_line_before_training_on_a_broken_alias(registry_root, tmp_path):
    _publish(registry_root, tmp_path)
    Registry(registry_root).promote("tagger", "v1")
    alias = os.path.join(registry_root, "tagger", "_aliases", "production.json")
    with open(alias, "w") as fh:
        fh.write('{"alias": "production", "version": "v1", "history": "not a list"}')
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("path,labels\n")
    result = _tagger("train", "--data", str(data), "--work-dir", str(tmp_path / "work"), registry_root=registry_root)
    assert result.returncode == 2
    assert f"alias file {alias}: field history: expected a list" in _one_line(result)
    assert not (tmp_path / "work").exists()  # refused before any training work


def test_hot_reload_reports_a_broken_alias_once_and_keeps_serving(registry_root, tiny_model, caplog):
    handler = HotReloadModelHandler(registry_root, "tagger@production", check_interval_s=0)
    model = handler.load_model()
    alias = os.path.join(registry_root, "tagger", "_aliases", "production.json")
    with open(alias, "w") as fh:
        fh.write('"v2"')  # a bare string as the whole alias file
    for _ in range(3):
        assert not handler.maybe_reload(model)
    warnings = [r.getMessage() for r in caplog.records if "reload check failed" in r.getMessage()]
    assert len(warnings) == 1 and alias in warnings[0] and "expected an object" in warnings[0]
    batch = [np.zeros((3, 64, 64), np.float32)]
    assert list(handler.run_inference(batch, model))[0].model_id == f"tagger@{tiny_model.version}#fp32"


@pytest.mark.parametrize("target, content, expected", [
    ("tagger/v1/card.json", None, "field thresholds['circle']: expected a number, got 'abc' (string)"),
    ("tagger/v1/card.json", b"\xff\xfe{", "is not UTF-8 text"),
    ("tagger/_aliases/production.json", b'"v1"', "expected an object, got 'v1' (string)"),
    ("tagger/_aliases/production.json", b'{"version": "v1", "history": 5}', "field history: expected a list"),
])
def test_tag_refuses_malformed_registry_json_in_one_line(registry_root, tiny_model, tmp_path, target, content,
                                                         expected):
    path = os.path.join(registry_root, target)
    if content is None:
        _edit_card(registry_root, "v1", thresholds={**tiny_model.thresholds, "circle": "abc"})
    else:
        with open(path, "wb") as fh:
            fh.write(content)
    result = _tagger("tag", "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"),
                     "--model", "tagger", registry_root=registry_root)
    assert result.returncode == 2
    line = _one_line(result)
    assert path in line and expected in line
