"""The baseline `tagger tag` is measured against: a plain single-process loop, what a careful engineer would
write without Beam. Read, Pillow decode (JPEG draft), resize/normalise, ``session.run`` in batches of 32 with
onnxruntime's default threading (all cores). Same decode and preprocess functions as the pipeline.

Run alone it is timed like ``tagger tag`` (process start to exit, imports and session build included):

    .venv/bin/python bench/plain_loop.py 'DIR/*.jpg' REGISTRY bench@v1

It imports only what the loop needs (numpy, Pillow, onnxruntime, the registry, decode, preprocess).
"""
from __future__ import annotations

import glob
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from models.registry import Registry  # noqa: E402
from pipelines.decode import decode_image  # noqa: E402
from pipelines.preprocess import draft_size_for, preprocess  # noqa: E402


def plain_loop(pattern: str, registry: str, ref: str, batch: int = 32) -> tuple[int, float]:
    """(images, seconds) of the loop, timed from after the session is built to the last batch."""
    loaded = Registry(registry).load(ref)
    card = loaded.card
    session = ort.InferenceSession(loaded.model_path, providers=["CPUExecutionProvider"])
    files = sorted(glob.glob(pattern))
    start = time.perf_counter()
    pending: list[np.ndarray] = []
    done = 0
    for path in files:
        pending.append(model_input(path, card.preprocessing))
        if len(pending) == batch:
            session.run([card.output_name], {card.input_name: np.stack(pending)})
            done += len(pending)
            pending = []
    if pending:
        session.run([card.output_name], {card.input_name: np.stack(pending)})
        done += len(pending)
    return done, time.perf_counter() - start


def threaded_loop(pattern: str, registry: str, ref: str, variant: str = "int8", batch: int = 8,
                  threads: int | None = None) -> tuple[int, float]:
    """(images, seconds) of the same steps on ``threads`` threads (default: one per core), each with its own
    one-thread session of ``variant`` and batches of ``batch``: what `tagger tag` does locally without Beam,
    so it bounds what any pipeline reaches on these cores with these decode, preprocess and model costs.
    Timed from after the sessions are built and warmed up."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    threads = threads or os.cpu_count() or 1
    loaded = Registry(registry).load(ref, variant=variant)
    card = loaded.card
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    local = threading.local()

    def build_session() -> None:
        local.session = ort.InferenceSession(loaded.model_path, sess_options=options,
                                             providers=["CPUExecutionProvider"])

    def run(paths: list[str]) -> int:
        tensors = np.stack([model_input(path, card.preprocessing) for path in paths])
        local.session.run([card.output_name], {card.input_name: tensors})
        return len(paths)

    files = sorted(glob.glob(pattern))
    chunks = [files[i:i + batch] for i in range(0, len(files), batch)]
    with ThreadPoolExecutor(threads, initializer=build_session) as pool:
        list(pool.map(run, chunks[:threads]))  # warm-up: starts the threads; first runs allocate
        start = time.perf_counter()
        done = sum(pool.map(run, chunks))
        return done, time.perf_counter() - start


def model_input(path: str, spec) -> np.ndarray:
    """One file read, decoded (JPEG draft) and preprocessed as the card says: the per-image work of both loops."""
    with open(path, "rb") as fh:
        return preprocess(decode_image(fh.read(), draft_size=draft_size_for(spec)).image, spec)


if __name__ == "__main__":
    images, seconds = plain_loop(*sys.argv[1:4])
    print(f"{images} images in {seconds:.3f} s")
