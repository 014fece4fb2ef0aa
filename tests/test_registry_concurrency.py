"""Writers of one model take turns: concurrent promotions and publications lose nothing, across processes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from models.registry import Registry
from schemas.card import ModelCard
from tests.object_store import SCHEME, InMemoryObjectStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITERS = 16


def _card() -> ModelCard:
    return ModelCard(name="tagger", version="", classes=("a", "b"), thresholds={"a": 0.4, "b": 0.6})


def _publish_versions(registry: Registry, tmp_path, count: int) -> None:
    for i in range(count):
        model = tmp_path / f"m{i}.onnx"
        model.write_bytes(f"model {i}".encode())
        registry.publish(_card(), str(model))


def _run_together(tmp_path, bodies: list[str]) -> list[subprocess.CompletedProcess]:
    """One Python process per body; all wait for one start signal so that their writes really overlap."""
    go = tmp_path / "go"
    procs = []
    for body in bodies:
        script = textwrap.dedent(f"""
            import os, sys, time
            sys.path.insert(0, {REPO!r})
            from jobs.cli import main
            from models.registry import Registry
            while not os.path.exists({str(go)!r}):
                time.sleep(0.001)
        """) + textwrap.dedent(body)
        procs.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    time.sleep(2.0)  # let every interpreter finish importing and wait at the start line
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.slow
def test_sixteen_concurrent_promotions_lose_no_history(tmp_path, registry_root):
    """The issue's case: 16 concurrent `tagger models promote` calls kept only 8 of 16 history entries."""
    registry = Registry(registry_root)
    _publish_versions(registry, tmp_path, WRITERS)
    bodies = [f"sys.exit(main(['models', 'promote', 'tagger@v{i}', '--reason', 'writer {i}', "
              f"'--registry', {registry_root!r}]))" for i in range(1, WRITERS + 1)]
    results = _run_together(tmp_path, bodies)
    assert [r.returncode for r in results] == [0] * WRITERS, [r.stderr for r in results if r.returncode]
    history = registry.alias_history("tagger")
    assert sorted(h["reason"] for h in history) == sorted(f"writer {i}" for i in range(1, WRITERS + 1))
    # every move starts where the previous one ended: no writer read a stale alias
    assert [h["previous"] for h in history] == [None] + [h["version"] for h in history[:-1]]
    assert registry.alias("tagger") == history[-1]["version"]


@pytest.mark.slow
def test_concurrent_publishing_processes_get_distinct_sealed_versions(tmp_path, registry_root):
    bodies = []
    for i in range(8):
        model = tmp_path / f"p{i}.onnx"
        model.write_bytes(f"publisher {i}".encode())
        bodies.append(f"""
            from schemas.card import ModelCard
            card = ModelCard(name="tagger", version="", classes=("a",), thresholds={{"a": 0.5}})
            print(Registry({registry_root!r}).publish(card, {str(model)!r}).version)
        """)
    results = _run_together(tmp_path, bodies)
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results if r.returncode]
    versions = sorted((r.stdout.strip() for r in results), key=lambda v: int(v[1:]))
    assert versions == [f"v{i}" for i in range(1, 9)]
    registry = Registry(registry_root)
    contents = {open(registry.load(f"tagger@{v}").model_path, "rb").read() for v in versions}
    assert contents == {f"publisher {i}".encode() for i in range(8)}


def test_promotions_on_an_object_store_take_turns_through_the_host_lock(tmp_path, monkeypatch):
    """Object stores have no lock primitive: writers on one host serialise on a local lock file."""
    monkeypatch.setenv("TAGGER_REGISTRY_LOCK_DIR", str(tmp_path / "locks"))
    InMemoryObjectStore.objects.clear()
    try:
        root = f"{SCHEME}://bucket/registry"
        registry = Registry(root)
        _publish_versions(registry, tmp_path, 8)
        errors: list[BaseException] = []

        def promote(i: int) -> None:
            try:
                Registry(root).promote("tagger", f"v{i}", reason=f"writer {i}")
            except BaseException as exc:  # surface thread failures in the test
                errors.append(exc)

        threads = [threading.Thread(target=promote, args=(i,)) for i in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        history = registry.alias_history("tagger")
        assert sorted(h["reason"] for h in history) == sorted(f"writer {i}" for i in range(1, 9))
        assert os.listdir(tmp_path / "locks")  # the lock lives on the host, not in the bucket
    finally:
        InMemoryObjectStore.objects.clear()
