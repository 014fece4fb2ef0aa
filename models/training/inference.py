"""Run an exported model with plain onnxruntime, as every consumer does (used for test metrics and the gate)."""
from __future__ import annotations

import numpy as np


THREADS: int | None = None  # set by the job (see engine.choose_threads); None = onnxruntime's default


def session(model_path: str):
    """An onnxruntime session, CUDA first when the installed onnxruntime offers it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if THREADS:
        options.intra_op_num_threads = THREADS
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(model_path, sess_options=options, providers=providers)


def predict(model_path: str, inputs: np.ndarray, outputs: str = "probabilities", batch_size: int = 32) -> np.ndarray:
    """Probabilities for a stack of preprocessed inputs; ``outputs='logits'`` models get a sigmoid here."""
    sess = session(model_path)
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: inputs[i : i + batch_size]})[0] for i in range(0, len(inputs), batch_size)]
    out = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))
    return 1.0 / (1.0 + np.exp(-out)) if outputs == "logits" else out
