"""Label Studio round-trip: a queue as Label Studio tasks with pre-annotations, and its JSON export back as
correction records.

Export: Label Studio's JSON task import format (https://labelstud.io/guide/predictions): one task per queue
item, ``data.image`` the image reference Label Studio will load, and one ``predictions`` entry whose ``result``
holds the starting tags as a ``choices`` region, so annotators see them pre-selected. The image reference is one
of: the URI as it is (``uri``), a URL under a prefix (``url``: PREFIX + path relative to a root), or Label
Studio's local-files storage (``local-files``: ``/data/local-files/?d=PATH`` with PATH relative to
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``). ``data.tagger`` carries what the import needs to name the image
and model exactly (URI, content hash, model version, starting tags), so the round-trip never relies on parsing
image URLs back.

Import: Label Studio's JSON export (https://labelstud.io/guide/export#JSON; the task format is documented at
https://labelstud.io/guide/task_format): every non-cancelled annotation becomes one decision on its task, with
``completed_by`` as the annotator (the user's email when the export has it, else ``labelstudio-user-<id>``) and
the annotation's ``updated_at`` (else ``created_at``) as ``reviewed_at``. The tags are the ``choices`` of the
control named ``tags``; the ``new_tags`` text area adds new classes (comma-separated). See docs/review.md for the
labelling config.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any, Iterable

from models import storage
from review.corrections import DecisionError, decision_records
from review.queue_file import Queue, QueueItem
from schemas.errors import UserError
from schemas.feedback import parse_timestamp

CHOICES = "tags"  # <Choices name="tags" toName="image" choice="multiple">
NEW_TAGS = "new_tags"  # <TextArea name="new_tags" toName="image">
IMAGE = "image"  # <Image name="image" value="$image">
SOURCE = "label-studio"
IMAGE_MODES = ("uri", "url", "local-files")


class LabelStudioError(UserError):
    """A Label Studio file or option that cannot be used; the message names the task and the field."""


def labeling_config(classes: Iterable[str]) -> str:
    """The labelling config the exported tasks expect (also printed in docs/review.md)."""
    choices = "\n".join(f'    <Choice value="{_xml(c)}"/>' for c in classes)
    return (f'<View>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
            f'  <Choices name="{CHOICES}" toName="{IMAGE}" choice="multiple" showInline="true">\n{choices}\n'
            f'  </Choices>\n  <TextArea name="{NEW_TAGS}" toName="{IMAGE}" rows="1" '
            f'placeholder="new classes, comma-separated"/>\n</View>\n')


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def image_reference(uri: str, mode: str, root: str | None = None, prefix: str | None = None) -> str:
    if mode == "uri":
        return uri
    if not storage.is_local(uri):
        raise LabelStudioError(f"{uri}: --image-mode {mode} needs local image paths (use --image-mode uri)")
    path = os.path.abspath(uri[7:] if uri.startswith("file://") else uri)
    base = os.path.abspath(root or os.sep)
    rel = os.path.relpath(path, base)
    if rel == ".." or rel.startswith(".." + os.sep):
        raise LabelStudioError(f"{path} is not under the document root {base}")
    if mode == "local-files":
        return "/data/local-files/?d=" + urllib.parse.quote(rel)
    if mode == "url":
        if not prefix:
            raise LabelStudioError("--image-mode url needs --url-prefix")
        return prefix.rstrip("/") + "/" + urllib.parse.quote(rel)
    raise LabelStudioError(f"unknown image mode {mode!r}; choose one of {', '.join(IMAGE_MODES)}")


def export_tasks(queue: Queue, mode: str = "uri", root: str | None = None, prefix: str | None = None) -> list[dict]:
    """Label Studio import tasks (one per item) with the starting tags as a prediction."""
    tasks = []
    for index, item in enumerate(queue.items):
        top = sorted(item.probabilities.items(), key=lambda kv: -kv[1])[:5]
        tasks.append({
            "data": {
                IMAGE: image_reference(item.image_uri, mode, root, prefix),
                "tagger": {"queue_index": index, "image_uri": item.image_uri, "content_sha256": item.content_sha256,
                           "model_name": item.model_name, "model_version": item.model_version,
                           "start_tags": list(item.tags), "reason": item.reason},
                "top_probabilities": ", ".join(f"{c} {p:.2f}" for c, p in top),
            },
            "predictions": [{
                "model_version": item.model_ref,
                "score": _score(item),
                "result": [{"from_name": CHOICES, "to_name": IMAGE, "type": "choices",
                            "value": {"choices": list(item.tags)}}] if item.tags else [],
            }],
        })
    return tasks


def _score(item: QueueItem) -> float:
    """Label Studio sorts tasks by prediction score; lower means less confident: the mean margin from 0.5."""
    values = list(item.probabilities.values())
    return round(sum(abs(p - 0.5) for p in values) / len(values) * 2, 6) if values else 0.0


def import_export(doc: Any, classes_by_model: dict[str, tuple[str, ...]], where: str) -> list[dict]:
    """Correction records from a Label Studio JSON export (a list of tasks)."""
    if not isinstance(doc, list):
        raise LabelStudioError(f"{where}: a Label Studio JSON export is a list of tasks")
    records: list[dict] = []
    for n, task in enumerate(doc):
        at = f"{where}: task {task.get('id', n) if isinstance(task, dict) else n}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LabelStudioError(f"{at}: not a task object with data")
        meta = task["data"].get("tagger")
        if not isinstance(meta, dict):
            raise LabelStudioError(f"{at}: data.tagger is missing (the task was not exported by tagger review)")
        item = _item_from_meta(meta, at)
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise LabelStudioError(f"{at}: annotations must be a list")
        for annotation in annotations:
            if not isinstance(annotation, dict):
                raise LabelStudioError(f"{at}: an annotation is not an object")
            if annotation.get("was_cancelled"):
                continue  # skipped in Label Studio: no decision
            tags, new = _annotation_tags(annotation, at)
            stamp = parse_timestamp(annotation.get("updated_at") or annotation.get("created_at"))
            if stamp is None:
                raise LabelStudioError(f"{at}: annotation {annotation.get('id')} has no valid updated_at/created_at")
            known = set(classes_by_model.get(item.model_ref, ())) | set(item.tags)
            unflagged = [t for t in tags if t not in known and t not in new]
            if unflagged:
                raise LabelStudioError(f"{at}: choices {unflagged} are not classes of {item.model_ref}")
            try:
                records += decision_records(item, tags + [t for t in new if t not in tags],
                                            classes_by_model.get(item.model_ref, ()),
                                            annotator=_annotator(annotation.get("completed_by")), source=SOURCE,
                                            reviewed_at=stamp,
                                            comment=f"label studio task {task.get('id')} annotation "
                                                    f"{annotation.get('id')}")
            except DecisionError as exc:
                raise LabelStudioError(f"{at}: {exc}") from exc
    return records


def _item_from_meta(meta: dict, at: str) -> QueueItem:
    try:
        return QueueItem(str(meta["image_uri"]), meta.get("content_sha256"), str(meta["model_name"]),
                         str(meta["model_version"]), tuple(str(t) for t in meta.get("start_tags") or []), {},
                         meta.get("reason") or {})
    except (KeyError, TypeError) as exc:
        raise LabelStudioError(f"{at}: data.tagger lacks {exc}") from exc


def _annotation_tags(annotation: dict, at: str) -> tuple[list[str], list[str]]:
    tags: list[str] = []
    new: list[str] = []
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise LabelStudioError(f"{at}: annotation result must be a list")
    for region in result:
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            continue
        value = region["value"]
        if region.get("from_name") == CHOICES and region.get("type") == "choices":
            tags += [str(c) for c in value.get("choices") or []]
        elif region.get("from_name") == NEW_TAGS and region.get("type") == "textarea":
            for text in value.get("text") or []:
                new += [t.strip() for t in str(text).split(",") if t.strip()]
    return tags, new


def _annotator(completed_by: Any) -> str:
    """Label Studio writes the user id, or (newer exports) an object with id and email."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        completed_by = completed_by.get("id")
    if completed_by is None or isinstance(completed_by, bool):
        return "labelstudio-user-unknown"
    return f"labelstudio-user-{completed_by}"


def read_export(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LabelStudioError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelStudioError(f"{path}: not a readable Label Studio JSON export ({exc})") from exc

