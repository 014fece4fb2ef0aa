"""Bad training data gives one clear report naming rows and reasons, through the real CLI."""
from __future__ import annotations

import csv
import os

import pytest

from jobs.cli import main
from models.registry import Registry
from models.training.job import JobArgs, load_examples
from schemas.card import Preprocessing
from tests.synthetic import write_dataset


def _rewrite(csv_path: str, header: list[str], rows: list[list[str]]) -> None:
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def bad_dataset(tmp_path):
    root = tmp_path / "data"
    csv_path = write_dataset(str(root), 8)
    rows = list(csv.reader(open(csv_path)))[1:]
    (root / "images" / "broken.jpg").write_bytes(b"this is not a JPEG")
    bad = [r + ["ok"] for r in rows] + [
        ["images/nowhere.jpg", "circle", ""],  # row 9: missing file
        ["images/broken.jpg", "square", ""],  # row 10: unreadable image
        [rows[2][0], rows[2][1], "again"],  # row 11: duplicate of row 3
    ]
    _rewrite(csv_path, ["image", "labels", "notes"], bad)
    return root


def test_cli_reports_every_bad_row_in_one_line_and_publishes_nothing(bad_dataset, tmp_path, capsys):
    registry = tmp_path / "registry"
    work = tmp_path / "work"
    code = main(["train", "--data", str(bad_dataset), "--registry", str(registry), "--work-dir", str(work)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("tagger train: error: ")
    assert "4 problem(s) in 11 rows" in line
    for expected in ("unknown_column", "row 9 images/nowhere.jpg: missing_file",
                     "row 10 images/broken.jpg: unreadable_image", "row 11 images/img_00002.jpg: duplicate_row",
                     "--skip-bad-rows"):
        assert expected in line
    report = (work / "data_report.txt").read_text()
    assert "column 'notes'" in report and "already listed in row 3" in report
    assert Registry(str(registry)).names() == []


def test_skip_bad_rows_keeps_only_the_good_ones(bad_dataset, tmp_path):
    args = JobArgs(data=str(bad_dataset), registry=str(tmp_path / "r"), skip_bad_rows=True)
    _, examples, decoded, report = load_examples(args, Preprocessing(input_size=64), str(tmp_path / "report.txt"))
    assert sorted(e.key for e in examples) == [f"images/img_{i:05d}.jpg" for i in range(8)]
    assert len(decoded.images) == 8
    assert {p.reason for p in report.problems} == {"unknown_column", "missing_file", "unreadable_image",
                                                   "duplicate_row"}


def test_missing_labels_column_is_a_clear_error(tmp_path, capsys):
    csv_path = write_dataset(str(tmp_path / "d"), 3)
    _rewrite(csv_path, ["image", "tags"], [["images/img_00000.jpg", "circle"]])
    code = main(["train", "--data", str(tmp_path / "d"), "--registry", str(tmp_path / "r"),
                 "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "required column(s) ['labels'] missing" in err and "Traceback" not in err


def test_parquet_manifest_and_empty_label_sets_are_accepted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "d"
    write_dataset(str(root), 4)
    pq.write_table(pa.table({"image": [f"images/img_{i:05d}.jpg" for i in range(4)],
                             "labels": ["circle|red", "", None, "square"]}), root / "labels.parquet")
    os.remove(root / "labels.csv")
    args = JobArgs(data=str(root), registry=str(tmp_path / "r"))
    _, examples, _, report = load_examples(args, Preprocessing(input_size=64), str(tmp_path / "rep.txt"))
    assert report.problems == []
    assert [sorted(e.labels) for e in examples] == [["circle", "red"], [], [], ["square"]]


def test_feedback_without_the_feedback_module_is_a_clear_error(tmp_path, monkeypatch, capsys):
    write_dataset(str(tmp_path / "d"), 8)
    (tmp_path / "fb").mkdir()  # --feedback must name an existing directory
    monkeypatch.setitem(__import__("sys").modules, "feedback_ingest.labels", None)  # as on an install without it
    code = main(["train", "--data", str(tmp_path / "d"), "--registry", str(tmp_path / "r"),
                 "--feedback", str(tmp_path / "fb"), "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "--feedback needs feedback_ingest.labels.apply_feedback" in err


def test_feedback_corrections_override_and_extend_the_training_labels(tmp_path, tiny_model, registry_root):
    import shutil

    root = tmp_path / "d"
    write_dataset(str(root), 8)
    base = {r["image"]: r["labels"].split("|") for r in csv.DictReader(open(root / "labels.csv"))}
    first = "images/img_00000.jpg"
    dropped = base[first][0]
    extra = tmp_path / "store" / "new.jpg"  # a reviewed image that is not in the base set
    extra.parent.mkdir()
    shutil.copy(root / "images" / "img_00001.jpg", extra)
    corrections = tmp_path / "corrections.csv"
    _rewrite(str(corrections), ["image_uri", "tag", "verdict", "annotator", "source", "reviewed_at", "model_version"], [
        [str(root / first), dropped, "absent", "ann", "review-ui", "2026-01-01T00:00:00Z", tiny_model.version],
        [str(extra), "red", "present", "ann", "review-ui", "2026-01-01T00:00:00Z", tiny_model.version],
    ])
    feedback = tmp_path / "feedback"
    assert main(["feedback", "ingest", "--input", str(corrections), "--dataset", str(feedback),
                 "--registry", registry_root, "--no-data-docs"]) == 0

    args = JobArgs(data=str(root), registry=registry_root, feedback=str(feedback))
    _, examples, _, report = load_examples(args, Preprocessing(input_size=64), str(tmp_path / "rep.txt"))
    labels = {e.key: e.labels for e in examples}
    assert report.problems == [] and len(examples) == 9
    assert labels[first] == frozenset(base[first]) - {dropped}
    assert labels[str(extra)] == frozenset({"red"})


@pytest.mark.parametrize("name,content,message", [
    ("labels.csv", b"image,labels\n\xff\xfe,broken\n", "not a readable UTF-8 CSV"),
    ("labels.parquet", b"PAR1 truncated", "not a readable Parquet file"),
    ("instances.json", b'{"images": [{"id": 1}], "annotations": [], "categories": []}', "malformed COCO"),
])
def test_unreadable_manifests_are_one_line_errors(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    code = main(["train", "--data", str(tmp_path / name), "--registry", str(tmp_path / "r"),
                 "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
