"""The same archive (good images, hostile files, a manifest overlapping the glob and naming a missing file)
tagged by the in-process FnApiRunner, by DaskRunner on a 2-process LocalCluster, and through Beam's portable
path (PortableRunner -> Beam's Python job service -> an external worker pool whose SDK workers are separate
processes that pip-install the project staged with --setup_file): the same rows, dead letters and manifest.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipelines.batch import TagJob, TagResult, run_tag_job
from tests.bad_inputs import write_bad_corpus
from tests.batch_fixtures import add_images
from tests.dask_fixtures import dask_address, dask_cluster  # noqa: F401  (session fixtures)
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES, write_dataset

pytestmark = pytest.mark.slow
N_GOOD = 12
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Archive:
    root: str
    registry: str
    inputs: list[str]

    def job(self, output: str, *beam_args: str, **kw) -> TagJob:
        return TagJob(inputs=list(self.inputs), output=os.path.join(self.root, output), registry_root=self.registry,
                      beam_args=list(beam_args), progress_interval=0.5, **kw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    root = str(tmp_path_factory.mktemp("distributed"))
    write_dataset(os.path.join(root, "data"), N_GOOD)
    images = os.path.join(root, "data", "images")
    write_bad_corpus(images)
    manifest = os.path.join(root, "inputs.txt")
    with open(manifest, "w") as fh:
        fh.write(os.path.join(images, "img_00000.jpg") + "\nmissing.jpg\n")
    registry = os.path.join(root, "registry")
    publish_tiny_model(registry, CLASSES)
    return Archive(root, registry, [os.path.join(images, "*"), manifest])


@pytest.fixture(scope="module")
def local_run(archive) -> TagResult:
    return run_tag_job(archive.job("local"))


@pytest.fixture(scope="module")
def worker_pool():
    """Beam's external worker pool; each SDK worker boots through tagger-worker-boot (a separate process)."""
    boot = os.path.join(os.path.dirname(sys.executable), "tagger-worker-boot")
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port=0",
                             f"--container_executable={boot}"], stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        for line in pool.stderr:
            log.append(line)
            found = re.search(r"worker pool servicer at port: (\S+)", line)
            if found:
                break
        else:
            pytest.fail("worker pool did not start:\n" + "".join(log))
        threading.Thread(target=lambda: log.extend(pool.stderr), daemon=True).start()
        yield found.group(1), log
    finally:
        pool.terminate()
        pool.wait(timeout=30)


def _rows(output: str, files: list[str], drop: tuple[str, ...]) -> list[dict]:
    rows = []
    for rel in files:
        for row in pq.read_table(os.path.join(output, rel)).to_pylist():
            rows.append({k: v for k, v in row.items() if k not in drop})
    return sorted(rows, key=lambda r: r["image_uri"])


def _same_outcome(a: TagResult, out_a: str, b: TagResult, out_b: str) -> None:
    per_run = ("run_id", "runner", "started_at", "finished_at", "tag_files", "error_files")
    ma, mb = ({k: v for k, v in vars(m).items() if k not in per_run} for m in (a.manifest, b.manifest))
    assert ma == mb
    tags_a = _rows(out_a, a.manifest.tag_files, ("run_id", "tagged_at"))
    tags_b = _rows(out_b, b.manifest.tag_files, ("run_id", "tagged_at"))
    assert [r["image_uri"] for r in tags_a] == [r["image_uri"] for r in tags_b]
    for ra, rb in zip(tags_a, tags_b):
        pa_, pb_ = dict(ra.pop("probabilities")), dict(rb.pop("probabilities"))
        assert ra == rb and pa_.keys() == pb_.keys()
        assert all(abs(pa_[k] - pb_[k]) < 1e-5 for k in pa_)  # batch composition differs between runners
    dead = ("run_id", "failed_at")
    assert _rows(out_a, a.manifest.error_files, dead) == _rows(out_b, b.manifest.error_files, dead)


def test_local_run_is_the_reference(local_run):
    m = local_run.manifest
    assert m.matched == m.tagged + m.failed and m.tagged >= N_GOOD and m.failures_by_stage.get("read") == 1


def test_dask_run_matches_the_local_run_and_incremental_skips_on_dask(archive, local_run, dask_address, capsys):
    out = os.path.join(archive.root, "dask")
    args = ["tag", *[a for i in archive.inputs for a in ("--input", i)], "--output", out,
            "--registry", archive.registry, "--runner=DaskRunner", f"--dask_client_address={dask_address}",
            "--max-failed-fraction", "1"]  # the archive is half bad files on purpose
    assert main(args) == 0  # the CLI, short runner name
    summary = capsys.readouterr().out
    assert "on DaskRunner" in summary and "top tags:" in summary  # counters came back from the workers
    manifests = sorted(os.listdir(os.path.join(out, "_manifests")))
    from schemas.tagging import RunManifest

    first = TagResult(RunManifest.from_json(open(os.path.join(out, "_manifests", manifests[0])).read()), {})
    assert first.manifest.runner == "DaskRunner"
    _same_outcome(local_run, os.path.join(archive.root, "local"), first, out)

    again = run_tag_job(archive.job("dask", "--runner=DaskRunner", f"--dask_client_address={dask_address}",
                                    incremental=True))
    assert (again.manifest.tagged, again.manifest.skipped, again.manifest.failed) == (
        0, first.manifest.tagged, first.manifest.failed)  # tagged ones skipped, failures retried
    new = add_images(os.path.join(archive.root, "data", "images"), 2, seed=7, prefix="new")
    third = run_tag_job(archive.job("dask", "--runner=DaskRunner", f"--dask_client_address={dask_address}",
                                    incremental=True))
    for path in new:  # keep the shared archive as the other runs saw it
        os.remove(path)
    assert (third.manifest.tagged, third.manifest.skipped) == (2, first.manifest.tagged)
    assert {r["image_uri"] for r in _rows(out, third.manifest.tag_files, ())} == set(new)


def test_portable_run_with_external_workers_matches_the_local_run(archive, local_run, worker_pool):
    address, log = worker_pool
    result = run_tag_job(archive.job(
        "portable", "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
        f"--environment_config={address}", f"--setup_file={os.path.join(PROJECT, 'setup.py')}"))
    assert result.manifest.runner == "PortableRunner"
    _same_outcome(local_run, os.path.join(archive.root, "local"), result, os.path.join(archive.root, "portable"))
    assert any("runs the staged project installed in" in line for line in log)  # --setup_file reached them
