"""Peak memory of `tagger tag` at default settings on the worst inputs its limits allow, vs ordinary photos.

The budget (docs/batch.md): a local run at default settings stays under 1.5 GB peak RSS whatever the inputs.
Both archives are tagged by the real `tagger tag` process with the benchmark model (MobileNetV2 224, 1000
classes, as in bench/batch_throughput.py) at default settings (no limit options):

* baseline: N ordinary 12-megapixel JPEG photos;
* worst case: the same photos plus, several copies each so that every worker meets them at once, the
  biggest images each limit still admits (8000x7900 RGB PNG, 5000x5000 RGBA PNG, 6000x6000 16-bit PNG,
  5400x5400 float TIFF: just under the 512 MiB decode limit), files just under the 64 MiB read limit, the
  8000x8000 high-bit-depth bombs and header bombs of every format (refused), a 3 GiB sparse file, a FIFO and a
  /dev/zero link.

Peak RSS is the kernel's high-water mark of the tagger process (``VmHWM``, polled every 50 ms until exit;
``tests/process_memory.py`` says why not ``ru_maxrss``). Printed: both peaks, their ratio, worst vs budget.

    .venv/bin/python bench/memory_budget.py [--photos 40] [--copies 3] [--workers 16]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from batch_throughput import TAGGER, publish_mobilenet, write_jpegs  # noqa: E402
from tests.process_memory import run_measured  # noqa: E402

BUDGET_MB = 1536


def worst_inputs(directory: str, copies: int) -> int:
    """Write the worst admissible and refused inputs ``copies`` times; returns how many inputs."""
    from tests.hostile_corpus import claim_size, good_image, png_stream, tiff_strip_reuse

    os.makedirs(directory, exist_ok=True)
    admitted = {
        "rgb_8000x7900.png": lambda: png_stream(8000, 7900, 2, 8, fill=80),
        "rgba_5000.png": lambda: png_stream(5000, 5000, 6, 8, fill=200),
        "grey16_6000.png": lambda: png_stream(6000, 6000, 0, 16, fill=90),
        "float_5400.tif": lambda: tiff_strip_reuse(5400, 5400, 32, 3),
        "near_cap_random.jpg": lambda: random.Random(1).randbytes((64 << 20) - 4096),
    }
    refused = {
        "rgba_8000.png": lambda: png_stream(8000, 8000, 6, 8),
        "grey16_8000.png": lambda: png_stream(8000, 8000, 0, 16),
        "float_8000.tif": lambda: tiff_strip_reuse(8000, 8000, 32, 3),
        "int32_8000.tif": lambda: tiff_strip_reuse(8000, 8000, 32, 2),
        **{f"claims_huge.{fmt.lower()}": (lambda fmt=fmt: claim_size(good_image(7, (32, 24), fmt), fmt, 60_000, 60_000))
           for fmt in ("PNG", "GIF", "JPEG")},
    }
    n = 0
    for name, make in {**admitted, **refused}.items():
        data = make()
        for c in range(copies):
            with open(os.path.join(directory, f"{c}_{name}.jpg"), "wb") as fh:
                fh.write(data)
            n += 1
    with open(os.path.join(directory, "sparse_3gib.jpg"), "wb") as fh:
        fh.truncate(3 << 30)
    os.mkfifo(os.path.join(directory, "fifo.jpg"))
    os.symlink("/dev/zero", os.path.join(directory, "zero.jpg"))
    return n + 3


def measure(patterns: list[str], registry: str, ref: str, output: str, workers: int = 0) -> tuple[float, float, str]:
    """(peak RSS MB, wall s, summary counts line) of one `tagger tag` at default settings (but ``workers``)."""
    cmd = [TAGGER, "tag", "--output", output, "--registry", registry, "--model", ref, "--workers", str(workers)]
    for p in patterns:
        cmd += ["--input", p]
    start = time.perf_counter()
    code, out, err, peak = run_measured(cmd, timeout=3600)
    if code != 0:
        raise SystemExit(f"tagger tag failed:\n{err[-3000:]}")
    counts = next(line.strip() for line in out.splitlines() if line.strip().startswith("matched"))
    return peak, time.perf_counter() - start, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="ordinary 12 MP photos (default 40)")
    parser.add_argument("--copies", type=int, default=3, help="copies of each worst-case input (default 3)")
    parser.add_argument("--workers", type=int, default=0,
                        help="local worker threads (default 0: one per core); the budget holds for any count")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tagger-bench"))
    args = parser.parse_args(argv)
    work = args.workdir
    os.makedirs(work, exist_ok=True)
    registry = os.path.join(work, "registry")
    ref = publish_mobilenet(registry)
    photos = write_jpegs(os.path.join(work, f"12mp-{args.photos}"), args.photos, (4000, 3000), seed=1)
    worst_dir = os.path.join(work, f"worst-{args.copies}")
    shutil.rmtree(worst_dir, ignore_errors=True)
    n_worst = worst_inputs(worst_dir, args.copies)
    print(f"model {ref}; {args.photos} photos; {n_worst} worst-case inputs; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    base = measure([photos], registry, ref, os.path.join(work, "out-mem-base"), args.workers)
    print(f"baseline (photos only):    peak RSS {base[0]:.0f} MB, {base[1]:.1f} s; {base[2]}", flush=True)
    worst = measure([photos, os.path.join(worst_dir, "*.jpg")], registry, ref, os.path.join(work, "out-mem-worst"),
                    args.workers)
    print(f"worst case (photos + all): peak RSS {worst[0]:.0f} MB, {worst[1]:.1f} s; {worst[2]}", flush=True)
    print(f"ratio worst / baseline: {worst[0] / base[0]:.2f}x; worst vs budget {BUDGET_MB} MB: "
          f"{worst[0] / BUDGET_MB:.2f}x; load {os.getloadavg()[0]:.2f}")
    return 0 if worst[0] < BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
