"""An explicit --runner is honoured or refused in one line, never replaced by another runner."""
from __future__ import annotations

import os

import pytest

from jobs.cli import main
from tests.synthetic import write_dataset


@pytest.fixture
def archive(tmp_path, tiny_model, registry_root) -> list[str]:
    write_dataset(str(tmp_path / "data"), 2)
    return ["--input", str(tmp_path / "data" / "images" / "*"), "--output", str(tmp_path / "out"),
            "--registry", registry_root]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_runner_is_a_one_line_error(archive, capsys):
    assert main(["tag", *archive, "--runner=NoSuchRunner"]) == 2
    assert "--runner=NoSuchRunner" in _one_line_error(capsys)


def test_prism_runner_is_not_silently_replaced_by_the_local_runner(archive, capsys, tmp_path):
    code = main(["tag", *archive, "--runner=PrismRunner"])
    manifests = os.listdir(tmp_path / "out" / "_manifests") if (tmp_path / "out" / "_manifests").exists() else []
    if code == 2:  # offline: Beam cannot download the Prism binary, and says so in one line
        assert "--runner=PrismRunner could not start" in _one_line_error(capsys) and not manifests
    else:  # a machine with the binary ran it on Prism itself
        assert code == 0 and '"runner": "PrismRunner"' in open(tmp_path / "out" / "_manifests" / manifests[0]).read()


def test_stream_on_a_distributed_runner_says_which_runners_it_supports(capsys, tmp_path, registry_root,
                                                                       tiny_model):
    code = main(["stream", "--bootstrap", "127.0.0.1:1", "--topic", "i", "--decisions-topic", "d",
                 "--dlq-topic", "q", "--group", "g", "--output", str(tmp_path / "o"), "--registry", registry_root,
                 "--runner=DaskRunner"])
    assert code == 2
    line = _one_line_error(capsys)
    assert "FnApiRunner only" in line and "DaskRunner" in line
