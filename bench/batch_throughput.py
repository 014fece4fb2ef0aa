"""Batch tagging throughput and memory: `tagger tag` end to end vs a plain single-process onnxruntime loop.

Both sides use the same files, the same model (MobileNetV2 at 224 with ImageNet weights, exported to ONNX and
published with a card) and the same decode/preprocess functions, so the ratio measures the pipeline itself:
Beam overhead against the parallelism it buys. The plain loop is what a careful engineer would write without
Beam: read, Pillow decode (JPEG draft), resize/normalise, ``session.run`` in batches of 32 with onnxruntime's
default threading (all cores).

    .venv/bin/python bench/batch_throughput.py            # full: 2,000 x 640x480, 200 and 1,000 x 12 MP,
                                                          # memory 10k vs 50k
    .venv/bin/python bench/batch_throughput.py --quick    # a few minutes: 400, 16, memory 2k vs 10k

Peak memory is the maximum, sampled every 0.2 s, of the summed RSS of the `tagger tag` process tree
(launcher + Beam workers), for two archive sizes of small JPEGs; it uses the small test CNN so that 50k
images take minutes, since the question is whether pipeline state grows with the archive.

The baseline is ``bench/plain_loop.py``, timed two ways: as its own process, start to exit (like for like
with `tagger tag`, which is always timed start to exit: what a scheduler sees), and in this process from
after its session is built (the strictest comparison: no start-up at all on the loop's side). `tagger tag` is
also timed in-pipeline (the run manifest's start to commit, excluding Python/Beam start-up). The 12 MP set
is also run as a larger archive (each photo linked under several names), where start-up matters less.
"""
from __future__ import annotations

import argparse
import glob
import os
import pathlib
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
sys.path.insert(0, os.path.join(ROOT, "bench"))

from plain_loop import plain_loop, threaded_loop  # noqa: E402  (the baseline, also runnable as its own process)

TAGGER = os.path.join(os.path.dirname(sys.executable), "tagger")
PLAIN_LOOP = os.path.join(ROOT, "bench", "plain_loop.py")


# ------------------------------------------------------------------------------------------------- fixtures
# The bench model's recipe, recorded in its card so a registry made by an earlier recipe is republished.
BENCH_RECIPE = "mobilenet_v2-imagenet, thresholds for 2.9 tags per image"
# Tags per image the thresholds aim at: coco128's labels.csv averages 2.87 labels per photo. A threshold of
# 0.5 on sigmoid(ImageNet logits), this bench's recipe until Nov 30, tagged ~486 of the 1000 classes on every
# image: no calibrated tagger does that, and the pipeline then spent its time writing tag strings.
TAGS_PER_IMAGE = 2.9


def publish_mobilenet(registry: str, calibration_pattern: str | None = None) -> str:
    """Export torchvision MobileNetV2 (ImageNet weights from the local torch cache) and publish it, with its
    INT8 variant when ``calibration_pattern`` names images to calibrate on."""
    import torch
    import torchvision

    from models.registry import Registry
    from schemas.card import ModelCard, Preprocessing

    reg = Registry(registry)
    if reg.versions("bench"):
        latest = reg.card("bench", reg.versions("bench")[-1])
        if latest.architecture == BENCH_RECIPE:
            if latest.variants or not calibration_pattern:
                return latest.ref
            return add_int8_variant(registry, latest.ref, sorted(glob.glob(calibration_pattern))[:64])
    threshold_images = sorted(glob.glob(calibration_pattern or write_jpegs(
        os.path.join(os.path.dirname(os.path.abspath(registry)), "calibration-64"), 64, (640, 480), seed=7)))[:64]
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    net = torch.nn.Sequential(torchvision.models.mobilenet_v2(weights=weights), torch.nn.Sigmoid()).eval()
    classes = tuple(f"{i:03d}_{c.replace(' ', '_')}" for i, c in enumerate(weights.meta["categories"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(
            net, (torch.randn(2, 3, 224, 224),), path, input_names=["images"], output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        threshold = tag_rate_threshold(path, threshold_images, Preprocessing(input_size=224), TAGS_PER_IMAGE)
        card = ModelCard(name="bench", version="", classes=classes, thresholds={c: threshold for c in classes},
                         preprocessing=Preprocessing(input_size=224), architecture=BENCH_RECIPE)
        card = reg.publish(card, path)
    reg.promote(card.name, card.version, reason="benchmark")
    if calibration_pattern:
        return add_int8_variant(registry, card.ref, sorted(glob.glob(calibration_pattern))[:64])
    return card.ref


def tag_rate_threshold(model_path: str, image_paths: list[str], spec, tags_per_image: float) -> float:
    """One threshold for every class such that the model tags ``tags_per_image`` classes per image on
    average over ``image_paths``: the rate a calibrated tagger has, for a model whose classes were never
    calibrated (ImageNet's softmax-trained logits through a sigmoid)."""
    import onnxruntime as ort

    from models.training.quantize import load_calibration

    batch = load_calibration([os.path.basename(p) for p in image_paths], image_paths, spec).inputs
    probs = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]
    return float(np.quantile(probs, 1.0 - tags_per_image / probs.shape[1]))


def add_int8_variant(registry: str, ref: str, calibration_paths: list[str]) -> str:
    """Publish ``ref`` again with an INT8 variant made by the training job's quantizer (same settings),
    calibrated on ``calibration_paths``. A benchmark model has no labelled test split: the variant is
    published for speed measurements only (its card entry says so), never quality-checked."""
    from models.registry import Registry, sha256_file
    from models.training import quantize

    reg = Registry(registry)
    loaded = reg.load(ref)
    keys = [os.path.basename(p) for p in calibration_paths]
    calib = quantize.load_calibration(keys, calibration_paths, loaded.card.preprocessing)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, quantize.FILE)
        quantize.quantize(loaded.model_path, out, calib.inputs, loaded.card.input_name)
        entry = {"file": quantize.FILE, "status": "published", "withheld_reason": "", "sha256": sha256_file(out),
                 "quantization": quantize.SETTINGS, "metrics": {}, "note": "benchmark model: speed only",
                 "calibration": {"split": "benchmark images", "images": len(keys), "fingerprint": calib.fingerprint}}
        card = reg.publish(loaded.card.replace(version="", parent_version=loaded.card.version,
                                               variants={"int8": entry}),
                           loaded.model_path, {quantize.FILE: pathlib.Path(out)})
    reg.promote(card.name, card.version, reason="benchmark: int8 variant")
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
def plain_loop_process(pattern: str, registry: str, ref: str) -> tuple[float, int, float]:
    """(wall seconds, images, peak RSS in MB) of bench/plain_loop.py as its own process: timed like `tagger tag`."""
    wall, out, peak = run_sampled([sys.executable, PLAIN_LOOP, pattern, registry, ref], "plain loop")
    return wall, int(out.split()[0]), peak


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


def run_sampled(cmd: list[str], what: str) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak tree RSS in MB, sampled every 0.2 s) of one subprocess."""
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
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, out, peak / 1e6


def run_tagger(pattern: str, registry: str, ref: str, output: str, extra: list[str] | None = None
               ) -> tuple[float, int, float]:
    """(wall seconds, images tagged, peak tree RSS in MB) of one `tagger tag` subprocess."""
    cmd = [TAGGER, "tag", "--input", pattern, "--output", output, "--registry", registry, "--model", ref,
           *(extra or [])]
    wall, out, peak = run_sampled(cmd, "tagger tag")
    tagged = int(out.split("tagged ", 1)[1].split()[0])
    run_wall = float(out.split(" s wall", 1)[0].rsplit(None, 1)[1])
    run_tagger.last_pipeline_seconds = run_wall  # type: ignore[attr-defined]
    return wall, tagged, peak


# ------------------------------------------------------------------------------------------------- main
PRECISIONS = ("fp32", "int8")


def throughput(name: str, pattern: str, registry: str, ref: str, work: str, repeats: int, extra: list[str]) -> dict:
    n = len(glob.glob(pattern))
    rates: dict[str, list[float]] = {"loop": [], "loop_process": [], "ceiling": []}
    peaks: dict[str, list[float]] = {"loop_process": []}
    for p in PRECISIONS:
        rates[f"tagger_{p}"], rates[f"pipeline_{p}"], peaks[f"tagger_{p}"] = [], [], []
    for r in range(repeats):  # interleaved, so background load hits all sides alike
        done, seconds = plain_loop(pattern, registry, ref)
        rates["loop"].append(done / seconds)
        wall, done, peak = plain_loop_process(pattern, registry, ref)
        rates["loop_process"].append(done / wall)
        peaks["loop_process"].append(peak)
        done, seconds = threaded_loop(pattern, registry, ref, "int8")
        rates["ceiling"].append(done / seconds)
        for p in PRECISIONS:
            wall, tagged, peak = run_tagger(pattern, registry, ref, os.path.join(work, f"out-{name}-{p}-{r}"),
                                            ["--precision", p, *extra])
            assert tagged == n, f"tagged {tagged} of {n}"
            peaks[f"tagger_{p}"].append(peak)
            rates[f"tagger_{p}"].append(n / wall)
            rates[f"pipeline_{p}"].append(n / max(run_tagger.last_pipeline_seconds, 1e-9))  # type: ignore
    med = {k: statistics.median(v) for k, v in rates.items()}
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    print(f"  load average after: {os.getloadavg()[0]:.1f}", flush=True)

    def line(label: str, key: str) -> str:
        return f"  {label:<52} {med[key]:6.1f} img/s  ({', '.join(f'{x:.1f}' for x in rates[key])})"

    print(f"{name}: {n} images, medians of {repeats} interleaved runs", flush=True)
    print(line("plain loop, timed after its session is built", "loop"))
    print(line("plain loop as its own process, start to exit", "loop_process"))
    print(line("INT8 loop on one thread per core, no Beam, after set-up", "ceiling"))
    for p in PRECISIONS:
        print(line(f"tagger tag --precision {p}, start to exit", f"tagger_{p}"))
        print(line(f"tagger tag --precision {p} in-pipeline (manifest start to commit)", f"pipeline_{p}"))
    for p in PRECISIONS:
        print(f"  ratios --precision {p}: vs plain FP32 loop, both start to exit "
              f"{med[f'tagger_{p}'] / med['loop_process']:.2f}x | start to exit vs loop after set-up "
              f"{med[f'tagger_{p}'] / med['loop']:.2f}x | in-pipeline vs loop after set-up "
              f"{med[f'pipeline_{p}'] / med['loop']:.2f}x", flush=True)
    print(f"  ceiling (INT8 threaded loop, no Beam, no start-up) vs plain loop after set-up: "
          f"{med['ceiling'] / med['loop']:.2f}x; tagger tag --precision int8 reaches "
          f"{med['pipeline_int8'] / med['ceiling']:.0%} of it in-pipeline, {med['tagger_int8'] / med['ceiling']:.0%} "
          "start to exit", flush=True)
    print(f"  int8 vs fp32 tagger tag: {med['tagger_int8'] / med['tagger_fp32']:.2f}x start to exit, "
          f"{med['pipeline_int8'] / med['pipeline_fp32']:.2f}x in-pipeline (target int8 >= 2.0x the plain loop)")
    print("  peak RSS: plain loop process {:.0f} MB, ".format(peak["loop_process"])
          + ", ".join(f"tagger tag {p} tree {peak[f'tagger_{p}']:.0f} MB" for p in PRECISIONS), flush=True)
    return {**med, **{f"peak_{k}": v for k, v in peak.items()}}


def stage_breakdown(name: str, pattern: str, registry: str, ref: str, n: int = 100, repeats: int = 3) -> dict:
    """Per-image CPU milliseconds of each stage, one thread, as a worker runs them: read, decode (JPEG draft +
    colour conversion), resize, normalise, and inference at batch 8 with one onnxruntime thread per variant.
    Medians over ``repeats`` interleaved passes."""
    import onnxruntime as ort

    from models.registry import Registry
    from pipelines.decode import decode_image
    from pipelines.preprocess import draft_size_for, preprocess, resize_for_model

    reg = Registry(registry)
    card = reg.load(ref).card
    spec = card.preprocessing
    files = sorted(glob.glob(pattern))[:n]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {v: ort.InferenceSession(reg.load(ref, variant=v).model_path, sess_options=options,
                                        providers=["CPUExecutionProvider"]) for v in card.published_variants()}
    samples: dict[str, list[float]] = {k: [] for k in ("read", "decode", "resize", "normalise", *sessions)}
    for _ in range(repeats):
        t = dict.fromkeys(samples, 0.0)
        tensors = []
        for path in files:
            t0 = time.perf_counter()
            with open(path, "rb") as fh:
                data = fh.read()
            t1 = time.perf_counter()
            image = decode_image(data, draft_size=draft_size_for(spec)).image
            t2 = time.perf_counter()
            resized = resize_for_model(image, spec)
            t3 = time.perf_counter()
            tensors.append(preprocess(resized, spec))
            t4 = time.perf_counter()
            t["read"] += t1 - t0
            t["decode"] += t2 - t1
            t["resize"] += t3 - t2
            t["normalise"] += t4 - t3
        batches = [np.stack(tensors[i:i + 8]) for i in range(0, len(tensors), 8)]
        for v, session in sessions.items():
            session.run(None, {card.input_name: batches[0]})
            t0 = time.perf_counter()
            for b in batches:
                session.run(None, {card.input_name: b})
            t[v] = time.perf_counter() - t0
        for k in samples:
            samples[k].append(t[k] / len(files) * 1000)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    image_side = ms["read"] + ms["decode"] + ms["resize"] + ms["normalise"]
    print(f"stages {name} ({len(files)} images, ms per image, one thread, medians of {repeats}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()), flush=True)
    for v in sessions:
        print(f"  with {v}: read+decode+preprocess {image_side:.2f} ms = "
              f"{image_side / (image_side + ms[v]):.0%} of {image_side + ms[v]:.2f} ms per image; one-core bound "
              f"{1000 / (image_side + ms[v]):.0f} img/s", flush=True)
    return ms


def link_copies(source_pattern: str, directory: str, copies: int) -> str:
    """Each file of ``source_pattern`` hard-linked under ``copies`` names: a larger archive of the same photos
    without generating (slow) or storing (large) new 12 MP files. Throughput does not depend on the content
    being unique; no dedupe by content runs here."""
    os.makedirs(directory, exist_ok=True)
    for path in sorted(glob.glob(source_pattern)):
        stem = os.path.splitext(os.path.basename(path))[0]
        for c in range(copies):
            target = os.path.join(directory, f"{stem}_copy{c}.jpg")
            if not os.path.exists(target):
                os.link(path, target)
    return os.path.join(directory, "*.jpg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--images", type=int, help="640x480 JPEGs for throughput (default 2000, quick 400)")
    parser.add_argument("--photos", type=int, help="12-megapixel JPEGs (default 200, quick 16)")
    parser.add_argument("--photo-copies", type=int, default=5,
                        help="also run an archive of every photo linked under this many names (default 5: "
                             "1,000 photos; 0 skips it)")
    parser.add_argument("--vga-copies", type=int, default=0,
                        help="also run the 640x480 set as an archive of every image linked under this many names "
                             "(e.g. 5: 10,000 images), where start-up weighs less (default 0: skip)")
    parser.add_argument("--memory-sizes", help="two archive sizes for the memory check (default 10000,50000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tagger-bench"))
    parser.add_argument("--skip", default="", help="comma list of sections to skip: vga,photos,memory,stages")
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
    print(f"load average at start: {os.getloadavg()}", flush=True)
    registry = os.path.join(work, "registry")
    calibration = write_jpegs(os.path.join(work, "calibration-64"), 64, (640, 480), seed=7)
    ref = publish_mobilenet(registry, calibration)
    from models.registry import Registry

    variants = Registry(registry).card(*ref.split("@")).published_variants()
    print(f"model: {ref} (MobileNetV2 224, ImageNet weights, 1000 classes; variants {variants}; "
          f"thresholds for {TAGS_PER_IMAGE} tags per image)", flush=True)

    if "stages" not in skip:
        stage_breakdown("640x480", write_jpegs(os.path.join(work, f"vga-{images}"), images, (640, 480)),
                        registry, ref)
        stage_breakdown("12MP", write_jpegs(os.path.join(work, f"12mp-{photos}"), photos, (4000, 3000), seed=1),
                        registry, ref, n=min(photos, 40))
    if "vga" not in skip:
        pattern = write_jpegs(os.path.join(work, f"vga-{images}"), images, (640, 480))
        throughput("640x480", pattern, registry, ref, work, args.repeats, args.tagger_args)
        if args.vga_copies > 1:
            larger = link_copies(pattern, os.path.join(work, f"vga-{images}x{args.vga_copies}"), args.vga_copies)
            throughput(f"640x480 x{args.vga_copies}", larger, registry, ref, work, args.repeats, args.tagger_args)
    if "photos" not in skip:
        pattern = write_jpegs(os.path.join(work, f"12mp-{photos}"), photos, (4000, 3000), seed=1)
        throughput("12MP", pattern, registry, ref, work, args.repeats, args.tagger_args)
        if args.photo_copies > 1 and not args.quick:
            larger = link_copies(pattern, os.path.join(work, f"12mp-{photos}x{args.photo_copies}"), args.photo_copies)
            throughput(f"12MP x{args.photo_copies}", larger, registry, ref, work, args.repeats, args.tagger_args)
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
