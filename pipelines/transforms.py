"""Named PTransforms shared by the batch and streaming jobs: decode -> preprocess -> model -> thresholds.

Each multi-output transform returns ``(main, failed)``: ``failed`` carries :class:`~pipelines.records.Failure`
records (stage + reason), so nothing is ever dropped silently. The per-element work lives in pure functions
(:func:`decode_input`, :func:`prepare`, :func:`apply_thresholds`) that are testable without Beam.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from pipelines.decode import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DecodeError, decode_image
from pipelines.memory import DECODE_BUDGET, DEFAULT_MAX_DECODED_BYTES
from pipelines.model_handler import CardModelHandler, split_model_id
from pipelines.paths import one_line
from pipelines.preprocess import draft_size_for, preprocess
from pipelines.reading import ReadError
from pipelines.records import (
    FAILED,
    ClassProbabilities,
    MAIN,
    DecodedImageRecord,
    Failure,
    ImageInfo,
    ImageInput,
    Prepared,
    Scored,
    Tagged,
)
from schemas.card import ModelCard, Preprocessing
from schemas.reasons import UNEXPECTED

NAMESPACE = "tagger"


def failure_counter(stage: str):
    return Metrics.counter(NAMESPACE, f"failed_{stage}")


def failure_of(uri: str, stage: str, exc: BaseException, default_reason: str = UNEXPECTED) -> Failure:
    """The one dead letter an exception raised by one input becomes (counted in ``tagger:failed_<stage>``).

    Errors that know their reason (``DecodeError``, ``ReadError``) keep it; anything else becomes
    ``default_reason`` with ``ExceptionClass: message`` as the message. This is the per-input isolation
    boundary: every per-input step catches ``Exception`` here, so no input can end the run."""
    failure_counter(stage).inc()
    if isinstance(exc, (DecodeError, ReadError)):
        return Failure(uri, stage, exc.reason, one_line(str(exc)))
    return Failure(uri, stage, default_reason, one_line(f"{type(exc).__name__}: {exc}"))


# --------------------------------------------------------------------------------------------- pure functions
def decode_input(item: ImageInput, spec: Preprocessing, max_pixels: int, min_side: int,
                 max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
                 hold: contextlib.ExitStack | None = None) -> DecodedImageRecord:
    """Hash and decode one input; raises DecodeError with a stable reason. With ``hold``, the decode's memory
    reservation lasts until the caller closes it (after preprocessing)."""
    decoded = decode_image(item.data, max_pixels=max_pixels, min_side=min_side, draft_size=draft_size_for(spec),
                           max_decoded_bytes=max_decoded_bytes, hold=hold)
    info = ImageInfo(
        uri=item.uri,
        content_sha256=item.sha256 or hashlib.sha256(item.data).hexdigest(),
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
    )
    return DecodedImageRecord(info, decoded.image)


def apply_thresholds(
    probabilities: Sequence[float] | np.ndarray, classes: Sequence[str], thresholds: Sequence[float] | np.ndarray
) -> tuple[tuple[str, ...], ClassProbabilities]:
    """Probabilities in class order -> (tags at or above their class threshold, {class: probability})."""
    probs = np.asarray(probabilities, dtype=np.float32)
    classes = tuple(classes)
    if probs.shape != (len(classes),):
        raise ValueError(f"model returned {probs.shape} scores for {len(classes)} classes")
    hits = np.flatnonzero(probs >= np.asarray(thresholds, dtype=np.float32))
    tags = tuple(classes[i] for i in hits.tolist())
    return tags, ClassProbabilities(classes, probs)


# ------------------------------------------------------------------------------------------------- DoFns
class _DecodeFn(beam.DoFn):
    def __init__(self, spec: Preprocessing, max_pixels: int, min_side: int,
                 max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        self.spec, self.max_pixels, self.min_side = spec, max_pixels, min_side
        self.max_decoded_bytes = max_decoded_bytes

    def setup(self) -> None:
        if self.max_decoded_bytes > DECODE_BUDGET.total:  # a raised per-image limit must fit the shared budget
            DECODE_BUDGET.resize(self.max_decoded_bytes)

    def decode(self, item: ImageInput, hold: contextlib.ExitStack | None = None) -> DecodedImageRecord:
        return decode_input(item, self.spec, self.max_pixels, self.min_side, self.max_decoded_bytes, hold)

    def process(self, item: ImageInput) -> Iterable:
        try:
            record = self.decode(item)
        except Exception as exc:  # noqa: BLE001 - per-input isolation boundary
            yield beam.pvalue.TaggedOutput(FAILED, failure_of(item.uri, "decode", exc))
            return
        yield record


class _PreprocessFn(beam.DoFn):
    def __init__(self, spec: Preprocessing) -> None:
        self.spec = spec

    def process(self, record: DecodedImageRecord) -> Iterable:
        try:
            prepared = Prepared(record.info, preprocess(record.image, self.spec))
        except Exception as exc:  # noqa: BLE001 - a preprocessing bug must cost one image, not the run
            yield beam.pvalue.TaggedOutput(FAILED, failure_of(record.info.uri, "preprocess", exc, "preprocess_failed"))
            return
        yield prepared


class _ThresholdFn(beam.DoFn):
    def __init__(self, card: ModelCard) -> None:
        self.classes = tuple(card.classes)
        self.thresholds = np.asarray(card.threshold_vector, dtype=np.float32)
        # A variant recalibrated for its own probabilities carries its own thresholds (see card.for_variant).
        self.by_variant = {v: np.asarray(card.for_variant(v).threshold_vector, dtype=np.float32)
                           for v in card.published_variants()}

    def setup(self) -> None:
        # Images per tag are counted by the writers into the run manifest, not as one Beam counter per class
        # (an ImageNet-sized model made every bundle report, and the runner merge, a thousand counters).
        self.tagged = Metrics.counter(NAMESPACE, "images_tagged")

    def process(self, scored: Scored) -> Iterable:
        thresholds = self.by_variant.get(scored.model_variant, self.thresholds)
        try:
            tags, probs = apply_thresholds(scored.probabilities, self.classes, thresholds)
        except Exception as exc:  # noqa: BLE001 - e.g. a model that returns the wrong number of scores
            yield beam.pvalue.TaggedOutput(FAILED, failure_of(scored.info.uri, "inference", exc, "inference_failed"))
            return
        self.tagged.inc()
        yield Tagged(scored.info, tags, probs, scored.model_name, scored.model_version, scored.model_variant)


class _DecodePreprocessFn(_DecodeFn):
    """Decode and preprocess in one step (one Beam hop per image instead of three), emitting what
    RunInference's keyed handler takes: ``(ImageInfo, tensor)``. Failures keep their own stage names. The
    decode's memory reservation covers the full-size image until preprocessing has shrunk it."""

    def process(self, item: ImageInput) -> Iterable:
        with contextlib.ExitStack() as hold:
            try:
                record = self.decode(item, hold)
            except Exception as exc:  # noqa: BLE001 - per-input isolation boundary
                yield beam.pvalue.TaggedOutput(FAILED, failure_of(item.uri, "decode", exc))
                return
            try:
                tensor = preprocess(record.image, self.spec)
            except Exception as exc:  # noqa: BLE001 - a preprocessing bug must cost one image, not the run
                yield beam.pvalue.TaggedOutput(FAILED, failure_of(item.uri, "preprocess", exc, "preprocess_failed"))
                return
            info = record.info
            del record  # the full-size image goes before the tensor waits in a RunInference batch
        yield info, tensor


class _ScoredThresholdFn(_ThresholdFn):
    """RunInference's keyed result -> Tagged directly (no separate Scored hop)."""

    def process(self, keyed) -> Iterable[Tagged]:  # type: ignore[override]
        return super().process(_to_scored(keyed))


def _to_scored(keyed) -> Scored:
    info, result = keyed
    return Scored(info, result.inference, *split_model_id(result.model_id))


def _failed_batch(failed) -> Iterable[Failure]:
    batch, exc = failed
    for item in batch:
        yield failure_of(item[0].uri, "inference", exc, "inference_failed")


# -------------------------------------------------------------------------------------------- PTransforms
class DecodeImages(beam.PTransform):
    """ImageInput(uri, bytes) -> DecodedImageRecord (RGB, sha256, original size) | Failure(stage='decode')."""

    def __init__(
        self, spec: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ) -> None:
        super().__init__()
        self.spec, self.max_pixels, self.min_side = spec, max_pixels, min_side
        self.max_decoded_bytes = max_decoded_bytes

    def _fn(self) -> _DecodeFn:
        return _DecodeFn(self.spec, self.max_pixels, self.min_side, self.max_decoded_bytes)

    def expand(self, pcoll):
        result = pcoll | beam.ParDo(self._fn()).with_outputs(FAILED, main=MAIN)
        return result[MAIN], result[FAILED]


class PreprocessImages(beam.PTransform):
    """DecodedImageRecord -> Prepared (the model input tensor the card describes) | Failure."""

    def __init__(self, spec: Preprocessing) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, pcoll):
        result = pcoll | beam.ParDo(_PreprocessFn(self.spec)).with_outputs(FAILED, main=MAIN)
        return result[MAIN], result[FAILED]


class RunModel(beam.PTransform):
    """Prepared -> Scored via Beam RunInference (batched); a failing batch becomes Failures, not a dead run."""

    def __init__(self, handler: CardModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, pcoll):
        from apache_beam.ml.inference.base import KeyedModelHandler

        main, other = (
            pcoll
            | "Key" >> beam.Map(lambda p: (p.info, p.tensor))
            | RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        scored = main | "ToScored" >> beam.Map(_to_scored)
        failed = other.failed_inferences | "FailedBatch" >> beam.FlatMap(_failed_batch)
        return scored, failed


class ApplyThresholds(beam.PTransform):
    """Scored -> Tagged using the card's calibrated per-class thresholds | Failure (stage 'inference': scores
    that do not fit the card); counts images and tags as metrics."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__()
        self.card = card

    def expand(self, pcoll):
        result = pcoll | beam.ParDo(_ThresholdFn(self.card)).with_outputs(FAILED, main=MAIN)
        return result[MAIN], result[FAILED]


class DecodePreprocess(DecodeImages):
    """ImageInput -> ``(ImageInfo, tensor)`` | Failure(stage 'decode' or 'preprocess'): DecodeImages and
    PreprocessImages fused into one DoFn, for throughput."""

    def _fn(self) -> _DecodeFn:
        return _DecodePreprocessFn(self.spec, self.max_pixels, self.min_side, self.max_decoded_bytes)


class TagImages(beam.PTransform):
    """The whole chain: ImageInput -> (Tagged, Failure); what both the batch and streaming jobs apply.

    Same stages and results as DecodeImages -> PreprocessImages -> RunModel -> ApplyThresholds, with the
    per-image hops fused (decode+preprocess in one DoFn, thresholds straight on RunInference's output):
    every hop costs Python time under the GIL that the decode and inference threads need.
    """

    def __init__(self, card: ModelCard, handler: CardModelHandler, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_side: int = DEFAULT_MIN_SIDE, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        super().__init__()
        self.card, self.handler, self.max_pixels, self.min_side = card, handler, max_pixels, min_side
        self.max_decoded_bytes = max_decoded_bytes

    def expand(self, pcoll):
        from apache_beam.ml.inference.base import KeyedModelHandler

        spec = self.card.preprocessing
        keyed, prep_failed = pcoll | "DecodePreprocess" >> DecodePreprocess(
            spec, self.max_pixels, self.min_side, self.max_decoded_bytes)
        inference = RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        main, other = keyed | "RunInference" >> inference
        thresholded = main | "ApplyThresholds" >> beam.ParDo(_ScoredThresholdFn(self.card)).with_outputs(
            FAILED, main=MAIN)
        model_failed = other.failed_inferences | "FailedBatch" >> beam.FlatMap(_failed_batch)
        failed = (prep_failed, model_failed, thresholded[FAILED]) | "AllFailures" >> beam.Flatten()
        return thresholded[MAIN], failed
