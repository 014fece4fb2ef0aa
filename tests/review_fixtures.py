"""Helpers for review tests: a queue over real images and a real registry, and Label Studio's export shape."""
from __future__ import annotations

import os
import random

from review.queue_file import Queue, QueueItem
from models.registry import sha256_file
from tests.synthetic import CLASSES, encode, make_sample


def write_images(directory: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(directory, f"photo_{i:02d}.jpg")
        with open(path, "wb") as fh:
            fh.write(encode(make_sample(rng).image))
        paths.append(path)
    return paths


def small_queue(paths: list[str], version: str = "v1") -> Queue:
    """Items start from fixed tags: item k has CLASSES[k % 6] (and red on even items)."""
    items = []
    for k, path in enumerate(paths):
        tags = tuple(sorted({CLASSES[k % len(CLASSES)]} | ({"red"} if k % 2 == 0 else set())))
        probs = {c: (0.8 if c in tags else 0.1) for c in CLASSES}
        sha = sha256_file(path) if os.path.isfile(path) else None  # FIFOs and devices in robustness tests
        items.append(QueueItem(path, sha, "tagger", version, tags, probs,
                               {"strategy": "random", "seed": 0}))
    return Queue("random", "tagger", version, CLASSES, {c: 0.5 for c in CLASSES}, items, {"limit": len(items)})


def labelstudio_export(tasks: list[dict], annotations: dict[int, list[dict]]) -> list[dict]:
    """What Label Studio's JSON export gives back for imported tasks (https://labelstud.io/guide/task_format):
    task id, data as imported, the predictions, and the annotations made in its UI."""
    out = []
    for n, task in enumerate(tasks):
        out.append({
            "id": 100 + n,
            "data": task["data"],
            "annotations": annotations.get(n, []),
            "predictions": [p | {"id": 500 + n, "created_ago": "3 hours", "task": 100 + n}
                            for p in task["predictions"]],
            "created_at": "2026-11-20T09:00:00.000000Z",
            "updated_at": "2026-11-20T10:00:00.000000Z",
            "project": 7,
            "inner_id": n + 1,
            "total_annotations": len(annotations.get(n, [])),
            "cancelled_annotations": 0,
            "total_predictions": 1,
        })
    return out


def ls_annotation(annotation_id: int, choices: list[str], completed_by, updated_at: str, *,
                  new_tags: str | None = None, cancelled: bool = False) -> dict:
    result = [{"id": f"r{annotation_id}", "from_name": "tags", "to_name": "image", "type": "choices",
               "origin": "manual", "value": {"choices": choices}}]
    if new_tags is not None:
        result.append({"id": f"t{annotation_id}", "from_name": "new_tags", "to_name": "image", "type": "textarea",
                       "origin": "manual", "value": {"text": [new_tags]}})
    return {"id": annotation_id, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2026-11-20T09:30:00.000000Z", "updated_at": updated_at,
            "lead_time": 12.5, "result_count": 0, "task": None, "prediction": {}, "parent_prediction": None}
