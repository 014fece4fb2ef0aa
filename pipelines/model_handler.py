"""A Beam RunInference model handler for registry models on onnxruntime.

It subclasses Beam's ``OnnxModelHandlerNumpy`` for its batching and sharing behaviour but loads through the
registry (sha256-verified) and returns a :class:`CardSession` - the session *and* the card it belongs to - so
every prediction names the model version that made it (Beam's ``model_id`` is None for ONNX). Model loading is
split into :meth:`CardModelHandler.resolve` (which version, which file) and :meth:`create_session` so the
streaming job can subclass ``resolve`` to follow the registry's production alias (hot reload).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

from schemas.card import ModelCard

LOG = logging.getLogger(__name__)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass
class CardSession:
    """What RunInference holds as "the model": an onnxruntime session plus its card and provider."""

    session: Any  # onnxruntime.InferenceSession
    card: ModelCard
    provider: str
    variant: str = "fp32"  # which of the version's model files the session runs (fp32 | int8)

    @property
    def model_id(self) -> str:
        """``name@vN#variant``: what each prediction carries (see :func:`split_model_id`)."""
        return f"{self.card.ref}#{self.variant}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, ...) float32 inputs -> (N, classes) probabilities, whatever the card says the graph outputs."""
        out = self.session.run([self.card.output_name], {self.card.input_name: batch})[0]
        out = np.asarray(out, dtype=np.float32)
        if self.card.outputs == "logits":
            out = 1.0 / (1.0 + np.exp(-out))
        return out


def split_model_id(model_id: str | None) -> tuple[str, str, str]:
    """``name@vN#variant`` (or ``name@vN``) -> (name, version, variant)."""
    name, _, rest = (model_id or "@").partition("@")
    version, _, variant = rest.partition("#")
    return name, version, variant or "fp32"


def choose_providers(available: Iterable[str]) -> list[str]:
    """CUDA first when this onnxruntime build and machine offer it, CPU always as the fallback."""
    available = list(available)
    return ([CUDA] if CUDA in available else []) + [CPU]


def create_session(
    model_path: str, card: ModelCard, intra_op_threads: int = 0, allow_spinning: bool = True,
    variant: str = "fp32",
) -> CardSession:
    """An onnxruntime session with explicit threading (0 = onnxruntime's default, one per core).

    ``allow_spinning=False`` stops idle intra-op threads from busy-waiting between runs; the streaming job
    needs that because its decode and Kafka work share the same cores between small inference batches.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()  # not picklable: built here, on the worker
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, sess_options=options, providers=choose_providers(ort.get_available_providers())
    )
    provider = session.get_providers()[0]
    LOG.info("model %s (%s) running on %s (intra-op threads %s)", card.ref, variant, provider,
             intra_op_threads or "default")
    return CardSession(session=session, card=card, provider=provider, variant=variant)


# Sessions being built ahead of time in this process, by (registry root, model ref, intra-op threads, variant).
_PRELOADED: dict[tuple[str, str, int, str], Future] = {}


def preload_session(registry_root: str, model_path: str, card: ModelCard, intra_op_threads: int,
                    variant: str = "fp32") -> None:
    """Start building the session on a background thread now (local, in-process runs): onnxruntime's import
    and the session build then overlap Beam's pipeline construction instead of delaying the first batch.
    :meth:`CardModelHandler.load_model` in this process takes it; other processes load as usual."""
    key = (registry_root, card.ref, intra_op_threads, variant)
    if key not in _PRELOADED:
        pool = ThreadPoolExecutor(1, thread_name_prefix="preload-model")
        _PRELOADED[key] = pool.submit(create_session, model_path, card, intra_op_threads, True, variant)
        pool.shutdown(wait=False)


def discard_preloaded() -> None:
    """Forget sessions no pipeline picked up (e.g. a run whose inputs all failed before inference)."""
    _PRELOADED.clear()


class CardModelHandler(OnnxModelHandlerNumpy):
    """RunInference handler for one pinned model version of a registry (local path or any Beam filesystem)."""

    FALLBACK_TO_FP32 = False  # --precision int8 on a version without the variant: refuse (batch) or run FP32

    def __init__(
        self,
        registry_root: str,
        model_ref: str,
        *,
        intra_op_threads: int = 0,
        min_batch_size: int = 8,
        max_batch_size: int = 32,
        precision: str = "fp32",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_uri=model_ref, min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs
        )
        self.registry_root = registry_root
        self.model_ref = model_ref
        self.intra_op_threads = intra_op_threads
        self.precision = precision  # fp32 | int8, or auto (chosen where the model loads: the worker's hardware)

    def resolve(self) -> tuple[ModelCard, str, str]:
        """(card, local model path, variant) to load; override to follow an alias instead of a pinned version."""
        from models.registry import Registry
        from pipelines.precision import load_for_precision

        loaded, why = load_for_precision(Registry(self.registry_root), self.model_ref, self.precision,
                                         fallback=self.FALLBACK_TO_FP32)
        LOG.info("model %s: %s variant (%s)", loaded.card.ref, loaded.variant, why)
        return loaded.card, loaded.model_path, loaded.variant

    def load_model(self) -> CardSession:  # type: ignore[override]
        key = (self.registry_root, self.model_ref, self.intra_op_threads, self.precision)
        preloaded = _PRELOADED.pop(key, None)
        if preloaded is not None:
            return preloaded.result()
        card, path, variant = self.resolve()
        return create_session(path, card, self.intra_op_threads, variant=variant)

    def run_inference(  # type: ignore[override]
        self,
        batch: Sequence[np.ndarray],
        model: CardSession,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        stacked = np.stack(batch, axis=0) if len(batch) > 1 else batch[0][None, ...]
        probabilities = model.predict(stacked)
        model_id = model.model_id
        return [PredictionResult(x, p, model_id) for x, p in zip(batch, probabilities)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(x.nbytes) for x in batch)

    def get_metrics_namespace(self) -> str:
        return "tagger_inference"

    def update_model_path(self, model_path: Optional[str] = None) -> None:
        """Beam's side-input model updates pass a new reference (``name@vN``) here."""
        if model_path:
            self.model_ref = model_path
            self._model_uri = model_path


def default_intra_op_threads(workers: int) -> int:
    """Split the cores between pipeline workers so decode and inference overlap instead of fighting."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
