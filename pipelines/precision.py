"""``--precision auto|fp32|int8``: which of a version's model files a run uses, and why.

``auto`` runs FP32 on a GPU (onnxruntime's CUDA provider gains little from QDQ INT8 and the variant was
checked on CPU) and INT8 on a CPU when the version has a published INT8 variant and the CPU has int8
dot-product instructions (x86 VNNI / AMX, Arm dot product), where it is ~2.5x faster. On a CPU without
them the speed-up is unknown (smaller, and sometimes a loss), so ``auto`` times both files on this machine
and takes INT8 only if it is at least ``AUTO_MIN_SPEEDUP`` faster: ``auto`` is never meant to be slower
than ``fp32``.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import numpy as np

from schemas.card import ModelCard
from schemas.errors import UserError

PRECISIONS = ("auto", "fp32", "int8")
FP32, INT8 = "fp32", "int8"
# CPU flags (Linux /proc/cpuinfo names) that give onnxruntime's int8 kernels their fast path.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
AUTO_MIN_SPEEDUP = 1.05


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (``flags``/``Features`` lines of /proc/cpuinfo); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def has_int8_dot_product(flags: frozenset[str]) -> bool:
    return any(f in flags for f in INT8_DOT_FLAGS)


def choose_variant(
    card: ModelCard,
    requested: str,
    *,
    gpu: bool,
    flags: frozenset[str] | None = None,
    measure: Callable[[], tuple[float, float]] | None = None,
) -> tuple[str, str]:
    """(variant to run, why) for ``--precision requested``; ``measure()`` -> (fp32 s, int8 s) per batch."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    available = INT8 in card.published_variants()
    if requested == FP32:
        return FP32, "requested"
    if requested == INT8:
        if not available:
            entry = card.variants.get(INT8)
            why = f" (withheld: {entry.get('withheld_reason')})" if entry else " (published before INT8 variants; " \
                f"`tagger models quantize {card.ref}` makes a version with one)"
            raise UserError(f"--precision int8: model {card.ref} has no INT8 variant{why}")
        return INT8, "requested"
    if gpu:
        return FP32, "auto: GPU"
    if not available:
        return FP32, "auto: the version has no INT8 variant"
    flags = cpu_flags() if flags is None else flags
    if has_int8_dot_product(flags):
        return INT8, "auto: CPU with int8 dot-product instructions"
    if measure is None:
        return FP32, "auto: CPU without int8 dot-product instructions"
    fp32_s, int8_s = measure()
    speedup = fp32_s / int8_s if int8_s > 0 else 0.0
    chosen = INT8 if speedup >= AUTO_MIN_SPEEDUP else FP32
    return chosen, f"auto: CPU without int8 dot-product instructions; INT8 measured {speedup:.2f}x FP32 here"


def time_both(fp32_path: str, int8_path: str, card: ModelCard, threads: int = 1, batch: int = 8,
              repeats: int = 5) -> tuple[float, float]:
    """Median seconds per batch of the FP32 and INT8 files on this machine, runs interleaved (noise hits both)."""
    import onnxruntime as ort

    def session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    spec = card.preprocessing
    shape = (batch, 3, spec.input_size, spec.input_size) if spec.layout == "NCHW" else \
        (batch, spec.input_size, spec.input_size, 3)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    sessions = [session(fp32_path), session(int8_path)]
    times: list[list[float]] = [[], []]
    for s in sessions:
        s.run(None, {card.input_name: x})  # warm-up
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, {card.input_name: x})
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


TIMINGS_CACHE = os.path.join("~", ".cache", "tagger", "precision-timings.json")


def cached_timings(key: str, measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """``measure()`` once per (models, onnxruntime, CPU, threads) on this machine: ~1 s of every later run's
    start-up saved. The cache is a plain JSON file; an unreadable one is measured again and replaced."""
    from models import storage

    path = os.path.expanduser(TIMINGS_CACHE)
    cache: dict = {}
    try:
        with open(path, encoding="utf-8") as fh:
            stored = json.load(fh)
        cache = stored if isinstance(stored, dict) else {}
        hit = cache.get(key)
        if isinstance(hit, list) and len(hit) == 2 and all(isinstance(t, (int, float)) and t > 0 for t in hit):
            return float(hit[0]), float(hit[1])
    except (OSError, ValueError):
        pass
    timings = measure()
    cache[key] = list(timings)
    try:
        storage.write_bytes_atomic(path, json.dumps(cache).encode())
    except OSError:
        pass  # a read-only home only costs the measurement next time
    return timings


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def load_for_precision(registry, ref: str, precision: str, threads: int = 1, fallback: bool = False):
    """(LoadedModel of the chosen variant, why) for ``ref`` at ``--precision precision``, on this machine.

    ``fallback=True`` (streaming hot reload) runs FP32, with the reason, when an explicit ``int8`` is asked
    of a version that has no INT8 variant, instead of refusing: moderation must not stop over a promotion.
    """
    import onnxruntime as ort

    loaded = registry.load(ref)  # verifies model.onnx
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()

    def measure() -> tuple[float, float]:
        int8 = registry.load(loaded.card.ref, variant=INT8)
        key = f"{loaded.card.onnx_sha256}:{int8.card.variants[INT8]['sha256']}:{ort.__version__}:{_cpu_name()}:{threads}"
        return cached_timings(key, lambda: time_both(loaded.model_path, int8.model_path, loaded.card, threads))

    try:
        variant, why = choose_variant(loaded.card, precision, gpu=gpu, measure=measure)
    except UserError as exc:
        if not fallback:
            raise
        variant, why = FP32, f"{exc}; running FP32"
    if variant != FP32:
        loaded = registry.load(loaded.card.ref, variant=variant)
    return loaded, why
