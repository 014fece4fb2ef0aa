"""Files and directories this process may not read, tried as an unprivileged user.

CI runs as root, and root reads everything: it bypasses file modes through two capabilities,
``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH``. When the tests run as root, the real `tagger tag` process is
therefore started without them (dropped from its capability bounding set before exec): it stays root, so it
still reaches the interpreter and the code wherever they are installed, but file modes now bind it. An
unreadable file and a file inside an unreadable directory are dead-lettered as ``permission_denied``, the
readable one is tagged, and an unreadable manifest is refused in one line.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

from pipelines.catalog import connect
from tests.hostile_corpus import good_image
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES

pytestmark = pytest.mark.slow
TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_file_mode_bypass() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_tagger(args: list[str]) -> subprocess.CompletedProcess:
    # Most inputs here fail on purpose: the exit status must not depend on --max-failed-fraction.
    return subprocess.run([TAGGER, "tag", "--max-failed-fraction", "1", *args], capture_output=True, text=True, timeout=600,
                          preexec_fn=_without_file_mode_bypass if os.geteuid() == 0 else None)


def test_unreadable_files_and_directories_are_dead_lettered_as_permission_denied(tmp_path):
    root = str(tmp_path)
    images = os.path.join(root, "images")
    locked_dir = os.path.join(images, "locked_dir")
    os.makedirs(locked_dir)
    for name, seed in (("readable.jpg", 1), ("unreadable.jpg", 2), ("locked_dir/inside.jpg", 3)):
        with open(os.path.join(images, name), "wb") as fh:
            fh.write(good_image(seed))
    os.chmod(os.path.join(images, "unreadable.jpg"), 0o000)
    os.chmod(locked_dir, 0o000)  # its entries cannot even be stat'ed
    manifest = os.path.join(root, "tonight.txt")
    with open(manifest, "w") as fh:
        fh.write("images/readable.jpg\nimages/unreadable.jpg\nimages/locked_dir/inside.jpg\n")
    registry, output = os.path.join(root, "registry"), os.path.join(root, "out")
    publish_tiny_model(registry, CLASSES)
    args = ["--input", manifest, "--output", output, "--registry", registry, "--model", "tagger"]

    done = run_tagger(args)
    assert done.returncode == 0, done.stderr[-3000:]
    (name,) = os.listdir(os.path.join(output, "_manifests"))
    m = json.load(open(os.path.join(output, "_manifests", name)))
    assert (m["matched"], m["tagged"], m["failed"]) == (3, 1, 2)
    con = connect(output)
    assert con.execute("SELECT image_uri FROM tags").fetchall() == [(os.path.join(images, "readable.jpg"),)]
    assert sorted(con.execute("SELECT image_uri, stage, error_class FROM errors").fetchall()) == [
        (os.path.join(images, "locked_dir", "inside.jpg"), "read", "permission_denied"),
        (os.path.join(images, "unreadable.jpg"), "read", "permission_denied"),
    ]

    os.chmod(manifest, 0o000)
    refused = run_tagger([*args[:1], manifest, *args[2:3], os.path.join(root, "out2"), *args[4:]])
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission_denied" in lines[0] and "Traceback" not in refused.stderr
