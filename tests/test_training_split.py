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


def _digests(keys):
    import hashlib

    return [hashlib.sha256(k.encode()).hexdigest() for k in keys]  # stands in for the image bytes' sha256


def test_content_split_never_moves_an_image_when_data_is_added():
    from models.training.split import content_split, content_split_definition

    definition = content_split_definition()
    keys = [f"img{i:04d}.jpg" for i in range(400)]
    before = content_split(keys, _digests(keys), definition)
    more = keys + [f"new{i:04d}.jpg" for i in range(300)]
    after = content_split(more, _digests(more), definition)
    for name in ("train", "val", "test"):
        assert set(before[name]) <= set(after[name]), name
    assert abs(len(after["test"]) / len(more) - 0.15) < 0.05  # the fractions hold on average


def test_identical_bytes_under_two_names_land_in_the_same_subset():
    from models.training.split import content_split, content_split_definition

    keys = [f"img{i:03d}.jpg" for i in range(60)]
    digests = _digests(keys)
    parts = content_split(keys + ["copy-of-img007.jpg"], digests + [digests[7]], content_split_definition())
    home = next(name for name, members in parts.items() if "img007.jpg" in members)
    assert "copy-of-img007.jpg" in parts[home]


def test_content_split_definition_rejects_fractions_that_leave_no_training_data():
    from models.training.split import content_split_definition

    with pytest.raises(SplitError, match="leave training data"):
        content_split_definition(test_fraction=0.6, val_fraction=0.5)
