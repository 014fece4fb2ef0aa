"""COCO instances JSON and Pascal VOC folders become image-level tag sets."""
from __future__ import annotations

import json

from models.training.job import JobArgs, load_examples
from schemas.card import Preprocessing
from tests.synthetic import encode, make_sample


def _images(folder, names):
    import random

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name in names:
        (folder / name).write_bytes(encode(make_sample(rng).image))


def _load(path, tmp_path, **kw):
    args = JobArgs(data=str(path), registry=str(tmp_path / "r"), **kw)
    return load_examples(args, Preprocessing(input_size=64), str(tmp_path / "report.txt"))


def test_coco_instances_become_tag_sets(tmp_path):
    _images(tmp_path / "coco" / "images", ["a.jpg", "b.jpg", "c.jpg"])
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 7, "file_name": "c.jpg"}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1},
            {"id": 11, "image_id": 1, "category_id": 1},
            {"id": 12, "image_id": 1, "category_id": 18},
            {"id": 13, "image_id": 2, "category_id": 3},
        ],
    }
    path = tmp_path / "coco" / "instances_val.json"
    path.write_text(json.dumps(instances))
    _, examples, _, report = _load(path, tmp_path)
    assert report.problems == []
    assert {e.key: sorted(e.labels) for e in examples} == {"a.jpg": ["dog", "person"], "b.jpg": ["car"], "c.jpg": []}


def test_coco_annotation_with_unknown_category_is_reported(tmp_path):
    _images(tmp_path / "imgs", ["a.jpg"])
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],
                                "annotations": [{"image_id": 1, "category_id": 99}]}))
    _, examples, _, report = _load(path, tmp_path, images=str(tmp_path / "imgs"), skip_bad_rows=True)
    assert [p.reason for p in report.problems] == ["unknown_category"]
    assert [(e.key, e.labels) for e in examples] == [("a.jpg", frozenset())]


def test_voc_folder_objects_become_tags(tmp_path):
    root = tmp_path / "VOC"
    _images(root / "JPEGImages", ["000001.jpg", "000002.jpg"])
    (root / "Annotations").mkdir()
    objects = {"000001": ["dog", "person", "dog"], "000002": []}
    for stem, names in objects.items():
        objs = "".join(f"<object><name>{n}</name><bndbox><xmin>1</xmin></bndbox></object>" for n in names)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{objs}</annotation>"
        )
    _, examples, _, report = _load(root, tmp_path)
    assert report.problems == []
    assert {e.key: sorted(e.labels) for e in examples} == {"000001.jpg": ["dog", "person"], "000002.jpg": []}
