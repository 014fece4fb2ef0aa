"""Multi-label stratified train/validation/test split (iterative stratification, Sechidis et al. 2011).

Random splits of small multi-label sets often leave rare classes out of validation or test entirely; iterative
stratification assigns the rarest label's examples first, each to the subset that still wants it most, so every
class is spread as evenly as its count allows. Seeded, and independent of input order.
"""
from __future__ import annotations

import random
from typing import Sequence

from schemas.errors import UserError

SUBSETS = ("train", "val", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)


class SplitError(UserError):
    pass


def iterative_split(
    keys: Sequence[str],
    labels: Sequence[frozenset[str]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign each key to train/val/test; returns subset -> sorted keys."""
    if len(keys) != len(labels) or len(set(keys)) != len(keys):
        raise SplitError("split needs one label set per unique image")
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    minimum = len(SUBSETS) * 2
    if len(keys) < minimum:
        raise SplitError(f"need at least {minimum} images to split into train/val/test, got {len(keys)}")
    rng = random.Random(seed)
    order = sorted(range(len(keys)), key=lambda i: keys[i])  # input order must not matter
    rng.shuffle(order)
    remaining = set(order)
    want = [r * len(keys) for r in ratios]
    counts: dict[str, int] = {}
    for i in order:
        for tag in labels[i]:
            counts[tag] = counts.get(tag, 0) + 1
    want_label = [{tag: r * n for tag, n in counts.items()} for r in ratios]
    assigned: dict[int, int] = {}

    def place(i: int, tag: str | None) -> None:
        if tag is None:
            best = max(want)
            options = [k for k in range(len(ratios)) if want[k] == best]
        else:
            best_l = max(w[tag] for w in want_label)
            options = [k for k in range(len(ratios)) if want_label[k][tag] == best_l]
            best = max(want[k] for k in options)
            options = [k for k in options if want[k] == best]
        k = rng.choice(options)
        assigned[i] = k
        remaining.discard(i)
        want[k] -= 1
        for t in labels[i]:
            want_label[k][t] -= 1

    while remaining:
        live: dict[str, list[int]] = {}
        for i in order:
            if i in remaining:
                for tag in labels[i]:
                    live.setdefault(tag, []).append(i)
        if not live:  # only unlabelled images left
            for i in [i for i in order if i in remaining]:
                place(i, None)
            break
        fewest = min(len(v) for v in live.values())
        tag = rng.choice(sorted(t for t, v in live.items() if len(v) == fewest))
        for i in live[tag]:
            place(i, tag)
    out = {name: sorted(keys[i] for i, k in assigned.items() if k == idx) for idx, name in enumerate(SUBSETS)}
    empty = [name for name, members in out.items() if not members]
    if empty:
        raise SplitError(f"the {', '.join(empty)} split would be empty; add images or change the ratios")
    return out


# --- The stable split: a function of each image's content, so adding data never moves an image. ---------------

CONTENT_SPLIT_VERSION = "content-sha256-v1"
DEFAULT_TEST_FRACTION = 0.15
DEFAULT_VAL_FRACTION = 0.15  # used only by the fine-tune recipe (early stopping); the probe trains on it


def content_bucket(content_sha256: str, salt: str = CONTENT_SPLIT_VERSION) -> float:
    """A uniform number in [0, 1) fixed by the image's bytes (and the salt), never by the dataset around it."""
    import hashlib

    digest = hashlib.sha256(f"{salt}:{content_sha256.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def content_split_definition(test_fraction: float = DEFAULT_TEST_FRACTION,
                             val_fraction: float = DEFAULT_VAL_FRACTION) -> dict:
    """What the card records; two models were split the same way iff their definitions are equal."""
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise SplitError(f"split fractions must leave training data: test {test_fraction}, val {val_fraction}")
    return {"method": CONTENT_SPLIT_VERSION, "salt": CONTENT_SPLIT_VERSION, "test_fraction": test_fraction,
            "val_fraction": val_fraction, "evaluation_subset": "test"}


def content_split(keys: Sequence[str], content_sha256: Sequence[str], definition: dict) -> dict[str, list[str]]:
    """train/val/test by each image's content bucket: [0, test) test, [test, test+val) val, the rest train.

    Identical bytes under two names land in the same subset, so a duplicate never leaks across the split.
    Stratification is given up for stability: on small data a class can miss the test split (the metrics then
    average over the classes it has); cross-validation on the training images is the quality figure.
    """
    if len(keys) != len(content_sha256) or len(set(keys)) != len(keys):
        raise SplitError("split needs one content hash per unique image")
    out: dict[str, list[str]] = {name: [] for name in SUBSETS}
    test, val = definition["test_fraction"], definition["val_fraction"]
    for key, digest in zip(keys, content_sha256):
        u = content_bucket(digest, definition["salt"])
        out["test" if u < test else "val" if u < test + val else "train"].append(key)
    for name in out:
        out[name].sort()
    if not out["test"] or not (out["train"] or out["val"]):
        raise SplitError(f"the content split of {len(keys)} images left "
                         f"{'no test images' if not out['test'] else 'nothing to train on'}; add images")
    return out


def content_folds(content_sha256: Sequence[str], k: int, salt: str = "folds") -> list[int]:
    """Cross-validation fold of each image, also fixed by content (stable as the data grows)."""
    return [min(k - 1, int(content_bucket(d, salt) * k)) for d in content_sha256]
