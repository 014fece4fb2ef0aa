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
