"""The same archive tagged by each runner this project runs here, side by side: images/s and CPU-seconds.

    .venv/bin/python bench/runners.py                 # 1,000 photos, MobileNetV2; launcher memory 1k vs 10k
    .venv/bin/python bench/runners.py --images 200 --memory-sizes 500,2000   # a few minutes

Runners: the in-process FnApiRunner (`tagger tag`, the baseline of the ratios), DaskRunner on a cluster started
as separate processes (`dask scheduler`, `dask worker --nworkers 2 --nthreads 1`), and the portable path
(PortableRunner, Beam's in-process job service, an external worker pool whose SDK workers boot through
tagger-worker-boot and pip-install the project staged with --setup_file). Each is timed start to exit of
`tagger tag`, as a scheduler sees it. CPU-seconds are user+system of every process involved: the launcher
and, for Dask and the portable path, the cluster or worker pool (read from /proc before and after, including
workers that exited). Each runner first tags 16 photos untimed: a Dask cluster's workers are long-lived, so
their imports and model load are paid once per cluster, not per run; the portable path starts new SDK workers
for every job (that cost is in its figures). The archive is ../shared/data/coco128 hard-linked to 1,000 names when present, else
generated 640x480 JPEGs.

Launcher memory on Dask: peak RSS of the `tagger tag` process alone (the cluster is elsewhere) for two archive
sizes of small JPEGs (hard links) with the small test CNN, since the question is whether the launcher holds
per-image state.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from batch_throughput import link_copies, publish_mobilenet, run_sampled, write_jpegs  # noqa: E402

BIN = os.path.dirname(sys.executable)
COCO = os.path.join(ROOT, "..", "shared", "data", "coco128")


def _proc_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` plus its waited-for children (utime, stime, cutime, cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                children.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def services_cpu(pids: list[int]) -> float:
    return sum(_proc_cpu(p) for root in pids for p in _tree(root))


def tag(pattern: str, registry: str, ref: str, output: str, extra: list[str], services: list[int]) -> dict:
    """One `tagger tag` process: wall, images/s, CPU-seconds (launcher + services), launcher peak RSS."""
    cmd = [os.path.join(BIN, "tagger"), "tag", "--input", pattern, "--output", output, "--registry", registry,
           "--model", ref, *extra]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_services = services_cpu(services)
    wall, out, peak_mb = run_sampled(cmd, f"tagger tag {' '.join(extra)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    launcher_cpu = (after.ru_utime - before_children.ru_utime) + (after.ru_stime - before_children.ru_stime)
    tagged = int(re.search(r"tagged (\d+)", out).group(1))
    cpu = launcher_cpu + services_cpu(services) - before_services
    return {"wall": wall, "tagged": tagged, "rate": tagged / wall, "cpu": cpu, "launcher_cpu": launcher_cpu,
            "peak_mb": peak_mb}


class DaskCluster:
    """`dask scheduler` + `dask worker --nworkers 2 --nthreads 1`, as separate processes (stopped by pid)."""

    def __init__(self, tmp: str, nworkers: int = 2) -> None:
        self.file = os.path.join(tmp, "scheduler.json")
        self.scheduler = subprocess.Popen([os.path.join(BIN, "dask"), "scheduler", "--port", "0",
                                           "--dashboard-address", ":0", "--scheduler-file", self.file],
                                          stderr=subprocess.DEVNULL)
        while not os.path.exists(self.file):
            time.sleep(0.2)
        self.worker = subprocess.Popen([os.path.join(BIN, "dask"), "worker", "--scheduler-file", self.file,
                                        "--nworkers", str(nworkers), "--nthreads", "1", "--no-dashboard"],
                                       stderr=subprocess.DEVNULL)
        from dask.distributed import Client

        with Client(scheduler_file=self.file, timeout=60) as client:
            client.wait_for_workers(nworkers, timeout=120)
            self.address = client.scheduler.address

    @property
    def pids(self) -> list[int]:
        return [self.scheduler.pid, self.worker.pid]

    def close(self) -> None:
        for proc in (self.worker, self.scheduler):
            proc.terminate()
            proc.wait(timeout=60)


class WorkerPool:
    """Beam's external worker pool with tagger-worker-boot (stopped by pid)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                      "--service_port=0", f"--container_executable={BIN}/tagger-worker-boot"],
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            found = re.search(r"worker pool servicer at port: (\S+)", line)
            if found:
                self.address = found.group(1)
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def archive(tmp: str, n: int) -> str:
    """A manifest of exactly ``n`` photos: coco128 hard-linked under several names, else generated JPEGs."""
    if os.path.isdir(COCO):
        source = sorted(glob.glob(os.path.join(COCO, "images", "*", "*.jpg")))
        pattern = os.path.join(tmp, "photos", "*.jpg")
        for copy in range(-(-n // len(source))):
            for path in source:
                target = os.path.join(tmp, "photos", f"{copy}_{os.path.basename(path)}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.exists(target):
                    os.link(path, target)
    else:
        pattern = write_jpegs(os.path.join(tmp, "photos"), n, (640, 480))
    return _manifest(tmp, "photos", sorted(glob.glob(pattern))[:n])


def _manifest(tmp: str, name: str, paths: list[str]) -> str:
    path = os.path.join(tmp, f"{name}-{len(paths)}.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(paths) + "\n")
    return path


def throughput(runners: dict, photos: str, registry: str, ref: str, tmp: str, repeats: int) -> dict:
    """Each runner on the same manifest, ``repeats`` times; prints one line per run and the table."""
    results: dict[str, list[dict]] = {}
    # Untimed warm-up: Dask workers are long-lived (their imports and model load happen once per cluster).
    warm = _manifest(tmp, "warm", sorted(glob.glob(os.path.join(tmp, "photos", "*.jpg")))[:16])
    for name, (extra, services) in runners.items():
        tag(warm, registry, ref, os.path.join(tmp, f"warm-{len(extra)}"), extra, services)
    for r in range(repeats):
        for name, (extra, services) in runners.items():
            res = tag(photos, registry, ref, os.path.join(tmp, f"out-{len(results)}-{r}"), extra, services)
            results.setdefault(name, []).append(res)
            print(f"  {name}: {res['tagged']} images in {res['wall']:.1f} s = {res['rate']:.1f} images/s, "
                  f"{res['cpu']:.0f} CPU-s (launcher {res['launcher_cpu']:.0f}), load {os.getloadavg()[0]:.1f}",
                  flush=True)
    base = min(results["FnApiRunner (in-process, 2 threads)"], key=lambda r: r["wall"])
    print("\n| runner | images/s | wall s | CPU-s | CPU-s/image | images/s vs FnApiRunner |\n|---|---|---|---|---|---|")
    for name, runs in results.items():
        best = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        print(f"| {name} | {best['rate']:.1f} | {best['wall']:.1f} | {best['cpu']:.0f} | "
              f"{best['cpu'] / best['tagged'] * 1000:.0f} ms | {best['rate'] / base['rate']:.2f}x |")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--memory-sizes", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true", help="only the Dask launcher-memory table")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-runners-")
    registry = os.path.join(tmp, "registry")
    ref = None if args.memory_only else publish_mobilenet(registry)
    photos = None if args.memory_only else archive(tmp, args.images)
    print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load before: {os.getloadavg()[0]:.2f}; {args.images} photos ({'coco128' if os.path.isdir(COCO) else 'generated'})")
    cluster, pool = DaskCluster(tmp), WorkerPool()
    runners = {
        "FnApiRunner (in-process, 2 threads)": ([], []),
        "DaskRunner (2 worker processes x 1 thread)": (
            ["--runner=DaskRunner", f"--dask_client_address={cluster.address}"], cluster.pids),
        "PortableRunner (job service + external worker pool)": (
            ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
             f"--environment_config={pool.address}", f"--setup_file={os.path.join(ROOT, 'setup.py')}"],
            [pool.proc.pid]),
    }
    try:
        if not args.memory_only:
            throughput(runners, photos, registry, ref, tmp, args.repeats)
        # Launcher memory on Dask: small JPEGs, the test CNN; the archive grows, the launcher must not.
        from tests.model_factory import publish_tiny_model
        from tests.synthetic import CLASSES

        small_registry = os.path.join(tmp, "small-registry")
        tiny = publish_tiny_model(small_registry, CLASSES).ref
        sizes = [int(s) for s in args.memory_sizes.split(",")]
        small = link_copies(write_jpegs(os.path.join(tmp, "small-src"), 250, (160, 120)),
                            os.path.join(tmp, "small"), -(-max(sizes) // 250))
        paths = sorted(glob.glob(small))
        print("\n| archive (images) | launcher peak RSS MB | images/s | load |\n|---|---|---|---|")
        for n in sizes:
            res = tag(_manifest(tmp, "small", paths[:n]), small_registry, tiny, os.path.join(tmp, f"mem-{n}"),
                      runners["DaskRunner (2 worker processes x 1 thread)"][0], cluster.pids)
            print(f"| {n:,} | {res['peak_mb']:.0f} | {res['rate']:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)
    finally:
        cluster.close()
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
