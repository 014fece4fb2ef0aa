"""Model references are checked against one grammar at the edge: nothing outside it becomes a registry path."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.cli import main
from models.registry import Registry, RegistryError
from schemas.model_refs import NAME_GRAMMAR, RefError, parse_ref
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

BAD_REFS = [
    "", "@", "@production", "adv@", "adv@../v1/card", "../x@v1", "adv/../x", "/abs/path@v1", "adv@/etc/passwd",
    "adv@v0", "adv@v01", "adv@V1", "Adv", "adv@v1@v2", "adv@.", "adv@..", "adv@_aliases", "adv@v1 ", " adv",
    "adv\n", "adv@production\x00", "x" * 65, ".hidden", "_aliases", "ａｄｖ", "adv\u200b", "adv@prod\u0131uction",
    "adv@" + "9" * 20, "adv@v1/..", "adv\\x@v1", "adv@v-1",
]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_bad_references_are_refused_in_one_line(ref, registry_root, tiny_model):
    with pytest.raises(RegistryError) as exc:
        Registry(registry_root).load(ref)
    assert "\n" not in str(exc.value)
    for argv in (["models", "show", ref], ["models", "promote", ref], ["models", "rollback", ref],
                 ["models", "seal", ref, "--reason", "x"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main([*argv, "--registry", registry_root]) == 2
        assert err.getvalue().count("\n") == 1 and "error:" in err.getvalue()
    assert Registry(registry_root).alias("tagger") == tiny_model.version  # nothing moved


def test_tag_refuses_a_bad_reference_before_reading_anything(registry_root, tiny_model, tmp_path):
    tagger = os.path.join(os.path.dirname(sys.executable), "tagger")
    result = subprocess.run([tagger, "tag", "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"),
                             "--registry", registry_root, "--model", "tagger@../v1/card"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "invalid model reference 'tagger@../v1/card'" in result.stderr


def test_good_references_resolve(registry_root):
    publish_tiny_model(registry_root, CLASSES, name="coco-80.v2_b")
    registry = Registry(registry_root)
    assert registry.resolve("coco-80.v2_b") == ("coco-80.v2_b", "v1")
    assert registry.resolve("coco-80.v2_b@v1") == ("coco-80.v2_b", "v1")
    assert registry.names() == ["coco-80.v2_b"]


def test_directories_outside_the_grammar_are_not_models(registry_root, tiny_model):
    for stray in ("lost+found", "Tagger", ".staging-x", "_tmp"):
        os.makedirs(os.path.join(registry_root, stray, "v1"))
    assert Registry(registry_root).names() == ["tagger"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_either_a_grammatical_reference_or_refused(text):
    try:
        ref = parse_ref(text)
    except RefError as exc:
        assert "\n" not in str(exc).replace("\\n", "")
        return
    import re

    assert re.fullmatch(NAME_GRAMMAR, ref.name, re.ASCII)
    assert re.fullmatch(r"[a-z0-9._-]+", ref.which, re.ASCII) and not ref.which.startswith((".", "_"))
