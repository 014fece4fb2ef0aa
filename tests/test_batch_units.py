"""Pure pieces of batch tagging, and the paths a user hits first: thresholds, accounting, inputs, CLI errors."""
from __future__ import annotations

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from jobs.cli import main as cli_main
from pipelines.catalog import connect, load_queries
from pipelines.inputs import is_manifest, resolve_entry
from pipelines.model_handler import CPU, CUDA, CardModelHandler, choose_providers
from pipelines.progress import format_progress
from pipelines.records import ClassProbabilities, ImageInput
from pipelines.transforms import TagImages, apply_thresholds
from schemas.tagging import RunManifest
from tests.synthetic import CLASSES, encode, make_sample


def test_apply_thresholds_uses_each_class_threshold():
    tags, probs = apply_thresholds([0.9, 0.3, 0.5], ("a", "b", "c"), [0.95, 0.2, 0.5])
    assert tags == ("b", "c") and probs == pytest.approx({"a": 0.9, "b": 0.3, "c": 0.5})
    with pytest.raises(ValueError, match="2 classes"):
        apply_thresholds([0.1, 0.2, 0.3], ("a", "b"), [0.5, 0.5])


def test_probabilities_read_as_the_class_dict_they_replace():
    """The pipelines carry the model's vector, not a dict per image; every consumer (decision messages,
    Parquet rows, pickling between stages) still reads {class: probability}."""
    import pickle

    _, probs = apply_thresholds(np.array([0.25, 0.5, 0.75]), ("a", "b", "c"), [0.5, 0.5, 0.5])
    assert dict(probs) == {"a": 0.25, "b": 0.5, "c": 0.75} and list(probs) == ["a", "b", "c"]
    assert probs["c"] == 0.75 and isinstance(probs["c"], float) and "d" not in probs and len(probs) == 3
    with pytest.raises(KeyError):
        probs["d"]
    again = pickle.loads(pickle.dumps(probs))
    assert again == probs == {"a": 0.25, "b": 0.5, "c": 0.75} and list(again.items()) == list(probs.items())
    with pytest.raises(ValueError, match="for 2 classes"):
        ClassProbabilities(("a", "b"), np.zeros(3, np.float32))


def test_manifest_refuses_an_accounting_mismatch():
    fields = dict(run_id="r", run_date="2026-01-01", model_name="m", model_version="v1", runner="x",
                  started_at="", finished_at="", incremental=False, inputs=[])
    RunManifest(matched=5, tagged=3, failed=1, skipped=1, **fields)
    with pytest.raises(ValueError, match="accounting mismatch"):
        RunManifest(matched=5, tagged=3, failed=1, skipped=0, **fields)
    RunManifest(matched=5, tagged=3, failed=1, skipped=1, tag_counts={"cat": 3, "dog": 1}, **fields)
    for bad in ({"cat": 4}, {"cat": 0}, {"cat": "3"}, {"cat": True}, ["cat"], {"cat": 1.5}):
        with pytest.raises(ValueError, match="tag_counts"):
            RunManifest(matched=5, tagged=3, failed=1, skipped=1, tag_counts=bad, **fields)


def test_manifest_inputs_and_relative_entries():
    assert is_manifest("/data/tonight.txt") and is_manifest("gs://b/list.manifest")
    assert not is_manifest("/data/*.txt") and not is_manifest("/data/photo.jpg")
    assert resolve_entry("/lists/a.txt", "img/1.jpg") == "/lists/img/1.jpg"
    assert resolve_entry("/lists/a.txt", "gs://b/1.jpg") == "gs://b/1.jpg"


def test_providers_prefer_cuda_and_always_keep_cpu():
    assert choose_providers([CPU]) == [CPU]
    assert choose_providers(["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]


def test_progress_line_has_rate_and_eta():
    assert format_progress(50, 2, 10.0, 150) == "50/150 images done, 5.0 images/s, 2 errors, ETA 20 s"
    assert "ETA" not in format_progress(50, 0, 10.0, None)


def test_queries_on_an_empty_output_return_no_rows(tmp_path):
    con = connect(str(tmp_path))
    for name, sql in load_queries().items():
        if name != "setup":
            params = {k: v for k, v in {"tag": "red", "min_probability": 0.5, "version_a": "v1",
                                        "version_b": "v2", "model_a": "tagger", "model_b": "tagger"}.items() if f"${k}" in sql}
            assert con.execute(sql, params).fetchall() == [], name


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_model, registry_root):
    assert cli_main(["tag", "--input", str(tmp_path / "nothing*.jpg"), "--output", str(tmp_path / "o"),
                     "--registry", registry_root]) == 2
    err = capsys.readouterr().err.strip()
    assert "matched no files" in err and "\n" not in err
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert cli_main(["tag", "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "o"),
                     "--registry", registry_root, "--model", "nosuch@production"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nosuch" in err and "\n" not in err


class _WrongInputName(CardModelHandler):
    """A model whose card names an input the graph does not have: every batch fails in onnxruntime."""

    def resolve(self):
        card, path, variant = super().resolve()
        return card.replace(input_name="no_such_input"), path, variant


def test_a_failing_inference_batch_becomes_dead_letters(tiny_model, registry_root):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    rng = __import__("random").Random(3)
    inputs = [ImageInput(f"mem://{i}", encode(make_sample(rng).image)) for i in range(5)]
    handler = _WrongInputName(registry_root, tiny_model.ref, min_batch_size=2, max_batch_size=2)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        tagged, failed = p | beam.Create(inputs) | TagImages(tiny_model, handler)
        assert_that(tagged, equal_to([]), label="none tagged")
        assert_that(failed | beam.Map(lambda f: (f.uri, f.stage)),
                    equal_to([(f"mem://{i}", "inference") for i in range(5)]), label="all dead letters")


def test_tag_images_transform_tags_in_memory_inputs(tiny_model, registry_root):
    """The streaming job's view: ImageInput in, Tagged with model version and class probabilities out."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    rng = __import__("random").Random(4)
    inputs = [ImageInput(f"kafka://t/0/{i}", encode(make_sample(rng).image)) for i in range(3)]
    inputs.append(ImageInput("kafka://t/0/3", b"not an image"))
    handler = CardModelHandler(registry_root, tiny_model.ref)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        tagged, failed = p | beam.Create(inputs) | TagImages(tiny_model, handler)
        assert_that(
            tagged | beam.Map(lambda t: (t.info.uri, t.model_version, sorted(t.probabilities) == sorted(CLASSES),
                                         all(0.0 <= p <= 1.0 for p in t.probabilities.values()))),
            equal_to([(f"kafka://t/0/{i}", tiny_model.version, True, True) for i in range(3)]), label="tagged")
        assert_that(failed | beam.Map(lambda f: (f.uri, f.stage, f.error_class)),
                    equal_to([("kafka://t/0/3", "decode", "not_an_image")]), label="failed")


def test_runner_choice_and_beam_option_pass_through():
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from pipelines.batch import is_local_run, local_options

    from jobs.tag_cmd import _runs_locally

    assert is_local_run([]) and is_local_run(["--runner=DirectRunner"])
    assert not is_local_run(["--runner=DataflowRunner"]) and not is_local_run(["--runner=FlinkRunner"])
    for args in ([], ["--runner=DirectRunner"], ["--runner", "FnApiRunner"], ["--runner=DataflowRunner"],
                 ["--runner", "FlinkRunner", "--parallelism=4"]):
        assert _runs_locally(args) == is_local_run(args), args  # the CLI decides before importing Beam
    options, workers = local_options(["--direct_num_workers=1", "--project=acme"], 0)
    assert workers == 1 and options.view_as(GoogleCloudOptions).project == "acme"
    assert options.get_all_options()["direct_running_mode"] == "multi_threading"
    _, workers = local_options([], 0)
    assert workers == os.cpu_count()


def test_tag_writer_keeps_each_rows_probabilities_across_row_groups_and_class_lists(tmp_path, monkeypatch):
    """A bundle whose rows change class list (two models' rows) and span several row groups reads back with
    every row's own probabilities."""
    import duckdb
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipelines import sinks
    from pipelines.records import ImageInfo, Tagged

    monkeypatch.setattr(sinks, "ROW_GROUP_VALUES", 40)  # ~2-3 rows per row group
    rows = []
    for i in range(9):
        classes = ("cat", "dog") if i < 5 else ("cat", "dog", "fox")
        probs = {c: round(0.1 * i + 0.01 * j, 4) for j, c in enumerate(classes)}
        rows.append(Tagged(ImageInfo(f"/a/{i}.jpg", f"{i:064x}", 10, 10, "JPEG"), (), probs, "m", "v1"))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | beam.Create(rows, reshuffle=False) | sinks.WriteRows("tags", str(tmp_path), "run1")
    (path,) = list(tmp_path.glob("tags-*.parquet"))
    got = duckdb.sql(f"SELECT image_uri, map_keys(probabilities), map_values(probabilities) FROM '{path}'").fetchall()
    assert sorted(got) == sorted(
        (t.info.uri, list(t.probabilities), pytest.approx(list(t.probabilities.values()))) for t in rows
    )
