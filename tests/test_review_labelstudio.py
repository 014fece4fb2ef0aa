"""Label Studio round-trip: export a queue as tasks with pre-annotations, edit like an annotator would in Label
Studio's documented export format, import back as correction records, and `tagger feedback ingest` takes them."""
from __future__ import annotations

import json
import os
import urllib.parse

import pytest

from feedback_ingest.dataset import FeedbackDataset
from jobs.cli import main
from tests.review_fixtures import labelstudio_export, ls_annotation, small_queue, write_images


@pytest.fixture
def exported(tmp_path, tiny_model, registry_root):
    paths = write_images(str(tmp_path / "archive" / "2026"), 3)
    queue_path = str(tmp_path / "queue.json")
    small_queue(paths, tiny_model.version).write(queue_path)
    tasks_path, config_path = str(tmp_path / "tasks.json"), str(tmp_path / "config.xml")
    assert main(["review", "export-labelstudio", "--queue", queue_path, "--out", tasks_path,
                 "--image-mode", "local-files", "--root", str(tmp_path / "archive"), "--config-out", config_path]) == 0
    with open(tasks_path) as fh:
        return {"tasks": json.load(fh), "paths": paths, "tmp": tmp_path, "registry": registry_root,
                "config": open(config_path).read(), "version": tiny_model.version}


def test_export_is_label_studio_import_format_with_pre_annotations(exported):
    tasks, paths = exported["tasks"], exported["paths"]
    assert len(tasks) == 3
    first = tasks[0]
    # local-files storage: /data/local-files/?d=<path relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>
    assert first["data"]["image"] == "/data/local-files/?d=" + urllib.parse.quote("2026/photo_00.jpg")
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == f"tagger@{exported['version']}"
    assert prediction["result"] == [{"from_name": "tags", "to_name": "image", "type": "choices",
                                     "value": {"choices": ["circle", "red"]}}]
    assert first["data"]["tagger"]["image_uri"] == paths[0]
    # the labelling config names exactly the controls the tasks use, with every model class as a choice
    config = exported["config"]
    assert '<Image name="image" value="$image"' in config and '<Choices name="tags" toName="image" choice="multiple"' in config
    assert all(f'<Choice value="{c}"/>' in config for c in ("circle", "square", "triangle", "red", "green", "blue"))
    assert '<TextArea name="new_tags" toName="image"' in config


def test_url_mode_and_paths_outside_the_root_are_refused(exported, capsys):
    tmp = exported["tmp"]
    out = str(tmp / "url.json")
    assert main(["review", "export-labelstudio", "--queue", str(tmp / "queue.json"), "--out", out,
                 "--image-mode", "url", "--root", str(tmp / "archive"), "--url-prefix", "https://img.example/a/"]) == 0
    assert json.load(open(out))[1]["data"]["image"] == "https://img.example/a/2026/photo_01.jpg"
    assert main(["review", "export-labelstudio", "--queue", str(tmp / "queue.json"), "--out", out,
                 "--image-mode", "local-files", "--root", str(tmp / "elsewhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not under the document root" in err and len(err.splitlines()) == 1


def test_edited_export_imports_as_the_expected_corrections_and_ingest_accepts_them(exported, capsys):
    tasks, paths, tmp = exported["tasks"], exported["paths"], exported["tmp"]
    edited = labelstudio_export(tasks, {
        # task 0 started {circle, red}: remove red, add blue
        0: [ls_annotation(11, ["circle", "blue"], {"id": 3, "email": "ann@example.org"}, "2026-11-21T08:00:00.5Z")],
        # task 1 started {square}: confirmed as is, plus a new class typed into the text area
        1: [ls_annotation(12, ["square"], 4, "2026-11-21T08:05:00Z", new_tags="kite, sail"),
            ls_annotation(13, [], 5, "2026-11-21T08:06:00Z", cancelled=True)],  # skipped: no decision
        # task 2 was never annotated
    })
    export_path = tmp / "ls_export.json"
    export_path.write_text(json.dumps(edited))
    out = str(tmp / "corrections.jsonl")
    assert main(["review", "import-labelstudio", "--input", str(export_path), "--out", out,
                 "--registry", exported["registry"]]) == 0
    records = [json.loads(line) for line in open(out)]
    got = {(r["image_uri"], r["tag"], r["verdict"], r["annotator"], r["reviewed_at"], r["new_class"]) for r in records}
    assert got == {
        (paths[0], "circle", "present", "ann@example.org", "2026-11-21T08:00:00.500+00:00", False),
        (paths[0], "blue", "present", "ann@example.org", "2026-11-21T08:00:00.500+00:00", False),
        (paths[0], "red", "absent", "ann@example.org", "2026-11-21T08:00:00.500+00:00", False),
        (paths[1], "square", "present", "labelstudio-user-4", "2026-11-21T08:05:00.000+00:00", False),
        (paths[1], "kite", "present", "labelstudio-user-4", "2026-11-21T08:05:00.000+00:00", True),
        (paths[1], "sail", "present", "labelstudio-user-4", "2026-11-21T08:05:00.000+00:00", True),
    }
    assert all(r["source"] == "label-studio" and r["model_version"] == exported["version"] for r in records)

    dataset = str(tmp / "feedback")
    capsys.readouterr()
    assert main(["feedback", "ingest", "--input", out, "--dataset", dataset, "--registry", exported["registry"],
                 "--no-data-docs"]) == 0
    assert "read 6, accepted 6, quarantined 0" in capsys.readouterr().out
    stored = FeedbackDataset(dataset).read("accepted").to_pylist()
    assert {(r["image_uri"], r["tag"], r["verdict"], r["annotator"]) for r in stored} == {g[:4] for g in got}


def test_a_choice_outside_the_classes_without_the_new_class_box_is_a_one_line_error(exported, capsys):
    tmp = exported["tmp"]
    edited = labelstudio_export(exported["tasks"], {0: [ls_annotation(1, ["zebra"], 1, "2026-11-21T08:00:00Z")]})
    (tmp / "bad.json").write_text(json.dumps(edited))
    assert main(["review", "import-labelstudio", "--input", str(tmp / "bad.json"), "--out", str(tmp / "o.jsonl"),
                 "--registry", exported["registry"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "task 100" in err and "zebra" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp / "o.jsonl")


@pytest.mark.parametrize("content", ["{not json", "{}", "[1, 2]", '[{"data": {"image": "x"}}]'])
def test_malformed_exports_are_one_line_errors(exported, capsys, content):
    tmp = exported["tmp"]
    (tmp / "bad.json").write_text(content)
    assert main(["review", "import-labelstudio", "--input", str(tmp / "bad.json"), "--out", str(tmp / "o.jsonl"),
                 "--registry", exported["registry"]]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
