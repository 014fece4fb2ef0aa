"""Importers that turn detection annotations into image-level tags.

COCO instances JSON and Pascal VOC XML folders both describe boxes; a multi-label tagger only needs the set of
object classes present in each image. Images without objects are kept as valid negatives.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

from models import storage
from models.training.data import DataError, DataReport, RawRow


def read_coco(path: str, report: DataReport, image_root: str | None = None) -> list[RawRow]:
    """COCO ``instances_*.json`` -> one row per listed image; images resolve against ``image_root``.

    Without ``image_root``, file names resolve next to the JSON, or under a sibling ``images/`` folder.
    """
    try:
        data = json.loads(storage.read_bytes(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(f"{path}: not a COCO instances file (needs images, annotations and categories)")
    try:
        return _coco_rows(path, data, report, image_root)
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: malformed COCO instances file ({type(exc).__name__}: {exc})") from exc


def _coco_rows(path: str, data: dict, report: DataReport, image_root: str | None) -> list[RawRow]:
    categories = {c["id"]: str(c["name"]) for c in data["categories"]}
    tags: dict[object, set[str]] = {img["id"]: set() for img in data["images"]}
    for number, ann in enumerate(data["annotations"], start=1):
        name = categories.get(ann.get("category_id"))
        if ann.get("image_id") not in tags:
            report.add(None, "", "unknown_image_id", f"annotation {number} refers to image_id {ann.get('image_id')}")
        elif name is None:
            report.add(None, "", "unknown_category", f"annotation {number} has category_id {ann.get('category_id')}")
        else:
            tags[ann["image_id"]].add(name)
    base = image_root or _coco_image_root(path, [img["file_name"] for img in data["images"][:1]])
    return [
        RawRow(number, img["file_name"], storage.join(base, img["file_name"]), frozenset(tags[img["id"]]))
        for number, img in enumerate(data["images"], start=1)
    ]


def read_voc(root: str, report: DataReport, image_root: str | None = None) -> list[RawRow]:
    """Pascal VOC folder (``Annotations/*.xml`` + ``JPEGImages/``) -> one row per annotation file."""
    ann_dir = os.path.join(root, "Annotations")
    images = image_root or os.path.join(root, "JPEGImages")
    rows = []
    for number, name in enumerate(sorted(f for f in os.listdir(ann_dir) if f.endswith(".xml")), start=1):
        try:
            tree = ET.parse(os.path.join(ann_dir, name)).getroot()
        except ET.ParseError as exc:
            report.add(number, name, "unreadable_annotation", f"XML parse error: {exc}")
            continue
        filename = (tree.findtext("filename") or "").strip() or os.path.splitext(name)[0] + ".jpg"
        labels = frozenset(
            (obj.findtext("name") or "").strip() for obj in tree.iter("object") if (obj.findtext("name") or "").strip()
        )
        rows.append(RawRow(number, filename, os.path.join(images, filename), labels))
    report.source = ann_dir
    return rows


def _coco_image_root(json_path: str, sample: list[str]) -> str:
    base = os.path.dirname(json_path)
    if sample and not os.path.exists(os.path.join(base, sample[0])):
        for candidate in (os.path.join(base, "images"), os.path.join(os.path.dirname(base), "images")):
            if os.path.exists(os.path.join(candidate, sample[0])):
                return candidate
    return base
