"""`tagger review queue`: each strategy on real committed tagging runs, reasons recorded, reviewed images skipped;
the strategies' ranking rules on arrays whose answers are known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.cli import main
from pipelines.catalog import connect
from review import strategies
from review.queue_file import read_queue
from tests.batch_fixtures import History, history  # noqa: F401  (session fixture)
from tests.feedback_fixtures import commit_accepted, correction

CLASSES = ("a", "b", "c")


def test_uncertainty_takes_the_probability_nearest_the_threshold_and_gives_rare_classes_a_quota():
    probs = np.array([[0.99, 0.001, 0.01],  # 0: far from every threshold
                      [0.52, 0.01, 0.1],   # 1: a is on its threshold
                      [0.95, 0.05, 0.9],   # 2: the only image near b's threshold (b is rare: nobody has it)
                      [0.70, 0.01, 0.5]])  # 3: c on its threshold
    thresholds = np.array([0.5, 0.08, 0.5])
    no_quota = strategies.uncertainty(probs, thresholds, CLASSES, 2, per_class=0)
    assert [i for i, _ in no_quota] == [3, 1]  # c exactly on its threshold, then a at 0.52
    assert no_quota[0][1]["class"] == "c" and no_quota[0][1]["phase"] == "overall"
    quota = strategies.uncertainty(probs, thresholds, CLASSES, 2, per_class=1)
    # b has no predicted positive, so it is served first and gets image 2 although 1 and 3 are closer overall
    assert quota[0][0] == 2 and quota[0][1]["class"] == "b" and quota[0][1]["phase"] == "per-class quota"
    entropy = strategies.uncertainty(probs, thresholds, CLASSES, 4, measure="entropy", per_class=0)
    assert entropy[-1][0] == 0  # the confident image is last by summed entropy too


def test_disagreement_picks_only_images_whose_tags_differ():
    a = np.array([[0.9, 0.1], [0.6, 0.7], [0.2, 0.2]])
    b = np.array([[0.9, 0.1], [0.4, 0.2], [0.2, 0.6]])
    picks = strategies.disagreement(a, b, np.full(2, 0.5), np.full(2, 0.5), ("x", "y"), 10, "tagger@v2")
    assert [i for i, _ in picks] == [1, 2]  # image 0 agrees; image 1 differs on two tags, image 2 on one
    assert picks[0][1]["only_this_version"] == ["x", "y"] and picks[1][1]["only_other_version"] == ["y"]


def test_label_issues_ranks_the_corrupted_labels_first():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 3)) < 0.4).astype(int)
    oof = np.clip(labels * 0.85 + 0.07 + rng.normal(0, 0.03, labels.shape), 0.01, 0.99)  # predictions agree
    flipped = [5, 17, 42]
    for i in flipped:
        labels[i, 0] = 1 - labels[i, 0]  # a reviewer's slip the out-of-fold model contradicts
    picks = strategies.label_issues(labels, oof, CLASSES, 3)
    assert sorted(i for i, _ in picks) == flipped
    assert all("a" in reason["contradicted"] for _, reason in picks)


def queue(h: History, tmp_path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "queue.json"
    code = main(["review", "queue", "--tags", h.output, "--registry", h.registry, "--out", str(out), *args])
    return code, (json.loads(out.read_text()) if out.exists() else {})


def committed_v1(h: History) -> dict[str, dict]:
    con = connect(h.output)
    rows = con.execute("SELECT content_sha256, image_uri FROM tags WHERE model_version = 'v1'").fetchall()
    return {sha: uri for sha, uri in rows}


@pytest.mark.slow
def test_each_strategy_writes_a_queue_of_committed_images_with_reasons(history, tmp_path):  # noqa: F811
    committed = committed_v1(history)
    for strategy, extra in (("uncertainty", []), ("random", ["--seed", "3"]),
                            ("disagreement", ["--compare", "tagger@v2"])):
        code, doc = queue(history, tmp_path, "--model", "tagger@v1", "--strategy", strategy, "--limit", "5", *extra)
        assert code == 0, strategy
        items = doc["items"]
        assert 1 <= len(items) <= 5 and all(it["reason"]["strategy"] == strategy for it in items)
        assert all(committed.get(it["content_sha256"]) == it["image_uri"] for it in items)
        assert len({it["content_sha256"] for it in items}) == len(items)
        for it in items:  # tags are the probabilities at the card's thresholds (v1: 0.5)
            assert sorted(it["tags"]) == sorted(c for c, p in it["probabilities"].items() if p >= 0.5)
    assert all(it["reason"]["tags_changed"] >= 1 for it in items)  # disagreement: only differing images


@pytest.mark.slow
def test_reviewed_images_are_skipped(history, tmp_path):  # noqa: F811
    code, doc = queue(history, tmp_path, "--model", "tagger@v1", "--strategy", "uncertainty", "--limit", "3")
    first = doc["items"][0]
    feedback = str(tmp_path / "feedback")
    commit_accepted(feedback, [correction(first["image_uri"], "red", "present", "2026-11-01T00:00:00Z")])
    inbox = tmp_path / "inbox"
    (inbox / "done").mkdir(parents=True)
    second = doc["items"][1]
    (inbox / "done" / "old.jsonl").write_text(json.dumps(
        correction(None, "red", "absent", "2026-11-01T00:00:00Z", image_sha256=second["content_sha256"])) + "\n")
    code, again = queue(history, tmp_path, "--model", "tagger@v1", "--strategy", "uncertainty", "--limit", "50",
                        "--feedback", feedback, "--inbox", str(inbox))
    assert code == 0
    shown = {it["content_sha256"] for it in again["items"]}
    assert first["content_sha256"] not in shown and second["content_sha256"] not in shown
    assert len(shown) == len(committed_v1(history)) - 2
    assert read_queue(str(tmp_path / "queue.json")).items[0].reason["strategy"] == "uncertainty"


@pytest.mark.slow
def test_bad_requests_are_one_line_errors(history, tmp_path, capsys):  # noqa: F811
    cases = [
        (["--model", "tagger@v9", "--strategy", "random", "--limit", "2"], "tagger@v9 does not exist"),
        (["--model", "tagger@v1", "--strategy", "disagreement", "--limit", "2"], "needs --compare"),
        (["--model", "tagger@v1", "--strategy", "label-issues", "--limit", "2"], "needs --data"),
        (["--model", "tagger@v1", "--strategy", "random", "--limit", "0"], "--limit: must be at least 1"),
        (["--model", "tagger@v1", "--strategy", "uncertainty", "--limit", "2", "--per-class", "-1"], "--per-class"),
        (["--model", "tagger@v1", "--strategy", "label-issues", "--limit", "2", "--folds", "1"], "--folds"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        code, _ = queue(history, tmp_path, *args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, (args, err)


def test_a_tags_directory_without_runs_of_the_model_is_a_one_line_error(tmp_path, tiny_model, registry_root, capsys):
    (tmp_path / "tags").mkdir()
    assert main(["review", "queue", "--tags", str(tmp_path / "tags"), "--registry", registry_root, "--model", "tagger",
                 "--strategy", "random", "--limit", "3", "--out", str(tmp_path / "q.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"no committed tagging run of tagger@{tiny_model.version}" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d.update(format="other"), "not a review queue"),
    (lambda d: d["items"][0].update(probabilities={"red": 1.5}), "item 0: probabilities['red'] must be a number"),
    (lambda d: d["items"][1].update(image_uri=""), "item 1: image_uri must be a non-empty string"),
    (lambda d: d["items"][0].update(content_sha256="../etc"), "item 0: content_sha256"),
    (lambda d: d["model"].pop("classes"), "model.classes must be a list"),
])
def test_hand_edited_queue_files_fail_with_one_line_naming_the_field(tmp_path, capsys, edit, expected):
    from tests.review_fixtures import small_queue, write_images

    doc = json.loads(small_queue(write_images(str(tmp_path / "img"), 2)).to_json())
    edit(doc)
    path = tmp_path / "q.json"
    path.write_text(json.dumps(doc))
    assert main(["review", "export-labelstudio", "--queue", str(path), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_label_issues_queue_starts_from_the_training_labels_and_ranks_by_cleanlab(tmp_path, tiny_model,
                                                                                   registry_root):
    import csv

    from models.registry import sha256_file
    from tests.synthetic import write_dataset

    write_dataset(str(tmp_path / "data"), 30, seed=3)
    with open(tmp_path / "data" / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows[:4]:  # a careless labeller: colours swapped on the first four images
        row["labels"] = "|".join(sorted({"green" if t == "red" else "red" if t == "green" else t
                                         for t in row["labels"].split("|")} ^ {"blue"}))
    with open(tmp_path / "data" / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "q.json"
    assert main(["review", "queue", "--tags", str(tmp_path / "untagged"), "--registry", registry_root,
                 "--model", f"tagger@{tiny_model.version}", "--strategy", "label-issues", "--limit", "6",
                 "--data", str(tmp_path / "data"), "--folds", "3", "--out", str(out)]) == 0
    items = json.loads(out.read_text())["items"]
    assert 1 <= len(items) <= 6
    given = {str(tmp_path / "data" / r["image"]): sorted(t for t in r["labels"].split("|") if t) for r in rows}
    for it in items:
        assert it["reason"]["strategy"] == "label-issues" and it["reason"]["contradicted"]
        assert sorted(it["tags"]) == given[it["image_uri"]] == sorted(it["reason"]["given_labels"])
        assert it["content_sha256"] == sha256_file(it["image_uri"])
        assert it["reason"]["probabilities_from"] == "out-of-fold head"
    quality = [it["reason"]["label_quality"] for it in items]
    assert quality == sorted(quality)  # most likely issues first
    swapped = {str(tmp_path / "data" / r["image"]) for r in rows[:4]}
    print("swapped images found:", sum(it["image_uri"] in swapped for it in items), "of", len(items))
