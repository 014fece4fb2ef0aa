"""Iterative stratification: seeded, order-independent, and every class spread across the subsets."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from models.training.split import SplitError, iterative_split


def _data(n=120, seed=0):
    rng = random.Random(seed)
    keys = [f"img{i:03d}.jpg" for i in range(n)]
    tags = ["common"] * 6 + ["mid"] * 3 + ["rare"]
    labels = [frozenset(rng.sample(tags, rng.randint(0, 2))) for _ in keys]
    return keys, labels


def test_same_seed_same_split_whatever_the_input_order():
    keys, labels = _data()
    a = iterative_split(keys, labels, seed=3)
    pairs = list(zip(keys, labels))
    random.Random(1).shuffle(pairs)
    b = iterative_split([k for k, _ in pairs], [l for _, l in pairs], seed=3)
    assert a == b
    assert a != iterative_split(keys, labels, seed=4)
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(keys)  # every image in exactly one subset


def test_every_class_lands_in_every_subset_near_its_share():
    keys, labels = _data()
    parts = iterative_split(keys, labels, seed=0)
    by_key = dict(zip(keys, labels))
    totals = Counter(t for l in labels for t in l)
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        counts = Counter(t for k in parts[name] for t in by_key[k])
        for tag, total in totals.items():
            assert abs(counts[tag] - share * total) <= 1.0, (name, tag, counts[tag], total)


def test_too_few_images_is_a_clear_error():
    with pytest.raises(SplitError, match="at least 6 images"):
        iterative_split(["a", "b", "c"], [frozenset({"x"})] * 3)
