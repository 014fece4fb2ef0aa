"""--precision: which model file a run picks, and hand-edited variant entries in a card."""
from __future__ import annotations

import pytest

from pipelines.precision import choose_variant, has_int8_dot_product
from schemas.card import CardError, ModelCard
from schemas.errors import UserError

CLASSES = ("cat", "dog")


def _card(variants=None) -> ModelCard:
    return ModelCard(name="m", version="v1", classes=CLASSES, thresholds={"cat": 0.5, "dog": 0.5},
                     variants=variants or {})


INT8 = {"file": "model.int8.onnx", "status": "published", "sha256": "a" * 64,
        "class_thresholds": {"cat": 0.4, "dog": 0.7}}
WITHHELD = {"file": "model.int8.onnx", "status": "withheld", "sha256": "",
            "withheld_reason": "test mAP drops 0.0300 > 0.01 against FP32"}
NO_VNNI = frozenset({"sse4_2", "avx2", "fma"})


def test_auto_takes_int8_on_a_vnni_cpu_and_fp32_on_a_gpu():
    card = _card({"int8": INT8})
    assert choose_variant(card, "auto", gpu=False, flags=frozenset({"avx2", "avx512_vnni"}))[0] == "int8"
    assert choose_variant(card, "auto", gpu=False, flags=frozenset({"avx_vnni"}))[0] == "int8"
    assert choose_variant(card, "auto", gpu=True, flags=frozenset({"avx512_vnni"})) == ("fp32", "auto: GPU")
    assert choose_variant(card, "fp32", gpu=False, flags=frozenset({"avx512_vnni"}))[0] == "fp32"


def test_auto_without_vnni_runs_fp32_and_int8_stays_an_explicit_opt_in():
    card = _card({"int8": INT8})
    variant, why = choose_variant(card, "auto", gpu=False, flags=NO_VNNI)
    assert variant == "fp32" and "VNNI" in why
    assert choose_variant(card, "int8", gpu=False, flags=NO_VNNI) == ("int8", "requested")
    assert not has_int8_dot_product(NO_VNNI)


def test_int8_on_a_version_without_a_published_variant_is_a_one_line_error_with_the_reason():
    assert choose_variant(_card({"int8": WITHHELD}), "auto", gpu=False, flags=frozenset({"avx512_vnni"}))[0] == "fp32"
    with pytest.raises(UserError, match="withheld: test mAP drops 0.0300"):
        choose_variant(_card({"int8": WITHHELD}), "int8", gpu=False)
    with pytest.raises(UserError, match="tagger models quantize m@v1"):
        choose_variant(_card(), "int8", gpu=False)
    with pytest.raises(UserError, match="--precision must be one of"):
        choose_variant(_card(), "bf16", gpu=False)


def test_a_recalibrated_variant_brings_its_own_thresholds():
    card = _card({"int8": INT8})
    assert card.for_variant("int8").threshold_vector == [0.4, 0.7]
    assert card.for_variant("fp32").threshold_vector == [0.5, 0.5]
    assert card.published_variants() == ["fp32", "int8"]
    assert ModelCard.from_json(card.to_json()).variants == card.variants


@pytest.mark.parametrize("entry, message", [
    ({**INT8, "file": "../../other/model.onnx"}, "plain .onnx file name"),
    ({**INT8, "file": "/etc/passwd"}, "plain .onnx file name"),
    ({**INT8, "file": "card.json"}, "plain .onnx file name"),
    ({**INT8, "file": 3}, "plain .onnx file name"),
    ({**INT8, "status": "maybe"}, "status must be one of"),
    ({**INT8, "class_thresholds": {"cat": 1.5, "dog": 0.5}}, "probability in"),
    ({**INT8, "class_thresholds": {"cat": 0.5}}, "one threshold per class"),
    ({**INT8, "sha256": None}, "sha256 must be a string"),
    ("int8", "must be an object"),
])
def test_hand_edited_variant_entries_are_refused_with_a_precise_error(entry, message):
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict({**_card().to_dict(), "variants": {"int8": entry}})
