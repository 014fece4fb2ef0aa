"""The training job for real on generated images: it learns, its numbers reproduce from the artifact alone,
its card is complete, the gate promotes only improvements, and killed runs leave the registry intact.

These runs use the fine-tune recipe (checkpoints, resume, epochs); the default probe recipe and the weekly
retrain loop are exercised in test_train_retrain.py."""
from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from jobs.cli import main
from models.registry import Registry
from models.training.job import JobArgs, run
from models.training.metrics import mean_average_precision
from pipelines.decode import decode_image
from pipelines.preprocess import draft_size_for, preprocess
from schemas.card import ModelCard
from tests.synthetic import write_dataset

pytestmark = pytest.mark.slow

# Small enough to train in well under a minute on 2 busy cores, big enough to learn shapes and colours.
FINETUNE = dict(recipe="finetune", arch="mobilenet_v2", image_size=64)
GOOD = dict(FINETUNE, epochs=6, warmup_epochs=2, finetune_fraction=1.0)
POOR = dict(FINETUNE, epochs=1, warmup_epochs=1, lr=1e-5)  # one head-only epoch at a tiny LR: ~chance
UNTRAINED = dict(image_size=64, epochs=0)  # the default probe recipe with no optimisation: the label prior


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    write_dataset(str(data), 200, seed=1)
    registry = str(root / "registry")

    def job(name: str, **kw):
        return run(JobArgs(data=str(data), registry=registry, work_dir=str(root / name), **kw))

    small = root / "small"  # for the runs that test crashes, not learning
    write_dataset(str(small), 60, seed=2)
    first = job("first", **UNTRAINED)  # no better than the label prior -> published, never promoted
    good = job("good", **GOOD)  # no production yet and beats the prior -> promoted
    worse = job("worse", **POOR)  # loses to production on the same split -> published, not promoted
    return SimpleNamespace(root=root, data=data, small=small, registry=registry, first=first, good=good, worse=worse)


def _labels(data_dir) -> dict[str, frozenset[str]]:
    with open(os.path.join(data_dir, "labels.csv")) as fh:
        return {r["image"]: frozenset(t for t in r["labels"].split("|") if t) for r in csv.DictReader(fh)}


def test_short_training_run_learns_far_above_chance(trained):
    test = trained.good.card.metrics["test"]
    labels = _labels(trained.data)
    targets = np.array([[c in labels[k] for c in trained.good.card.classes]
                        for k in trained.good.card.split["test_images"]], dtype=float)
    chance, _ = mean_average_precision(targets, np.zeros_like(targets))  # a scorer blind to the image
    assert test["mAP"] > 0.8, test["mAP"]
    assert test["mAP"] > chance + 0.35


def test_plain_onnxruntime_with_only_the_card_reproduces_the_test_numbers(trained):
    import onnxruntime as ort

    directory = os.path.join(trained.registry, "tagger", trained.good.card.version)
    card = ModelCard.from_json(open(os.path.join(directory, "card.json")).read())
    spec = card.preprocessing
    batch = np.stack([
        preprocess(decode_image((trained.data / key).read_bytes(), draft_size=draft_size_for(spec)).image, spec)
        for key in card.split["test_images"]
    ])
    session = ort.InferenceSession(os.path.join(directory, "model.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run([card.output_name], {card.input_name: batch})[0].astype(np.float64)
    assert card.outputs == "probabilities"

    labels = _labels(trained.data)
    truth = np.array([[c in labels[k] for c in card.classes] for k in card.split["test_images"]])
    predicted = probs >= np.array(card.threshold_vector)
    tp, fp, fn = (truth & predicted).sum(), (~truth & predicted).sum(), (truth & ~predicted).sum()
    m_ap, _ = mean_average_precision(truth, probs)
    expected = card.metrics["test"]
    assert expected["n_images"] == len(batch)
    assert m_ap == pytest.approx(expected["mAP"], abs=1e-9)
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(expected["micro_f1"], abs=1e-9)
    assert (predicted == truth).all(axis=1).mean() == pytest.approx(expected["exact_match"], abs=1e-9)
    assert (predicted != truth).mean() == pytest.approx(expected["hamming_loss"], abs=1e-9)


def test_card_and_report_carry_everything_a_consumer_needs(trained):
    card = trained.good.card
    assert card.classes == ("blue", "circle", "green", "red", "square", "triangle")
    assert all(0.0 < t < 1.0 for t in card.threshold_vector)
    assert trained.worse.card.parent_version == card.version and card.created_at and card.architecture
    assert len(card.onnx_sha256) == 64 and len(card.data_fingerprint) == 64
    assert card.split["method"] == "content-sha256-v1" and sum(card.split["counts"].values()) == 200
    assert set(card.library_versions) >= {"torch", "torchvision", "onnx", "onnxruntime", "numpy", "python"}
    assert card.training["pretrained_weights"] == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert [h["epoch"] for h in card.training["history"]][0] == 1 and card.training["best_epoch"] >= 1
    test = card.metrics["test"]
    assert {"mAP", "micro_f1", "macro_f1", "hamming_loss", "exact_match", "at_0.5", "per_class"} <= set(test)
    assert set(test["per_class"]) == set(card.classes)
    assert card.metrics["export_parity_max_abs_diff"] <= 1e-4
    report = open(os.path.join(trained.registry, "tagger", card.version, "report.html")).read()
    assert report.count("<svg") >= 3  # quality (val mAP and loss per epoch), F1 vs threshold, PR curves
    present = [c for c in card.classes if test["per_class"][c]["support"] > 0]
    assert all(f"{c} (n={test['per_class'][c]['support']})" in report for c in present)  # one PR panel per class
    assert "calibrated operating point" in report and "below macro-F1 at a fixed 0.5" in report
    # nothing to fetch: no scripts, no URLs but XML namespace names
    assert "<script" not in report and "https://" not in report
    assert "http://" not in report.replace("http://www.w3.org/2000/svg", "").replace("http://www.w3.org/1999/xlink", "")
    assert card.ref in report


def test_gate_promotes_only_a_model_that_beats_production_on_the_same_split(trained):
    first, good, worse = trained.first.card, trained.good.card, trained.worse.card
    assert (first.version, good.version, worse.version) == ("v1", "v2", "v3")
    assert first.gate["decision"] == "keep" and "label-prior" in first.gate["reason"]
    assert good.gate["decision"] == "promote" and good.gate["production_version"] is None
    assert good.gate["vs_prior"]["interval"][0] > 0
    assert worse.gate["decision"] == "keep" and worse.gate["production_version"] == "v2"
    # production (v2) was re-scored on v3's test split, which is v2's own split (same data and seed):
    assert worse.gate["production_mAP"] == pytest.approx(good.metrics["test"]["mAP"], abs=1e-9)
    assert worse.gate["new_mAP"] < worse.gate["production_mAP"]
    assert (trained.first.promoted, trained.good.promoted, trained.worse.promoted) == (False, True, False)
    registry = Registry(trained.registry)
    assert registry.alias("tagger") == "v2" and registry.versions("tagger") == ["v1", "v2", "v3"]


SLOW_DISK = """
import shutil, sys, time
import models.registry as registry
def slow_copy(src, dst):  # a slow disk: the test kills this process while the version is half assembled
    shutil.copyfile(src, dst)
    time.sleep(300)
registry._copy = slow_copy
from jobs.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(pattern: str, proc: subprocess.Popen, timeout: float = 240) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = glob.glob(pattern)
        if found:
            return found
        assert proc.poll() is None, f"training exited early with {proc.returncode}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{pattern} never appeared")


def _train_args(data, registry: str, work: str, settings: dict) -> list[str]:
    args = ["train", "--data", str(data), "--registry", registry, "--work-dir", work]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def test_training_killed_mid_publish_leaves_registry_readable_and_production_intact(trained, tmp_path):
    registry = str(tmp_path / "registry")
    shutil.copytree(trained.registry, registry)
    before = Registry(registry)
    versions, production = before.versions("tagger"), before.alias("tagger")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DISK, *_train_args(trained.small, registry, str(tmp_path / "w"), POOR)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TAGGER_NO_PROGRESS": "1"})
    staged = _wait_for(os.path.join(registry, "tagger", ".staging-*", "model.onnx"), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert os.path.exists(staged[0])  # it really died half-way through assembling a version

    after = Registry(registry)
    assert after.versions("tagger") == versions and after.alias("tagger") == production
    loaded = after.load("tagger@production")
    assert loaded.card.version == production
    for version in versions:
        after.load(f"tagger@{version}")
    assert main(["models", "list", "--registry", registry]) == 0
    # the next run publishes normally next to the debris
    result = run(JobArgs(data=str(trained.small), registry=registry, work_dir=str(tmp_path / "w2"), **POOR))
    assert result.card.version == f"v{len(versions) + 1}" and after.alias("tagger") == production


def test_resume_continues_a_killed_run_from_its_last_checkpoint(trained, tmp_path, capsys):
    registry, work = str(tmp_path / "registry"), str(tmp_path / "w")
    settings = dict(FINETUNE, epochs=4, warmup_epochs=1)  # killed after epoch 1 (or 2): 2+ epochs to resume
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *_train_args(trained.small, registry, work, settings)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TAGGER_NO_PROGRESS": "1"})
    _wait_for(os.path.join(work, "checkpoint.pt"), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert Registry(registry).names() == []

    assert main(["train", "--resume", os.path.join(work, "checkpoint.pt"), "--registry", registry]) == 0
    out = capsys.readouterr().out
    done = int(out.split("after epoch ")[1].split()[0])
    assert 1 <= done < 4
    card = Registry(registry).card("tagger", "v1")
    assert [h["epoch"] for h in card.training["history"]] == [1, 2, 3, 4]
    assert card.training["args"]["epochs"] == 4 and card.preprocessing.input_size == 64
    assert f"epoch {done + 1}/4" in out and "epoch 1/4" not in out


def test_same_seed_same_model(trained, tmp_path):
    def once(name: str):
        return run(JobArgs(data=str(trained.small), registry=str(tmp_path / name), work_dir=str(tmp_path / f"w{name}"),
                           threads=1, seed=7, **{**POOR, "lr": 1e-3})).card

    a, b = once("a"), once("b")
    assert a.split == b.split and a.data_fingerprint == b.data_fingerprint
    assert [h["loss"] for h in a.training["history"]] == [h["loss"] for h in b.training["history"]]
    assert a.metrics["test"] == b.metrics["test"] and a.thresholds == b.thresholds
