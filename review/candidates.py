"""What the strategies choose from: predictions of committed tagging runs, minus images already reviewed.

Predictions are read through the catalog's ``tags`` view (pipelines.catalog.connect), so only runs with a
manifest count, exactly as for the analyst queries. One row per content hash: the latest tagging of that
content by the model version (the same photo under two paths is reviewed once).
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass

import numpy as np

from feedback_ingest.labels import normalize_uri
from schemas.errors import UserError

log = logging.getLogger(__name__)

_LATEST_PER_CONTENT = """
SELECT content_sha256, image_uri, map_keys(probabilities) AS keys, map_values(probabilities) AS values
FROM tags
WHERE model_name = $name AND model_version = $version
QUALIFY row_number() OVER (PARTITION BY content_sha256 ORDER BY tagged_at DESC, image_uri) = 1
ORDER BY content_sha256
"""


@dataclass
class Predictions:
    """One model version's latest committed predictions, one row per content hash, columns in ``classes``."""

    model_name: str
    model_version: str
    classes: tuple[str, ...]
    image_uris: list[str]
    content_sha256: list[str]
    probs: np.ndarray  # (images, classes); NaN where a run had no probability for a class

    def subset(self, rows: list[int]) -> "Predictions":
        return Predictions(self.model_name, self.model_version, self.classes, [self.image_uris[i] for i in rows],
                           [self.content_sha256[i] for i in rows], self.probs[rows])


def load_predictions(tags_dir: str, model_name: str, model_version: str, classes: tuple[str, ...]) -> Predictions:
    """Committed predictions of ``model_name@model_version`` under the tagging output ``tags_dir``."""
    from pipelines.catalog import connect

    if not os.path.isdir(tags_dir):
        raise UserError(f"--tags {tags_dir}: no such tagging output directory")
    con = connect(tags_dir)
    try:
        rows = con.execute(_LATEST_PER_CONTENT, {"name": model_name, "version": model_version}).fetchall()
    finally:
        con.close()
    index = {c: j for j, c in enumerate(classes)}
    probs = np.full((len(rows), len(classes)), np.nan, dtype=np.float64)
    for i, (_sha, _uri, keys, values) in enumerate(rows):
        for key, value in zip(keys, values):
            j = index.get(key)
            if j is not None and value is not None:
                probs[i, j] = value
    return Predictions(model_name, model_version, classes, [r[1] for r in rows], [r[0] for r in rows], probs)


@dataclass
class Reviewed:
    """Images that already have a correction (by normalised URI or by content sha256)."""

    uris: set[str]
    sha256: set[str]

    def contains(self, uri: str, sha: str | None) -> bool:
        return normalize_uri(uri) in self.uris or (sha is not None and sha.lower() in self.sha256)


def reviewed_images(feedback_dirs: list[str], inbox_dirs: list[str]) -> Reviewed:
    """Images corrected in committed feedback runs (accepted rows) or waiting in an inbox (any file there,
    ingested ones under ``inbox/done/`` included)."""
    from feedback_ingest.dataset import FeedbackDataset
    from feedback_ingest.sources import READERS, read_file

    uris: set[str] = set()
    shas: set[str] = set()

    def add(uri, sha) -> None:
        if isinstance(uri, str) and uri.strip():
            uris.add(normalize_uri(uri.strip()))
        if isinstance(sha, str) and sha.strip():
            shas.add(sha.strip().lower())

    for directory in feedback_dirs:
        table = FeedbackDataset(directory).read("accepted", ["image_uri", "image_sha256"])
        for uri, sha in zip(table.column("image_uri").to_pylist(), table.column("image_sha256").to_pylist()):
            add(uri, sha)
    for directory in inbox_dirs:
        if not os.path.isdir(directory):
            raise UserError(f"--inbox {directory}: no such directory")
        for path in sorted(glob.glob(os.path.join(directory, "*")) + glob.glob(os.path.join(directory, "done", "*"))):
            if os.path.splitext(path)[1].lower() in READERS and os.path.isfile(path):
                for src in read_file(path):
                    add(src.record.get("image_uri"), src.record.get("image_sha256"))
    log.info("%d images already reviewed (%d URIs, %d hashes)", len(uris | shas), len(uris), len(shas))
    return Reviewed(uris, shas)


def not_reviewed(predictions: Predictions, reviewed: Reviewed) -> Predictions:
    keep = [i for i, (uri, sha) in enumerate(zip(predictions.image_uris, predictions.content_sha256))
            if not reviewed.contains(uri, sha)]
    return predictions.subset(keep)
