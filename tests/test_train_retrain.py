"""The weekly loop end to end: train v1, add data and feedback, retrain v2. The evaluation split is stable and
unseen by both models, the gate re-scores v1 exactly as v1 scores on its own, an untrained candidate is never
promoted, and the card says which feedback version the model learned from."""
from __future__ import annotations

import csv
import os
import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from jobs.cli import main
from models.registry import Registry, sha256_file
from models.training.job import JobArgs, run
from models.training.metrics import mean_average_precision
from pipelines.decode import decode_image
from pipelines.preprocess import draft_size_for, preprocess
from tests.synthetic import encode, make_sample, write_dataset

pytestmark = pytest.mark.slow

FAST = dict(image_size=64, folds=3)  # the default recipe (frozen EfficientNet-Lite0 + probe), small inputs


def _labels(csv_path) -> dict[str, frozenset[str]]:
    with open(csv_path) as fh:
        return {r["image"]: frozenset(t for t in r["labels"].split("|") if t) for r in csv.DictReader(fh)}


def _hashes(root, keys) -> dict[str, str]:
    return {k: sha256_file(os.path.join(root, k)) for k in keys}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    v1_data = root / "v1data"
    write_dataset(str(v1_data), 100, seed=1)
    registry = str(root / "registry")
    v1 = run(JobArgs(data=str(v1_data), registry=registry, work_dir=str(root / "w1"), **FAST))

    # New week: the base set grows by 50 images (same folder, new files) and reviewers send corrections.
    v2_data = root / "v2data"
    shutil.copytree(v1_data, v2_data)
    rng = random.Random(7)
    rows = []
    for i in range(50):
        sample = make_sample(rng)
        name = f"images/new_{i:03d}.jpg"
        (v2_data / name).write_bytes(encode(sample.image))
        rows.append([name, "|".join(sorted(sample.labels))])
    with open(v2_data / "labels.csv", "a", newline="") as fh:
        csv.writer(fh).writerows(rows)
    base = _labels(v2_data / "labels.csv")
    corrected = sorted(base)[3]
    dropped = sorted(base[corrected])[0]
    reviewed = root / "store" / "reviewed.jpg"  # an image only the feedback knows
    reviewed.parent.mkdir()
    reviewed.write_bytes(encode(make_sample(random.Random(99)).image))
    corrections = root / "corrections.csv"
    with open(corrections, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_uri", "tag", "verdict", "annotator", "source", "reviewed_at", "model_version"])
        w.writerow([str(v2_data / corrected), dropped, "absent", "ann", "review-ui", "2026-01-01T00:00:00Z", "v1"])
        w.writerow([str(reviewed), "red", "present", "ann", "review-ui", "2026-01-01T00:00:00Z", "v1"])
    feedback = root / "feedback"
    assert main(["feedback", "ingest", "--input", str(corrections), "--dataset", str(feedback),
                 "--registry", registry, "--no-data-docs"]) == 0
    v2 = run(JobArgs(data=str(v2_data), registry=registry, feedback=str(feedback), work_dir=str(root / "w2"), **FAST))
    untrained = run(JobArgs(data=str(v2_data), registry=registry, feedback=str(feedback), work_dir=str(root / "w3"),
                            epochs=0, promote=True, flip_tta=True, **FAST))  # also exports the mirror-TTA graph
    return SimpleNamespace(root=root, v1_data=v1_data, v2_data=v2_data, registry=registry, v1=v1, v2=v2,
                           untrained=untrained, feedback=feedback, corrected=corrected, dropped=dropped)


def test_v2_evaluation_split_was_never_trained_on_and_v1_test_images_stay_in_it(loop):
    v1, v2 = loop.v1.card, loop.v2.card
    v1_all = _hashes(loop.v1_data, _labels(loop.v1_data / "labels.csv"))
    v2_all = _hashes(loop.v2_data, _labels(loop.v2_data / "labels.csv"))
    v1_trained = set(v1_all.values()) - set(v1.split["test_sha256"])
    v2_trained = set(v2_all.values()) - set(v2.split["test_sha256"])
    v2_test = set(v2.split["test_sha256"])
    assert v2_test and not v2_test & v1_trained and not v2_test & v2_trained
    assert set(v1.split["test_images"]) <= set(v2.split["test_images"])  # adding data moved no image
    assert len(v2.split["test_images"]) > len(v1.split["test_images"])  # and some new images joined the test split
    assert v1.split["definition"] == v2.split["definition"] and v2.gate["same_split_definition"] is True


def test_gate_scores_v1_on_v2_split_exactly_as_v1_scores_itself(loop):
    import onnxruntime as ort

    v1 = Registry(loop.registry).load("tagger@v1")
    v2 = loop.v2.card
    labels = _labels(loop.v2_data / "labels.csv")
    labels[loop.corrected] = labels[loop.corrected] - {loop.dropped}  # the feedback v2 trained and was tested with
    keys = v2.split["test_images"]
    spec = v1.card.preprocessing
    batch = np.stack([preprocess(decode_image((loop.v2_data / k).read_bytes(), draft_size=draft_size_for(spec)).image,
                                 spec) for k in keys])
    session = ort.InferenceSession(v1.model_path, providers=["CPUExecutionProvider"])
    probs = session.run([v1.card.output_name], {v1.card.input_name: batch})[0].astype(np.float64)
    shared = [c for c in v2.classes if c in v1.card.classes]
    truth = np.array([[c in labels[k] for c in shared] for k in keys], dtype=float)
    own, _ = mean_average_precision(truth, probs[:, [v1.card.classes.index(c) for c in shared]])
    assert v2.gate["production_version"] == "v1"
    assert v2.gate["production_mAP"] == pytest.approx(own, abs=1e-9)
    lo, hi = v2.gate["vs_production"]["interval"]
    assert lo <= v2.gate["vs_production"]["difference"] <= hi
    promoted = loop.v2.promoted
    assert promoted == (lo > 0)  # promoted exactly when the interval clears zero


def test_untrained_candidate_is_never_promoted_even_with_promote(loop):
    gate = loop.untrained.card.gate
    assert loop.untrained.promoted is False and gate["decision"] == "keep"
    assert "label-prior" in gate["reason"] and gate["forced"] is True
    assert loop.untrained.card.training["flip_tta"] is True  # exported and parity-checked like any model
    assert Registry(loop.registry).alias("tagger") in ("v1", "v2")  # production untouched by v3


def test_card_records_the_feedback_version_it_learned_from_and_cv_spread(loop):
    card = loop.v2.card
    fb = card.training["feedback"]
    runs = [os.path.basename(p)[:-5] for p in os.listdir(loop.feedback / "_manifests")]
    assert fb["version"] in runs and fb["runs"] == runs and fb["dir"] == str(loop.feedback)
    assert card.training["args"]["feedback_as_of"] == fb["version"]
    cv = card.metrics["cross_validation"]
    assert cv["folds"] == 3 and len(cv["fold_mAP"]) == 3 and cv["mAP_std"] >= 0
    assert card.metrics["calibration"]["calibrated_on"] == "out-of-fold"
    assert sum(cv["fold_sizes"]) == card.split["counts"]["train"] + card.split["counts"]["val"]
