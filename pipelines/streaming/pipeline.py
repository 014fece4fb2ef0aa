"""Compose the streaming job: Kafka SDF -> parse -> decode -> preprocess -> RunInference -> per-version
thresholds -> durable per-bundle sink. One linear chain without GroupByKey or Flatten, so everything fuses
into one stage: the sink sees each record in the bundle that read it, which makes per-bundle accounting and
offset commits sound on every runner (and is the only shape that runs on the in-process FnApiRunner)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from models.registry import Registry
from pipelines.decode import DEFAULT_MAX_PIXELS
from pipelines.precision import choose_variant
from pipelines.runner_names import LOCAL_RUNNERS
from pipelines.streaming.hot_model import DEFAULT_CHECK_INTERVAL_S, HotReloadModelHandler
from pipelines.streaming.kafka_config import KafkaConfig
from pipelines.streaming.sink import WriteDurably
from pipelines.streaming.source import ReadFromKafkaSDF
from pipelines.streaming.steps import ApplyVersionThresholds, DecodeItems, ParseMessages, PreprocessItems, ScoreItems
from schemas.errors import UserError
from schemas.messages import DEFAULT_MAX_MESSAGE_BYTES

LOG = logging.getLogger(__name__)
STREAM_RUNNERS_ERROR = (
    "tagger stream runs on the in-process FnApiRunner only (the default; --runner=DirectRunner or FnApiRunner), "
    "not {runner}: its Kafka source and offset-committing sink are proven only there, and DaskRunner has no "
    "streaming mode"
)


@dataclass(frozen=True)
class StreamJob:
    kafka: KafkaConfig
    topic: str
    decisions_topic: str
    dlq_topic: str
    group: str
    output: str
    registry_root: str
    model_ref: str = "tagger@production"
    allowed_prefixes: Sequence[str] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    reload_interval_s: float = DEFAULT_CHECK_INTERVAL_S
    start_from: str = "earliest"
    max_batch_size: int = 16
    precision: str = "auto"  # auto | fp32 | int8, applied to every version the job runs (hot reload too)
    beam_args: Sequence[str] = field(default_factory=tuple)


def build(pipeline: beam.Pipeline, job: StreamJob) -> None:
    loaded = Registry(job.registry_root).load(job.model_ref)  # fail fast, in one line, on a bad reference
    card = loaded.card
    if job.precision == "int8":
        choose_variant(card, job.precision, gpu=False)  # fails in one line if the version has no INT8 variant
    handler = HotReloadModelHandler(job.registry_root, job.model_ref, check_interval_s=job.reload_interval_s,
                                    min_batch_size=1, max_batch_size=job.max_batch_size, precision=job.precision)
    (
        pipeline
        | "ReadKafka" >> ReadFromKafkaSDF(job.kafka, job.topic, job.group, job.start_from)
        | "ParseMessages" >> ParseMessages(job.allowed_prefixes, job.max_message_bytes)
        | "DecodeImages" >> DecodeItems(card.preprocessing, job.max_pixels)
        | "PreprocessImages" >> PreprocessItems(card.preprocessing)
        | "RunModel" >> ScoreItems(handler)
        | "ApplyThresholds" >> ApplyVersionThresholds(job.registry_root)
        | "WriteDurably" >> WriteDurably(job.kafka, job.group, job.output, job.decisions_topic, job.dlq_topic,
                                         card.name)
    )


def options_for(beam_args: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(list(beam_args))
    options.view_as(StandardOptions).streaming = True
    return options


def run(job: StreamJob) -> None:
    """Run until killed (streaming pipelines never finish on their own)."""
    options = options_for(job.beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner not in (None, *LOCAL_RUNNERS):
        raise UserError(STREAM_RUNNERS_ERROR.format(runner=runner))
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner = FnApiRunner()  # DirectRunner would try to download Prism, which fails offline
    for noisy in ("kafka", "apache_beam"):
        if logging.getLogger().level > logging.DEBUG:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    LOG.info("streaming %s -> %s / %s (group %s), Parquet under %s", job.topic, job.decisions_topic,
             job.dlq_topic, job.group, job.output)
    with beam.Pipeline(runner=runner, options=options) as pipeline:
        build(pipeline, job)
