"""``tagger-worker-boot``: the Beam SDK container's boot contract for an external worker pool, in Python.

Flink, Spark and Dataflow Runner v2 start Python SDK workers through a container whose ``boot`` program fetches
the job's staged artifacts (``--setup_file`` becomes ``workflow.tar.gz``), pip-installs them and then runs
the SDK harness. Beam's own worker pool (``python -m apache_beam.runners.worker.worker_pool_main``) runs
plain ``python`` instead, which neither installs the staged project nor uses this interpreter. This does
what the container's boot does, with this interpreter, so a worker pool started with
``--container_executable=tagger-worker-boot`` executes the job on the code it was given:

    python -m apache_beam.runners.worker.worker_pool_main --service_port=50000 \\
        --container_executable="$(command -v tagger-worker-boot)"

The staged sdist is installed (``--no-deps``: the worker environment already has the runtime
requirements) once per content hash under ``$TAGGER_WORKER_CACHE`` (default: the system temp directory)
and put first on the worker's ``sys.path``.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import tempfile

LOG = logging.getLogger("tagger-worker-boot")
WORKFLOW_TARBALL = "workflow.tar.gz"  # apache_beam.runners.portability.stager.WORKFLOW_TARBALL_FILE


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tagger-worker-boot")
    for name in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
        parser.add_argument(f"--{name}", required=name in ("id", "control_endpoint"))
    return parser.parse_known_args(argv)[0]


def fetch_artifacts(provision_endpoint: str, artifact_endpoint: str, worker_id: str, dest: str) -> dict[str, str]:
    """{staged name: local path} of the job's dependencies (the provision service lists them)."""
    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import (
        beam_artifact_api_pb2_grpc,
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
        beam_runner_api_pb2,
    )
    from apache_beam.runners.portability.artifact_service import resolve_artifacts

    metadata = [("worker_id", worker_id)]
    with grpc.insecure_channel(provision_endpoint) as channel:
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=metadata).info
    with grpc.insecure_channel(artifact_endpoint) as channel:
        service = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
        stored = resolve_artifacts(list(info.dependencies), service, dest)
    found = {}
    for artifact in stored:
        path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
        if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
            found[name] = path
    return found


def install_workflow(tarball: str, cache_root: str) -> str:
    """pip-install the staged project once per content (concurrent workers wait on a lock); its directory."""
    import hashlib

    with open(tarball, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    target = os.path.join(cache_root, f"tagger-workflow-{digest}")
    os.makedirs(cache_root, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(target, ".installed")):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--no-deps", "--no-build-isolation", "--target", target, tarball], check=True)
            open(os.path.join(target, ".installed"), "w").close()
    return target


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if args.provision_endpoint and args.artifact_endpoint:
        with tempfile.TemporaryDirectory(prefix="tagger-artifacts-") as dest:
            staged = fetch_artifacts(args.provision_endpoint, args.artifact_endpoint, args.id, dest)
            if WORKFLOW_TARBALL in staged:
                tarball = os.path.join(dest, WORKFLOW_TARBALL)  # pip wants the sdist's own name
                os.replace(staged[WORKFLOW_TARBALL], tarball)
                cache = os.environ.get("TAGGER_WORKER_CACHE", tempfile.gettempdir())
                target = install_workflow(tarball, cache)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [target, env.get("PYTHONPATH")]))
                LOG.info("worker %s runs the staged project installed in %s", args.id, target)
    harness = ("from apache_beam.runners.worker.sdk_worker import SdkHarness; "
               f"SdkHarness({args.control_endpoint!r}, worker_id={args.id!r}).run()")
    os.execve(sys.executable, [sys.executable, "-c", harness], env)  # the pool stops this process id
    return 0


if __name__ == "__main__":
    sys.exit(main())
