"""Batch tagging throughput and memory: `tagger tag` end to end vs a plain single-process onnxruntime loop.

Both sides use the same files, the same model (MobileNetV2 at 224 with ImageNet weights, exported to ONNX and
published with a card) and the same decode/preprocess functions, so the ratio measures the pipeline itself:
Beam overhead against the parallelism it buys. The plain loop is what a careful engineer would write without
Beam: read, Pillow decode (JPEG draft), resize/normalise, ``session.run`` in batches of 32 with onnxruntime's
default threading (all cores).

    .venv/bin/python bench/batch_throughput.py            # full: 2,000 x 640x480, 200 x 12 MP, memory 10k vs 50k
    .venv/bin/python bench/batch_throughput.py --quick    # a few minutes: 400, 16, memory 2k vs 10k

Peak memory is the maximum, sampled every 0.2 s, of the summed RSS of the `tagger tag` process tree
(launcher + Beam workers), for two archive sizes of small JPEGs; it uses the small test CNN so that 50k
images take minutes, since the question is whether pipeline state grows with the archive.

Throughput is reported two ways: end to end (process start to exit, what a scheduler sees) and in-pipeline
(the run manifest's start to commit, excluding Python/Beam start-up, comparable to the plain loop whose
timer starts after its session is built).
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipelines.decode import decode_image  # noqa: E402
from pipelines.preprocess import draft_size_for, preprocess  # noqa: E402

TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")


# ------------------------------------------------------------------------------------------------- fixtures
def publish_mobilenet(registry: str) -> str:
    """Export torchvision MobileNetV2 (ImageNet weights from the local torch cache) and publish it."""
    import torch
    import torchvision

    from models.registry import Registry
    from schemas.card import ModelCard, Preprocessing

    reg = Registry(registry)
    if reg.versions("bench"):
        return "bench@" + reg.versions("bench")[-1]
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    net = torch.nn.Sequential(torchvision.models.mobilenet_v2(weights=weights), torch.nn.Sigmoid()).eval()
    classes = tuple(f"{i:03d}_{c.replace(' ', '_')}" for i, c in enumerate(weights.meta["categories"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(
            net, (torch.randn(2, 3, 224, 224),), path, input_names=["images"], output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        card = ModelCard(name="bench", version="", classes=classes, thresholds={c: 0.5 for c in classes},
                         preprocessing=Preprocessing(input_size=224), architecture="mobilenet_v2-imagenet")
        card = reg.publish(card, path)
    reg.promote(card.name, card.version, reason="benchmark")
    return card.ref


def write_jpegs(directory: str, n: int, size: tuple[int, int], seed: int = 0) -> str:
    """``n`` photo-like JPEGs (smooth gradients + noise + blobs) of ``size``; reuses existing files."""
    from PIL import Image, ImageDraw, ImageFilter

    os.makedirs(directory, exist_ok=True)
    existing = len(glob.glob(os.path.join(directory, "*.jpg")))
    rng = np.random.default_rng(seed + existing)
    w, h = size
    base_small = [rng.integers(0, 255, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8) for _ in range(8)]
    for i in range(existing, n):
        small = Image.fromarray(base_small[i % 8]).resize((w, h), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(small)
        for _ in range(6):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, max(11, w // 6)))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        noise = rng.integers(-12, 12, (h, w, 3), dtype=np.int16) if w * h <= 1_000_000 else None
        if noise is not None:
            arr = np.clip(np.asarray(small, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            small = Image.fromarray(arr)
        else:
            small = small.filter(ImageFilter.DETAIL)
        small.save(os.path.join(directory, f"img_{i:06d}.jpg"), quality=88)
    return os.path.join(directory, "*.jpg")


# ------------------------------------------------------------------------------------------------- runners
def plain_loop(pattern: str, registry: str, ref: str, batch: int = 32) -> float:
    """Images/s of a single-process read + decode + preprocess + session.run loop."""
    import onnxruntime as ort

    from models.registry import Registry

    loaded = Registry(registry).load(ref)
    card = loaded.card
    session = ort.InferenceSession(loaded.model_path, providers=["CPUExecutionProvider"])
    files = sorted(glob.glob(pattern))
    draft = draft_size_for(card.preprocessing)
    start = time.perf_counter()
    pending: list[np.ndarray] = []
    done = 0
    for path in files:
        with open(path, "rb") as fh:
            decoded = decode_image(fh.read(), draft_size=draft)
        pending.append(preprocess(decoded.image, card.preprocessing))
        if len(pending) == batch:
            session.run([card.output_name], {card.input_name: np.stack(pending)})
            done += len(pending)
            pending = []
    if pending:
        session.run([card.output_name], {card.input_name: np.stack(pending)})
        done += len(pending)
    return done / (time.perf_counter() - start)


def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


def run_tagger(pattern: str, registry: str, ref: str, output: str, extra: list[str] | None = None
               ) -> tuple[float, int, float]:
    """(wall seconds, images tagged, peak tree RSS in MB) of one `tagger tag` subprocess."""
    cmd = [TAGGER, "tag", "--input", pattern, "--output", output, "--registry", registry, "--model", ref,
           *(extra or [])]
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.2):
            peak = max(peak, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"tagger tag failed ({proc.returncode}):\n{err[-3000:]}")
    tagged = int(out.split("tagged ", 1)[1].split()[0])
    run_wall = float(out.split(" s wall", 1)[0].rsplit(None, 1)[1])
    run_tagger.last_pipeline_seconds = run_wall  # type: ignore[attr-defined]
    return wall, tagged, peak / 1e6


# ------------------------------------------------------------------------------------------------- main
def throughput(name: str, pattern: str, registry: str, ref: str, work: str, repeats: int, extra: list[str]) -> dict:
    n = len(glob.glob(pattern))
    plain_rates, tagger_rates, pipeline_rates = [], [], []
    for r in range(repeats):  # interleaved, so background load hits both sides alike
        plain_rates.append(plain_loop(pattern, registry, ref))
        wall, tagged, _ = run_tagger(pattern, registry, ref, os.path.join(work, f"out-{name}-{r}"), extra)
        assert tagged == n, f"tagged {tagged} of {n}"
        tagger_rates.append(n / wall)
        pipeline_rates.append(n / max(run_tagger.last_pipeline_seconds, 1e-9))  # type: ignore[attr-defined]
    plain, tagger, inside = (statistics.median(x) for x in (plain_rates, tagger_rates, pipeline_rates))

    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in xs)

    print(f"{name}: {n} images  plain loop {plain:.1f} img/s ({runs(plain_rates)})  "
          f"tagger tag end-to-end {tagger:.1f} img/s ({runs(tagger_rates)}) ratio {tagger / plain:.2f}x  "
          f"in-pipeline {inside:.1f} img/s ({runs(pipeline_rates)}) ratio {inside / plain:.2f}x", flush=True)
    return {"plain": plain, "tagger": tagger, "ratio": tagger / plain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--images", type=int, help="640x480 JPEGs for throughput (default 2000, quick 400)")
    parser.add_argument("--photos", type=int, help="12-megapixel JPEGs (default 200, quick 16)")
    parser.add_argument("--memory-sizes", help="two archive sizes for the memory check (default 10000,50000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tagger-bench"))
    parser.add_argument("--skip", default="", help="comma list of sections to skip: vga,photos,memory")
    parser.add_argument("tagger_args", nargs="*", help="extra `tagger tag` options (after --)")
    args = parser.parse_args(argv)
    images = args.images or (400 if args.quick else 2000)
    photos = args.photos or (16 if args.quick else 200)
    sizes = [int(s) for s in (args.memory_sizes or ("2000,10000" if args.quick else "10000,50000")).split(",")]
    skip = set(filter(None, args.skip.split(",")))
    work = args.workdir
    os.makedirs(work, exist_ok=True)

    import apache_beam
    import onnxruntime

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"apache-beam {apache_beam.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"providers {onnxruntime.get_available_providers()}", flush=True)
    registry = os.path.join(work, "registry")
    ref = publish_mobilenet(registry)
    print(f"model: {ref} (MobileNetV2 224, ImageNet weights, 1000 classes)", flush=True)

    if "vga" not in skip:
        pattern = write_jpegs(os.path.join(work, f"vga-{images}"), images, (640, 480))
        throughput("640x480", pattern, registry, ref, work, args.repeats, args.tagger_args)
    if "photos" not in skip:
        pattern = write_jpegs(os.path.join(work, f"12mp-{photos}"), photos, (4000, 3000), seed=1)
        throughput("12MP", pattern, registry, ref, work, args.repeats, args.tagger_args)
    if "memory" not in skip:
        # Archive size, not model cost, is the variable here: the small test CNN keeps 50k images to minutes.
        from tests.model_factory import publish_tiny_model
        from tests.synthetic import CLASSES

        small_registry = os.path.join(work, "registry-small")
        if not os.path.isdir(small_registry):
            publish_tiny_model(small_registry, CLASSES)
        peaks = []
        for n in sizes:
            pattern = write_jpegs(os.path.join(work, f"mem-{n}"), n, (160, 120), seed=2)
            wall, tagged, peak = run_tagger(pattern, small_registry, "tagger@production",
                                            os.path.join(work, f"out-mem-{n}"), args.tagger_args)
            assert tagged == n, f"tagged {tagged} of {n}"
            peaks.append(peak)
            print(f"memory: {n} images  peak RSS (tagger tree) {peak:.0f} MB  {n / wall:.1f} img/s", flush=True)
        print(f"memory: peak {sizes[-1]} / {sizes[0]} images = {peaks[-1] / peaks[0]:.2f}x (target <= 1.20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
