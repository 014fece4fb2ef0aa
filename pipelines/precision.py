"""``--precision auto|fp32|int8``: which of a version's model files a run uses, and why.

``auto`` runs FP32 on a GPU (onnxruntime's CUDA provider gains little from QDQ INT8 and the variant was
checked on CPU) and INT8 on a CPU when the version has a published INT8 variant and the CPU has int8
dot-product instructions (x86 VNNI / AMX, Arm dot product), where it measured ~2.5x faster per core. On an
x86 CPU without VNNI, onnxruntime's uint8 x int8 kernels use VPMADDUBSW, whose 16-bit intermediate sums can
saturate (its quantization docs), so the variant's numbers there are not the ones checked on the test split,
and the speed-up is smaller: ``auto`` runs FP32 there (so it is never slower than ``fp32``), and
``--precision int8`` is the explicit opt-in.
"""
from __future__ import annotations

from schemas.card import ModelCard
from schemas.errors import UserError

PRECISIONS = ("auto", "fp32", "int8")
FP32, INT8 = "fp32", "int8"
# CPU flags (Linux /proc/cpuinfo names) that give onnxruntime's int8 kernels their fast path.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


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
    card: ModelCard, requested: str, *, gpu: bool, flags: frozenset[str] | None = None
) -> tuple[str, str]:
    """(variant to run, why) for ``--precision requested`` on a machine with these CPU ``flags``."""
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
    return FP32, ("auto: CPU without int8 dot-product instructions (VNNI); --precision int8 opts in to a smaller "
                  "speed-up whose uint8 x int8 products may saturate")


def load_for_precision(registry, ref: str, precision: str, fallback: bool = False, loaded=None):
    """(LoadedModel of the chosen variant, why) for ``ref`` at ``--precision precision``, on this machine.

    ``fallback=True`` (streaming hot reload) runs FP32, with the reason, when an explicit ``int8`` is asked
    of a version that has no INT8 variant, instead of refusing: moderation must not stop over a promotion.
    ``loaded``: ``ref`` as the caller already loaded (and so verified) it, not hashed again.
    """
    import onnxruntime as ort

    loaded = loaded or registry.load(ref)  # verifies model.onnx and every variant the card lists
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    try:
        variant, why = choose_variant(loaded.card, precision, gpu=gpu)
    except UserError as exc:
        if not fallback:
            raise
        variant, why = FP32, f"{exc}; running FP32"
    return loaded.as_variant(variant), why
