"""The streaming tagging chain: one linear path of named transforms, failures carried along, never branched.

Measured on Beam 2.77's in-process FnApiRunner in streaming mode: a ``Flatten`` (like a ``GroupByKey``) stops
everything downstream of it, so the batch job's ``(main, failed)`` transforms cannot be re-joined here. Each
step below therefore maps a :class:`StreamItem` to a :class:`StreamItem` and passes items that already failed
through untouched, so the sink sees every record exactly once, in the same bundle, with one outcome. The work
per element is the batch job's pure functions (``decode_input``, ``preprocess``, ``apply_thresholds``) and its
RunInference model handler, so streaming and batch numbers match.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipelines.decode import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, DecodeError
from pipelines.preprocess import preprocess
from pipelines.reading import ReadError, read_bounded
from pipelines.records import Failure, ImageInput, Tagged
from pipelines.model_handler import split_model_id
from pipelines.streaming.hot_model import HotReloadModelHandler
from pipelines.transforms import apply_thresholds, decode_input, failure_counter
from schemas.card import Preprocessing
from schemas.messages import DEFAULT_MAX_MESSAGE_BYTES, MessageError, RawRecord, parse_message


class RecordContext(NamedTuple):
    """Everything about a record the sink needs besides its outcome."""

    record: RawRecord
    message_id: str | None
    image_uri: str | None  # the URI the message pointed to, if any


class StreamItem(NamedTuple):
    """One record on its way through the chain: ``value`` changes type per step until ``failure`` is set."""

    context: RecordContext
    value: Any
    failure: Failure | None = None

    def failed(self, stage: str, reason: str, message: str) -> "StreamItem":
        failure_counter(stage).inc()
        return StreamItem(self.context, None, Failure(self.context.record.source.uri, stage, reason, message[:500]))


def allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether ``uri`` lies under one of ``prefixes`` (local paths resolved, so ``..`` and symlinks can't escape)."""
    if "://" not in uri or uri.startswith("file://"):
        real = os.path.realpath(uri.removeprefix("file://"))
        for prefix in prefixes:
            if "://" in prefix and not prefix.startswith("file://"):
                continue
            base = os.path.realpath(prefix.removeprefix("file://"))
            if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
                return True
        return False
    if "/../" in uri or uri.endswith("/..") or "/./" in uri:
        return False
    return any("://" in p and uri.startswith(p.rstrip("/") + "/") for p in prefixes)


def read_uri(uri: str, prefixes: Sequence[str], max_bytes: int) -> bytes:
    """Bytes behind ``uri`` if it is under an allowed prefix and not larger than ``max_bytes``."""
    if not prefixes or not allowed(uri, prefixes):
        raise MessageError("read", "uri_not_allowed", f"{uri} is not under an allowed prefix")
    try:  # bounded like the batch job's reads: regular files only (a FIFO would hang the stream), size, time
        return read_bounded(uri, max_bytes)
    except ReadError as exc:
        raise MessageError("read", "oversized" if exc.reason == "too_large" else "unreadable",
                           f"{exc} ({exc.reason})"[:500]) from exc
    except Exception as exc:  # noqa: BLE001 - a transient store error: the message says which
        raise MessageError("read", "unreadable", f"{uri}: {type(exc).__name__}: {exc}"[:500]) from exc


def parse_record(record: RawRecord, prefixes: Sequence[str], max_bytes: int) -> StreamItem:
    """RawRecord -> StreamItem holding the image bytes as an ``ImageInput`` (or the parse/read failure)."""
    item = StreamItem(RecordContext(record, None, None), None)
    try:
        request = parse_message(record, max_bytes)
        item = StreamItem(RecordContext(record, request.id, request.uri), None)
        data = request.data if request.data is not None else read_uri(request.uri, prefixes, max_bytes)
    except MessageError as exc:
        return item.failed(exc.stage, exc.reason, str(exc))
    return item._replace(value=ImageInput(record.source.uri, data))


def decode_item(item: StreamItem, spec: Preprocessing, max_pixels: int, min_side: int) -> StreamItem:
    if item.failure:
        return item
    try:
        return item._replace(value=decode_input(item.value, spec, max_pixels, min_side))
    except DecodeError as exc:
        return item.failed("decode", exc.reason, str(exc))


def preprocess_item(item: StreamItem, spec: Preprocessing) -> StreamItem:
    if item.failure:
        return item
    try:
        return item._replace(value=(item.value.info, preprocess(item.value.image, spec)))
    except Exception as exc:  # a preprocessing bug must cost one image, not the stream
        return item.failed("preprocess", type(exc).__name__, str(exc))


class ParseMessages(beam.PTransform):
    """RawRecord -> StreamItem(ImageInput) per the message contract; URIs only under allowed prefixes."""

    def __init__(self, allowed_prefixes: Sequence[str] = (), max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.allowed_prefixes, self.max_bytes = tuple(allowed_prefixes), max_bytes

    def expand(self, pcoll):
        return pcoll | beam.Map(parse_record, self.allowed_prefixes, self.max_bytes)


class DecodeItems(beam.PTransform):
    """StreamItem(ImageInput) -> StreamItem(DecodedImageRecord) with the batch job's ``decode_input``."""

    def __init__(self, spec: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_side: int = DEFAULT_MIN_SIDE) -> None:
        super().__init__()
        self.spec, self.max_pixels, self.min_side = spec, max_pixels, min_side

    def expand(self, pcoll):
        return pcoll | beam.Map(decode_item, self.spec, self.max_pixels, self.min_side)


class PreprocessItems(beam.PTransform):
    """StreamItem(DecodedImageRecord) -> StreamItem((ImageInfo, tensor)) with the shared ``preprocess``."""

    def __init__(self, spec: Preprocessing) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, pcoll):
        return pcoll | beam.Map(preprocess_item, self.spec)


def _to_keyed(item: StreamItem):
    return item, (None if item.failure else item.value[1])


def _from_keyed(keyed) -> StreamItem:
    item, result = keyed
    if item.failure:
        return item
    return item._replace(value=(item.value[0], result.inference, *split_model_id(result.model_id)))


class ScoreItems(beam.PTransform):
    """StreamItem(tensor) -> StreamItem((info, probabilities, model name, version, variant)) via RunInference."""

    def __init__(self, handler: HotReloadModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, pcoll):
        return (
            pcoll
            | "Key" >> beam.Map(_to_keyed)
            | "RunInference" >> RunInference(KeyedModelHandler(self.handler))
            | "Unkey" >> beam.Map(_from_keyed)
        )


class _ThresholdByVersionFn(beam.DoFn):
    def __init__(self, registry_root: str) -> None:
        self.registry_root = registry_root

    def setup(self) -> None:
        self.cards: dict = {}

    def process(self, item: StreamItem) -> Iterable[StreamItem]:
        if item.failure:
            yield item
            return
        from models.registry import Registry, RegistryError

        info, probabilities, name, version, variant = item.value
        key = (name, version, variant)
        if key not in self.cards:
            try:
                self.cards[key] = Registry(self.registry_root).card(name, version).for_variant(variant)
            except RegistryError as exc:  # its card changed or broke since the model was loaded: no honest tags
                yield item.failed("inference", "model_card_invalid", str(exc))
                return
        card = self.cards[key]
        try:
            tags, probs = apply_thresholds(probabilities, card.classes, card.threshold_vector)
        except ValueError as exc:  # a model whose output does not match its card
            yield item.failed("inference", "output_shape", str(exc))
            return
        yield item._replace(value=Tagged(info, tags, probs, name, version, variant))


class ApplyVersionThresholds(beam.PTransform):
    """StreamItem(scores) -> StreamItem(Tagged) with the thresholds of the version that scored it."""

    def __init__(self, registry_root: str) -> None:
        super().__init__()
        self.registry_root = registry_root

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_ThresholdByVersionFn(self.registry_root))
