"""`tagger models ...`: what an operator sees when inspecting and moving the production alias."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from jobs.cli import main
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES


def test_list_show_promote_rollback(registry_root, capsys):
    publish_tiny_model(registry_root, CLASSES)  # v1, promoted
    publish_tiny_model(registry_root, CLASSES, seed=1, promote=False)  # v2

    assert main(["models", "list", "--registry", registry_root]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["tagger", "v1", "production"] for line in listing)
    assert any(line.split()[:2] == ["tagger", "v2"] and "production" not in line for line in listing)

    assert main(["models", "promote", "tagger@v2", "--registry", registry_root]) == 0
    assert "v1 -> v2" in capsys.readouterr().out
    assert main(["models", "show", "tagger@production", "--registry", registry_root]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v2"

    assert main(["models", "rollback", "tagger", "--registry", registry_root]) == 0
    assert "v2 -> v1" in capsys.readouterr().out


def test_errors_are_one_line_with_nonzero_exit(registry_root):
    env = {**os.environ, "TAGGER_REGISTRY": registry_root}
    tagger = os.path.join(os.path.dirname(sys.executable), "tagger")
    result = subprocess.run([tagger, "models", "show", "nosuch@production"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nosuch has no 'production' version" in result.stderr
    assert "Traceback" not in result.stderr
