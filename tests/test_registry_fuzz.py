"""Property-based: any value a hand-edited card or alias file can hold is a one-line error, never a traceback.

Hypothesis rewrites one field of a published card (or of the production alias file) with a hostile JSON value,
or damages the whole document (truncated, binary, not UTF-8, empty, a bare value), then drives every reader:
``Registry.load`` (what ``tagger tag`` and the batch/streaming workers call), ``models show|list|promote|
rollback``, the streaming hot-reload check and training's promotion gate. Each must refuse in one line that
names the file (and, for a malformed value, the field); an uncaught exception fails the test.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobs.cli import main
from models.registry import Registry, RegistryError
from models.training import gate
from pipelines.streaming.hot_model import HotReloadModelHandler
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(["", "abc", "192", "v1"]),
)
hostile_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
# Values that are almost right: class lists with duplicates, blanks, control characters or look-alikes, and
# threshold maps with missing, extra or out-of-range entries, so the consistency checks get exercised too.
class_names = st.sampled_from([*CLASSES, "", " ", "red ", "r\x00ed", "cir\u0063le", "ci\u0301rcle", "Red"])
near_misses = st.one_of(
    st.lists(class_names, max_size=8),
    st.dictionaries(class_names, st.one_of(st.floats(), st.integers(-2, 2), st.booleans()), max_size=8),
)
json_values = st.one_of(hostile_values, near_misses)


@pytest.fixture(scope="module")
def fuzz_registry(tmp_path_factory):
    """v1 runs in production; v2 (same classes) is the version a mutation lands on, promoted over v1."""
    root = str(tmp_path_factory.mktemp("fuzz") / "registry")
    publish_tiny_model(root, CLASSES)  # v1, production
    publish_tiny_model(root, CLASSES, seed=1, promote=False)
    model = HotReloadModelHandler(root, "tagger@production").load_model()  # a stream running v1
    Registry(root).promote("tagger", "v2", reason="fixture: v2 is the new production")
    return root, model


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def _assert_every_reader_refuses(root: str, model, damaged_file: str, field: str | None, writers: tuple) -> None:
    """Readers of production refuse; ``writers`` (promote, rollback) too when the alias itself is unreadable."""
    registry = Registry(root)
    with pytest.raises(RegistryError) as exc:
        registry.load("tagger@production")
    message = str(exc.value)
    assert "\n" not in message and damaged_file in message, message
    if field and "changed after publishing (sha256" not in message:  # malformed: the field is named
        assert field in message or (field in ("name", "version") and " says " in message), message

    for argv in (["models", "show", "tagger"], *writers):
        code, err = _cli(*argv, "--registry", root)
        assert code == 2 and err.count("\n") == 1 and damaged_file in err, (argv, err)

    handler = HotReloadModelHandler(root, "tagger@production", check_interval_s=0)
    assert not handler.maybe_reload(model)  # keeps serving v1; a warning or error is logged, nothing raised
    assert model.card.version == "v1"
    batch = [np.zeros((3, 64, 64), np.float32)]
    assert list(handler.run_inference(batch, model))[0].model_id == "tagger@v1#fp32"

    try:
        production = gate.evaluate_production(registry, "tagger", [], np.zeros((0, len(CLASSES))), CLASSES)
    except RegistryError as err:  # an unreadable alias: training stops in one line
        assert writers and "\n" not in str(err) and damaged_file in str(err)
    else:
        assert production is not None and "error" in production  # production cannot be trusted: it is kept


CARD_WRITERS = (["models", "promote", "tagger@v2"],)  # rollback to v1 is the remedy and must work
ALIAS_WRITERS = (["models", "promote", "tagger@v1"], ["models", "rollback", "tagger"])


def _assert_listed_as_broken(root: str, version: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        assert main(["models", "list", "--registry", root]) == 1
    rows = {line.split()[1]: line for line in out.getvalue().splitlines()[1:]}
    assert "BROKEN" in rows[version] and "broken entr" in err.getvalue()
    assert "BROKEN" not in rows["v1"]  # the rest is still listed


@contextlib.contextmanager
def _replaced(path: str, data: bytes):
    backup = path + ".orig"
    shutil.copyfile(path, backup)
    try:
        with open(path, "wb") as fh:
            fh.write(data)
        yield
    finally:
        os.replace(backup, path)


def _set(document: dict, path: tuple, value) -> dict:
    data = json.loads(json.dumps(document))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _dumps(data) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()  # NaN/Infinity are written as a hand edit would


CARD_FIELDS = [("thresholds", CLASSES[0]), ("thresholds",), ("classes",), ("classes", 0), ("preprocessing",),
               ("preprocessing", "input_size"), ("preprocessing", "mean"), ("preprocessing", "std", 1),
               ("preprocessing", "resize"), ("name",), ("version",), ("onnx_sha256",), ("files",),
               ("files", "model.onnx"), ("metrics",), ("outputs",), ("format_version",), ("parent_version",),
               ("input_name",), ("created_at",), ("library_versions",)]


@pytest.mark.slow
@FUZZ
@given(field=st.sampled_from(CARD_FIELDS), value=json_values)
def test_any_value_in_any_card_field_is_a_one_line_error(fuzz_registry, field, value):
    root, model = fuzz_registry
    path = os.path.join(root, "tagger", "v2", "card.json")
    original = open(path, "rb").read()
    mutated = _dumps(_set(json.loads(original), field, value))
    assume(mutated != original)
    with _replaced(path, mutated):
        _assert_every_reader_refuses(root, model, path, str(field[0]), CARD_WRITERS)
        _assert_listed_as_broken(root, "v2")


@pytest.mark.slow
@FUZZ
@given(kind=st.sampled_from(["truncate", "binary", "latin1", "empty", "bare", "duplicate", "nested", "huge"]),
       cut=st.integers(min_value=0, max_value=10**6), junk=st.binary(min_size=1, max_size=64), bare=json_scalars)
def test_damaged_card_documents_are_one_line_errors(fuzz_registry, kind, cut, junk, bare):
    root, model = fuzz_registry
    path = os.path.join(root, "tagger", "v2", "card.json")
    original = open(path, "rb").read()
    mutated = {
        "truncate": original[: cut % len(original)],
        "binary": junk + original[cut % len(original):],
        "latin1": original.replace(b'"a"', 'é"'.encode("latin-1"), 1) + b"\xff",
        "empty": b"   \n",
        "bare": _dumps(bare),
        "duplicate": original.replace(b'"name":', b'"name": "tagger", "name":', 1),
        "nested": b"[" * 100000 + b"]" * 100000,
        "huge": original.replace(b'"format_version": 1', b'"format_version": 1' + b"0" * 5000, 1),
    }[kind]
    assume(mutated != original)
    with _replaced(path, mutated):
        _assert_every_reader_refuses(root, model, path, None, CARD_WRITERS)
        _assert_listed_as_broken(root, "v2")


ALIAS_FIELDS = [("version",), ("history",), ("history", 0), ("history", 0, "version"), ("history", -1, "previous"),
                ("alias",), ("card_sha256",)]


@pytest.mark.slow
@FUZZ
@given(field=st.sampled_from(ALIAS_FIELDS), value=json_values, whole=st.one_of(st.none(), json_values))
def test_any_value_in_the_alias_file_is_a_one_line_error(fuzz_registry, field, value, whole):
    root, model = fuzz_registry
    path = os.path.join(root, "tagger", "_aliases", "production.json")
    original = open(path, "rb").read()
    data = json.loads(original)
    if whole is not None and not isinstance(whole, dict):
        mutated = _dumps(whole)  # a bare string, number, list or null as the whole alias
    else:
        mutated = _dumps(_set(data, field, value))
    assume(mutated != original)
    with _replaced(path, mutated):
        try:
            Registry(root).alias("tagger")
        except RegistryError as exc:  # unreadable: every reader and writer of the alias refuses
            assert "\n" not in str(exc) and path in str(exc)
            _assert_every_reader_refuses(root, model, path, str(field[0]) if whole is None else None,
                                         ALIAS_WRITERS)
            _assert_listed_as_broken(root, "-")
            return
        try:
            Registry(root).load("tagger@production")
        except RegistryError as exc:  # readable, but not what was promoted (e.g. version edited by hand)
            assert "\n" not in str(exc) and path in str(exc)
            _assert_every_reader_refuses(root, model, path, None, ())
        else:  # the edit kept a valid, consistent alias (e.g. an old entry's reason): still one version
            assert Registry(root).resolve("tagger@production")[1] in ("v1", "v2")
