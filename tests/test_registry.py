"""The registry: immutable versions, atomic publishing, aliases, and refusing corrupt artifacts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from models.registry import Registry, RegistryError
from schemas.card import ModelCard
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _card(name: str = "tagger") -> ModelCard:
    return ModelCard(name=name, version="", classes=("a", "b"), thresholds={"a": 0.4, "b": 0.6})


def _model_file(tmp_path, content: bytes = b"not really onnx, but bytes to hash") -> str:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    return str(path)


def test_publish_assigns_increasing_immutable_versions(tmp_path, registry_root):
    registry = Registry(registry_root)
    first = registry.publish(_card(), _model_file(tmp_path, b"one"))
    second = registry.publish(_card(), _model_file(tmp_path, b"two"))
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.versions("tagger") == ["v1", "v2"]
    # v1 still holds its own bytes and hash after v2 was published from a file at the same path
    assert open(registry.load("tagger@v1").model_path, "rb").read() == b"one"
    assert registry.card("tagger", "v1").onnx_sha256 != registry.card("tagger", "v2").onnx_sha256


def test_attachments_may_depend_on_the_final_card(tmp_path, registry_root):
    registry = Registry(registry_root)
    card = registry.publish(_card(), _model_file(tmp_path), {"report.html": lambda c: f"<h1>{c.ref}</h1>".encode()})
    report = os.path.join(registry_root, "tagger", card.version, "report.html")
    assert open(report).read() == "<h1>tagger@v1</h1>"


def test_load_refuses_a_corrupted_model(tmp_path, registry_root):
    registry = Registry(registry_root)
    card = registry.publish(_card(), _model_file(tmp_path))
    registry.promote("tagger", card.version)
    with open(os.path.join(registry_root, "tagger", "v1", "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(RegistryError, match="corrupt or was replaced"):
        registry.load("tagger@production")


def test_load_refuses_a_card_that_names_another_version(tmp_path, registry_root):
    registry = Registry(registry_root)
    registry.publish(_card(), _model_file(tmp_path))
    registry.publish(_card(), _model_file(tmp_path))
    v2_card = os.path.join(registry_root, "tagger", "v2", "card.json")
    data = json.load(open(v2_card))
    data["version"] = "v1"
    open(v2_card, "w").write(json.dumps(data))
    with pytest.raises(RegistryError, match="says tagger@v1"):
        registry.load("tagger@v2")


def test_promote_and_rollback_move_the_production_alias(tmp_path, registry_root):
    registry = Registry(registry_root)
    for _ in range(3):
        registry.publish(_card(), _model_file(tmp_path))
    with pytest.raises(RegistryError, match="no 'production' version"):
        registry.resolve("tagger@production")
    registry.promote("tagger", "v1")
    registry.promote("tagger", "v3")
    assert registry.resolve("tagger@production") == ("tagger", "v3")
    assert registry.rollback("tagger") == "v1"
    assert registry.resolve("tagger") == ("tagger", "v1")
    assert [h["version"] for h in registry.alias_history("tagger")] == ["v1", "v3", "v1"]


def test_unknown_references_give_one_line_errors(registry_root):
    registry = Registry(registry_root)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.resolve("tagger@v7")
    with pytest.raises(RegistryError, match="no name"):
        registry.resolve("@production")


def test_failed_publish_leaves_no_version_behind(tmp_path, registry_root):
    registry = Registry(registry_root)
    registry.publish(_card(), _model_file(tmp_path))
    registry.promote("tagger", "v1")

    def broken_report(card: ModelCard) -> bytes:
        raise RuntimeError("report rendering failed")

    with pytest.raises(RuntimeError):
        registry.publish(_card(), _model_file(tmp_path), {"report.html": broken_report})
    assert registry.versions("tagger") == ["v1"]
    assert registry.resolve("tagger@production") == ("tagger", "v1")
    assert [e for e in os.listdir(os.path.join(registry_root, "tagger")) if e.startswith(".staging")] == []
    assert registry.publish(_card(), _model_file(tmp_path)).version == "v2"


def test_publisher_killed_mid_publish_leaves_registry_intact(tmp_path, registry_root):
    """SIGKILL while files are being assembled: earlier versions and the alias survive, nothing half-visible."""
    card = publish_tiny_model(registry_root, CLASSES)
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from models.registry import Registry
        from schemas.card import ModelCard
        def slow_report(card):
            open({str(ready)!r}, "w").close()
            time.sleep(60)
            return b"never"
        card = ModelCard(name="tagger", version="", classes=("a",), thresholds={{"a": 0.5}})
        Registry({registry_root!r}).publish(card, {_model_file(tmp_path)!r}, {{"report.html": slow_report}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "publisher exited before reaching the publish step"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    registry = Registry(registry_root)
    assert registry.versions("tagger") == [card.version]
    loaded = registry.load("tagger@production")
    assert loaded.card.version == card.version
    assert registry.publish(_card(), _model_file(tmp_path)).version == "v2"


def test_concurrent_publishers_never_share_a_version(tmp_path, registry_root):
    registry = Registry(registry_root)
    results: list[str] = []
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        try:
            model = tmp_path / f"m{i}.onnx"
            model.write_bytes(f"model {i}".encode())
            results.append(Registry(registry_root).publish(_card(), str(model)).version)
        except BaseException as exc:  # surface thread failures in the test
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 7)]
    hashes = {registry.card("tagger", v).onnx_sha256 for v in results}
    assert len(hashes) == 6


def test_published_files_are_readable_by_other_users(tmp_path, registry_root):
    registry = Registry(registry_root)
    old = os.umask(0o022)
    try:
        card = registry.publish(_card(), _model_file(tmp_path), {"report.html": b"<html></html>"})
        registry.promote("tagger", card.version)
    finally:
        os.umask(old)
    for rel in ("v1/card.json", "v1/report.html", "v1/model.onnx", "_aliases/production.json"):
        mode = os.stat(os.path.join(registry_root, "tagger", rel)).st_mode & 0o777
        assert mode == 0o644, f"{rel} has mode {oct(mode)}"
