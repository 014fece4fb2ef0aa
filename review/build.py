"""``tagger review queue``: pick images with a strategy and write the queue file (review/queue_file.py)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from models.registry import Registry
from review import strategies
from review.candidates import Predictions, load_predictions, not_reviewed, reviewed_images
from review.queue_file import Queue, QueueItem
from schemas.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class QueueRequest:
    tags_dir: str
    model_ref: str
    strategy: str
    limit: int
    registry_root: str
    measure: str = "margin"
    per_class: int = 1
    compare_ref: str | None = None
    data: str | None = None  # training labels for label-issues (as for tagger train --data)
    images: str | None = None
    folds: int = 5
    seed: int = 0
    feedback_dirs: list[str] = field(default_factory=list)
    inbox_dirs: list[str] = field(default_factory=list)


def build_queue(req: QueueRequest) -> Queue:
    if req.strategy not in strategies.STRATEGIES:
        raise UserError(f"unknown strategy {req.strategy!r}; choose one of {', '.join(strategies.STRATEGIES)}")
    if req.limit < 1:
        raise UserError(f"--limit must be at least 1, got {req.limit}")
    if req.per_class < 0:
        raise UserError(f"--per-class must be 0 or more, got {req.per_class}")
    if req.folds < 2:
        raise UserError(f"--folds must be at least 2, got {req.folds}")
    registry = Registry(req.registry_root)
    name, version = registry.resolve(req.model_ref)
    card = registry.card(name, version)
    thresholds = np.array([card.thresholds[c] for c in card.classes], dtype=np.float64)
    reviewed = reviewed_images(req.feedback_dirs, req.inbox_dirs)
    params = {"limit": req.limit, "tags_dir": req.tags_dir, "skipped_reviewed_from": req.feedback_dirs + req.inbox_dirs}

    if req.strategy == "label-issues":
        items, extra = _label_issues(req, card, reviewed)
        return Queue(req.strategy, name, version, card.classes, dict(card.thresholds), items, params | extra)

    preds = load_predictions(req.tags_dir, name, version, card.classes)
    total = len(preds.image_uris)
    if total == 0:
        raise UserError(f"--tags {req.tags_dir}: no committed tagging run of {card.ref} (tag with it first, or check "
                        "--model)")
    preds = not_reviewed(preds, reviewed)
    log.info("%s: %d images in committed runs, %d not yet reviewed", card.ref, total, len(preds.image_uris))
    probs = np.nan_to_num(preds.probs, nan=0.0)
    if req.strategy == "uncertainty":
        selection = strategies.uncertainty(probs, thresholds, card.classes, req.limit, measure=req.measure,
                                           per_class=req.per_class)
        params |= {"measure": req.measure, "per_class": req.per_class}
    elif req.strategy == "random":
        selection = strategies.random_control(len(probs), req.limit, req.seed)
        params |= {"seed": req.seed}
    else:
        selection, preds, other = _disagreement(req, registry, card, preds, thresholds)
        params |= {"compare": other}
    items = [_item(preds, i, reason, thresholds) for i, reason in selection]
    return Queue(req.strategy, name, version, card.classes, dict(card.thresholds), items, params)


def _item(preds: Predictions, i: int, reason: dict, thresholds: np.ndarray) -> QueueItem:
    row = preds.probs[i]
    probabilities = {c: round(float(p), 6) for c, p in zip(preds.classes, row) if not np.isnan(p)}
    tags = tuple(c for c, p, t in zip(preds.classes, row, thresholds) if not np.isnan(p) and p >= t)
    return QueueItem(preds.image_uris[i], preds.content_sha256[i], preds.model_name, preds.model_version, tags,
                     probabilities, reason)


def _disagreement(req: QueueRequest, registry: Registry, card, preds: Predictions, thresholds: np.ndarray):
    if not req.compare_ref:
        raise UserError("--strategy disagreement needs --compare NAME@vN (the other model version)")
    other_name, other_version = registry.resolve(req.compare_ref)
    other_card = registry.card(other_name, other_version)
    if (other_name, other_version) == (card.name, card.version):
        raise UserError(f"--compare names the same version as --model ({card.ref})")
    if tuple(other_card.classes) != tuple(card.classes):
        shared = [c for c in card.classes if c in set(other_card.classes)]
        log.warning("%s and %s have different classes; comparing the %d they share", card.ref, other_card.ref,
                    len(shared))
    else:
        shared = list(card.classes)
    other = load_predictions(req.tags_dir, other_name, other_version, tuple(shared))
    by_sha = {sha: i for i, sha in enumerate(other.content_sha256)}
    rows = [i for i, sha in enumerate(preds.content_sha256) if sha in by_sha]
    log.info("%d not-yet-reviewed images tagged by both %s and %s", len(rows), card.ref, other_card.ref)
    mine = preds.subset(rows)
    cols = [card.classes.index(c) for c in shared]
    probs_a = np.nan_to_num(mine.probs[:, cols], nan=0.0)
    probs_b = np.nan_to_num(other.probs[[by_sha[sha] for sha in mine.content_sha256]], nan=0.0)
    t_b = np.array([other_card.thresholds[c] for c in shared])
    selection = strategies.disagreement(probs_a, probs_b, thresholds[cols], t_b, shared, req.limit,
                                        other_card.ref)
    return selection, mine, other_card.ref


def _label_issues(req: QueueRequest, card, reviewed):
    """Training rows whose labels the out-of-fold predictions contradict; the item starts from the given labels."""
    from models.registry import sha256_file
    from models.training import data
    from review.oof import backbone_features, out_of_fold

    if not req.data:
        raise UserError("--strategy label-issues needs --data (the training labels, as for tagger train --data)")
    manifest = data.resolve_manifest(req.data)
    report = data.DataReport(source=manifest)
    rows = data.check_rows(data.read_manifest(manifest, report, req.images), report)
    rows = [r for r in rows if not reviewed.contains(r.path, None)]
    feats, failed = backbone_features([r.path for r in rows])
    rows = [r for r in rows if r.path not in set(failed)]
    classes = tuple(sorted({t for r in rows for t in r.labels} | set(card.classes)))
    labels = np.array([[c in r.labels for c in classes] for r in rows], dtype=np.int64)
    oof = out_of_fold(feats, labels, folds=req.folds, seed=req.seed)
    selection = strategies.label_issues(labels, oof, classes, req.limit)
    # Show the model's own committed probabilities where the image was tagged (matched by content), else the
    # out-of-fold ones; the reason keeps the out-of-fold probabilities that contradict the labels either way.
    tagged = {}
    if os.path.isdir(req.tags_dir):
        preds = load_predictions(req.tags_dir, card.name, card.version, card.classes)
        tagged = {sha: row for sha, row in zip(preds.content_sha256, preds.probs)}
    items = []
    for i, reason in selection:
        sha = sha256_file(rows[i].path)
        row = tagged.get(sha)
        probabilities = ({c: round(float(p), 6) for c, p in zip(card.classes, row) if not np.isnan(p)}
                         if row is not None else {c: round(float(p), 6) for c, p in zip(classes, oof[i])})
        reason["probabilities_from"] = f"{card.ref} committed run" if row is not None else "out-of-fold head"
        items.append(QueueItem(rows[i].path, sha, card.name, card.version, tuple(sorted(rows[i].labels)),
                               probabilities, reason))
    return items, {"data": manifest, "folds": req.folds, "seed": req.seed, "images": len(rows),
                   "oof_model": "frozen ImageNet MobileNetV2 features + per-class logistic regression"}
