"""Every bad invocation is one line on stderr naming the problem, a non-zero exit status, and no traceback.

Two tables: the invocations users reported, run as real ``tagger`` processes (so an abort at interpreter
teardown or a stray log line would show), and every typed option of every subcommand with each bad value its
type knows (generated from the parser, so options other branches add are covered the day they land).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from jobs.cli import build_parser, main
from tests.kafka_broker import free_port
from tests.synthetic import write_dataset

TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real inputs for the parts of each command line that are not under test."""
    root = tmp_path_factory.mktemp("cli")
    write_dataset(str(root / "data"), 4)
    (root / "a-file").write_text("not a directory\n")
    (root / "dataset").mkdir()
    from tests.model_factory import publish_tiny_model
    from tests.synthetic import CLASSES

    publish_tiny_model(str(root / "reg"), CLASSES)
    return root


def _closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


def reported_cases(w) -> list[tuple[str, list[str], str]]:
    """(case id, argv, text the one stderr line must contain)."""
    images = str(w / "data" / "images" / "*.jpg")
    tag = ["tag", "--input", images, "--output", str(w / "out"), "--registry", str(w / "reg")]
    train = ["train", "--data", str(w / "data"), "--registry", str(w / "reg"), "--work-dir", str(w / "wd")]
    stream = ["stream", "--topic", "i", "--decisions-topic", "d", "--dlq-topic", "q", "--group", "g",
              "--output", str(w / "s"), "--registry", str(w / "reg")]
    ingest = ["feedback", "ingest", "--topic", "t", "--group", "g", "--dataset", str(w / "dataset")]
    replay = ["stream", "replay", "--topic", "t", "--input", images]
    nightly = ["scheduled", "nightly", "--input", images, "--tagged", str(w / "t"), "--dataset", str(w / "d")]
    return [
        ("typo-of-ours", [*tag, "--incremantal"], "did you mean --incremental?"),
        ("typo-of-ours-with-value", [*tag, "--ouput", "x"], "did you mean --output?"),
        ("typo-of-beam", [*tag, "--temp_locaton=/tmp/x"], "did you mean --temp_location?"),
        ("beam-option-bad-value", [*tag, "--direct_num_workers=many"], "--direct_num_workers"),
        ("unknown-runner", [*tag, "--runner=NoSuchRunner"], "NoSuchRunner is not a Beam runner"),
        ("runner-class-not-importable", [*tag, "--runner=no.such.module.Runner"], "cannot import no.such.module"),
        ("output-under-dev-null", [*tag[:3], "--output", "/dev/null/x"], "/dev/null is a file"),
        ("output-is-a-file", [*tag[:3], "--output", str(w / "a-file")], "is a file, not a directory"),
        ("output-read-only", [*tag[:3], "--output", "/proc/tagger-out"], "is not writable"),
        ("negative-workers", [*tag, "--workers", "-3"], "--workers"),
        ("failed-fraction-above-one", [*tag, "--max-failed-fraction", "2"], "--max-failed-fraction"),
        ("tag-unknown-model", [*tag, "--model", "nosuch@production"], "nosuch"),
        ("train-batch-size-zero", [*train, "--batch-size", "0"], "--batch-size"),
        ("train-epochs-zero", [*train, "--epochs", "0"], "--epochs"),
        ("train-registry-under-dev-null", [*train[:3], "--registry", "/dev/null/reg"], "--registry /dev/null/reg"),
        ("train-work-dir-is-a-file", [*train[:5], "--work-dir", str(w / "a-file")], "--work-dir"),
        ("train-data-missing", ["train", "--data", "/nonexistent/data", "--registry", str(w / "reg")], "--data"),
        ("train-resume-missing", ["train", "--resume", "/nonexistent/checkpoint.pt"], "--resume"),
        ("stream-missing-options", ["stream", "--topic", "images"], "missing required options"),
        ("stream-bootstrap-not-a-port", [*stream, "--bootstrap", "kafka:notaport"], "kafka:notaport"),
        ("stream-bootstrap-port-range", [*stream, "--bootstrap", "localhost:99999"], "localhost:99999"),
        ("stream-broker-unreachable", [*stream, "--bootstrap", _closed_port()], "cannot reach Kafka"),
        ("stream-unknown-host", [*stream, "--bootstrap", "no-such-host.invalid:9092"], "unknown host"),
        ("stream-output-is-a-file", [*stream[:-4], "--output", str(w / "a-file"), "--bootstrap", "k:1"],
         "is a file, not a directory"),
        ("stream-typo-of-beam", [*stream, "--bootstrap", "k:1", "--streeming"], "did you mean --streaming?"),
        ("replay-bootstrap-not-a-port", [*replay, "--bootstrap", "kafka:notaport"], "kafka:notaport"),
        ("replay-bootstrap-port-range", [*replay, "--bootstrap", "localhost:99999"], "localhost:99999"),
        ("replay-broker-unreachable", [*replay, "--bootstrap", _closed_port()], "cannot reach Kafka"),
        ("replay-password-file-missing", [*replay, "--bootstrap", "k:1", "--sasl-plain-password-file", "/nonexistent"],
         "--sasl-plain-password-file"),
        ("ingest-bootstrap-not-a-port", [*ingest, "--bootstrap", "kafka:notaport"], "kafka:notaport"),
        ("ingest-broker-unreachable", [*ingest, "--bootstrap", _closed_port()], "cannot reach Kafka"),
        ("ingest-dataset-is-a-file", ["feedback", "ingest", "--input", str(w / "a-file"), "--dataset",
                                      str(w / "a-file")], "--dataset"),
        ("feedback-status-missing-dataset", ["feedback", "status", "--dataset", "/nonexistent"], "/nonexistent"),
        ("feedback-status-not-a-dataset", ["feedback", "status", "--dataset", str(w / "data")],
         "is not a feedback dataset"),
        ("models-list-registry-is-a-file", ["models", "list", "--registry", str(w / "a-file")], "is a file"),
        ("models-show-unknown", ["models", "show", "nosuch@production", "--registry", str(w / "reg")], "nosuch"),
        ("models-promote-bad-ref", ["models", "promote", "a/b@v1"], "a/b@v1"),
        ("scheduled-state-under-dev-null", [*nightly, "--state", "/dev/null/state"], "--state"),
        ("scheduled-negative-min-feedback", ["scheduled", "weekly", "--state", str(w / "st"), "--dataset", "d",
                                             "--data", "d", "--min-new-feedback", "-1"], "--min-new-feedback"),
        ("demo-work-dir-under-dev-null", ["demo", "--work-dir", "/dev/null/demo"], "--work-dir"),
        ("unknown-subcommand-option", ["models", "list", "--registy", "x"], "did you mean --registry?"),
        ("unknown-command", ["tagg"], "tagg"),
        ("no-command", [], "COMMAND"),
    ]


def _case_ids():
    return [case[0] for case in reported_cases(__import__("pathlib").Path("/w"))]


@pytest.fixture(scope="module")
def outcomes(world):
    """Each reported case as its own `tagger` process, four at a time (they mostly wait on imports)."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "TAGGER_REGISTRY": str(world / "reg")}

    def run(case):
        name, argv, expected = case
        return name, (subprocess.run([TAGGER, *argv], capture_output=True, text=True, env=env, timeout=180,
                                     stdin=subprocess.DEVNULL), expected)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, reported_cases(world)))


@pytest.mark.slow
@pytest.mark.parametrize("case", _case_ids())
def test_reported_bad_invocations_are_one_line(outcomes, case):
    result, expected = outcomes[case]
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr
    assert lines[0].startswith("tagger")


# ------------------------------------------------------------------------------- every typed option, generated
def _subparsers(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*words, name))


def _scheduled_parser():
    from jobs.scheduled import build_parser as scheduled_parser

    return scheduled_parser()


def typed_option_cases():
    cases = []
    for words, parser in [*_subparsers(build_parser()), *(( ("scheduled", *w), p)
                                                          for w, p in _subparsers(_scheduled_parser()))]:
        for action in parser._actions:
            bad_values = getattr(action.type, "bad_values", ())
            for value in bad_values:
                option = action.option_strings[0] if action.option_strings else None
                argv = [*words, f"{option}={value}"] if option else [*words, value]
                cases.append(pytest.param(argv, option or action.dest,
                                          id=f"{' '.join(words)} {option or action.dest}={value!r}"))
    return cases


@pytest.mark.parametrize("argv, option", typed_option_cases())
def test_every_typed_option_rejects_its_bad_values_in_one_line(argv, option, capfd):
    code = main(argv)  # scheduled's own parser too, through `tagger scheduled`
    err = capfd.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and option in err and "Traceback" not in err, err


def test_the_generated_table_covers_every_numeric_option():
    """A bare ``type=int``/``float`` would accept -3 or nan: every number goes through a checked type."""
    unchecked = []
    for words, parser in [*_subparsers(build_parser()), *_subparsers(_scheduled_parser())]:
        for action in parser._actions:
            if action.type in (int, float) or (action.type is not None and not hasattr(action.type, "bad_values")
                                               and action.type is not str):
                unchecked.append(f"{' '.join(words)} {action.option_strings}")
    assert not unchecked


def test_every_option_has_help_and_shows_its_default():
    for words, parser in [*_subparsers(build_parser()), *_subparsers(_scheduled_parser())]:
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                       argparse._SubParsersAction)):
                continue
            assert action.help, f"tagger {' '.join(words)} {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
                    and action.help != argparse.SUPPRESS and action.nargs != 0:  # flags have no default to show
                assert "default:" in parser._get_formatter()._get_help_string(action), action.option_strings
        if words == ("stream",):
            assert text.count("(required)") >= 6


def test_version_and_deprecated_aliases(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("tagger ")
    args = build_parser().parse_args(["demo", "--workdir", "/tmp/x"])
    assert args.workdir == "/tmp/x" and "deprecated; use --work-dir" in capsys.readouterr().err
    nightly = _scheduled_parser().parse_args(["nightly", "--images", "a", "b", "--tagged", "t", "--state", "s",
                                              "--dataset", "d"])
    assert nightly.images == ["a", "b"]
    assert "--images" not in _scheduled_parser()._subparsers._group_actions[0].choices["nightly"].format_help()


def test_beams_batch_size_estimator_warnings_are_silenced_unless_verbose():
    """Beam fits a line through RunInference batch timings; degenerate timings made `tagger tag` print numpy's
    divide-by-zero RuntimeWarning and polyfit's RankWarning blocks."""
    import warnings

    from apache_beam.transforms.util import _BatchSizeEstimator

    from jobs.cli import configure_logging

    degenerate = ([1] * 9 + [2], [1.0] * 9 + [3.0])  # one point with leverage 1: 1 / (1 - h) divides by zero
    for verbose, expected in ((True, {"RuntimeWarning", "RankWarning"}), (False, set())):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            configure_logging(verbose)
            _BatchSizeEstimator.linear_regression_numpy(*degenerate)
        assert {w.category.__name__ for w in caught} == expected


def test_quantizer_progress_logs_only_with_verbose(tmp_path, caplog):
    """onnxruntime's quantizer logs its progress at INFO, partly on the root logger: `make demo` printed
    dozens of "Increased scale[...] for weight ..." lines. Without -v they are dropped; with -v they pass."""
    import logging

    import numpy as np

    from jobs.cli import configure_logging
    from models.training.quantize import quantize
    from tests.model_factory import export_tiny_model

    fp32 = str(tmp_path / "model.onnx")
    export_tiny_model(fp32, num_classes=3)
    calibration = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    caplog.set_level(logging.INFO)
    shown = {}
    for verbose in (False, True):
        caplog.clear()
        configure_logging(verbose)
        quantize(fp32, str(tmp_path / f"int8-{verbose}.onnx"), calibration)
        logging.getLogger("pipelines.batch").info("our own progress line")
        shown[verbose] = [r for r in caplog.records if "onnxruntime" in r.pathname]
        assert "our own progress line" in caplog.text  # the job's own INFO lines always pass
    configure_logging(False)
    assert shown[True], "the quantizer logged nothing at INFO: this test no longer exercises the filter"
    assert not [r for r in shown[False] if r.levelno < logging.WARNING]
