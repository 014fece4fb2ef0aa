"""The model card contract: round-trips, and precise errors for cards a consumer must not trust."""
from __future__ import annotations

import json

import pytest

from schemas.card import CardError, ModelCard, Preprocessing


def _card(**changes) -> ModelCard:
    base = dict(name="tagger", version="v1", classes=("cat", "dog"), thresholds={"cat": 0.3, "dog": 0.7})
    base.update(changes)
    return ModelCard(**base)


def test_card_round_trips_through_json():
    card = _card(preprocessing=Preprocessing(input_size=192, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.threshold_vector == [0.3, 0.7]
    assert json.loads(card.to_json())["preprocessing"]["input_size"] == 192


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"thresholds": {"cat": 0.3}}, "no value for classes \\['dog'\\]"),
        ({"thresholds": {"cat": 0.3, "dog": 1.5}}, "must be a probability"),
        ({"thresholds": {"cat": 0.3, "dog": 0.5, "cow": 0.5}}, "unknown classes \\['cow'\\]"),
        ({"classes": ("cat", "cat")}, "duplicates"),
        ({"name": "a/b"}, "invalid card.name .a/b."),
        ({"outputs": "scores"}, "'probabilities' or 'logits'"),
    ],
)
def test_inconsistent_cards_are_refused(changes, message):
    with pytest.raises(CardError, match=message):
        _card(**changes)


def test_unknown_fields_and_newer_formats_are_refused():
    data = _card().to_dict()
    with pytest.raises(CardError, match="unknown fields \\['colour'\\]"):
        ModelCard.from_dict({**data, "colour": "red"})
    with pytest.raises(CardError, match="format_version 99 is newer than this code"):
        ModelCard.from_dict({**data, "format_version": 99})
    with pytest.raises(CardError, match="not valid JSON"):
        ModelCard.from_json("{nope")


def test_bad_preprocessing_is_refused():
    with pytest.raises(CardError, match="resize_shorter"):
        Preprocessing(input_size=224, resize="shorter_side_center_crop", resize_shorter=200)
