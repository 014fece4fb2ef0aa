"""Streaming moderation: sustained throughput and produce-to-decision latency at a fixed offered load.

Starts a tansu broker on loopback, publishes MobileNetV2 at 224 (ImageNet weights, the default model shape),
runs ``tagger stream`` as a subprocess and feeds inline JPEG messages at ``--rate`` per second for
``--seconds``. Latency is measured per message from just before ``send`` to the first arrival of its
decision (dedup key) on the decisions topic, so it includes Kafka both ways, decode, preprocess, inference,
the Parquet write and the offset commit that precede each decision's publication.

Each run starts a fresh broker and job; ``--precisions int8,fp32`` runs the job once per precision (the model
carries an INT8 variant made by the training job's quantizer), interleaved over ``--repeats``, so both are
measured in the same script under the same machine load. Baseline, same script, same images and model: a
plain single-process FP32 loop (decode + preprocess + ``session.run``, batch 1 and 16).

    .venv/bin/python bench/stream_latency.py                 # 50 msg/s for 60 s (the target load)
    .venv/bin/python bench/stream_latency.py --quick         # 50 msg/s for 20 s
    .venv/bin/python bench/stream_latency.py --rate 80       # look for the knee

Images: ../shared/data/coco128 photos when present (real 640x480 COCO JPEGs), otherwise synthetic 640x480
JPEGs generated here.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from batch_throughput import add_int8_variant, write_jpegs  # noqa: E402  (same helpers as the batch bench)

from pipelines.decode import decode_image  # noqa: E402
from pipelines.preprocess import draft_size_for, preprocess  # noqa: E402
from pipelines.streaming.kafka_config import KafkaConfig  # noqa: E402
from tests.kafka_broker import running_broker  # noqa: E402
from tests.stream_fixtures import TOPICS, start_stream, stream_args  # noqa: E402

COCO = os.path.join(ROOT, "..", "shared", "data", "coco128")


def publish_default_model(registry: str) -> str:
    """The default model's shape: the training job's MobileNetV2 (ImageNet backbone) with an 80-class COCO head,
    exported by the training job's exporter. Its head is untrained: this measures speed, not quality."""
    from models.registry import Registry
    from models.training.architectures import DEFAULT_ARCH, build
    from models.training.export import export_onnx
    from schemas.card import ModelCard, Preprocessing

    names_file = os.path.join(COCO, "classes.txt")
    classes = tuple(open(names_file).read().split("\n")[:80]) if os.path.exists(names_file) else ()
    classes = tuple(c.strip().replace(" ", "_") for c in classes if c.strip()) or tuple(f"c{i:02d}" for i in range(80))
    reg = Registry(registry)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(build(DEFAULT_ARCH, len(classes)).model.eval(), path, 224)
        card = ModelCard(name="tagger", version="", classes=classes, thresholds={c: 0.5 for c in classes},
                         preprocessing=Preprocessing(input_size=224), architecture=DEFAULT_ARCH)
        card = reg.publish(card, path)
    reg.promote(card.name, card.version, reason="benchmark")
    return card.ref


def bench_images(tmp: str) -> list[str]:
    photos = sorted(glob.glob(os.path.join(COCO, "**", "*.jpg"), recursive=True))
    if photos:
        return photos
    return sorted(glob.glob(write_jpegs(os.path.join(tmp, "jpegs"), 128, (640, 480))))


def plain_capacity(paths: list[str], registry: str, ref: str, n: int = 128, batch: int = 1) -> float:
    """Images/s of decode + preprocess + session.run in batches of ``batch`` (1: one message at a time)."""
    import onnxruntime as ort

    from models.registry import Registry

    loaded = Registry(registry).load(ref)
    card = loaded.card
    session = ort.InferenceSession(loaded.model_path, providers=["CPUExecutionProvider"])
    blobs = [open(p, "rb").read() for p in paths]
    draft = draft_size_for(card.preprocessing)
    start = time.perf_counter()
    pending = []
    for i in range(n):
        decoded = decode_image(blobs[i % len(blobs)], draft_size=draft)
        pending.append(preprocess(decoded.image, card.preprocessing))
        if len(pending) == batch or i == n - 1:
            session.run([card.output_name], {card.input_name: np.stack(pending)})
            pending = []
    return n / (time.perf_counter() - start)


class DecisionWatcher(threading.Thread):
    """Records the first arrival time of each decision by id."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.arrivals, self.stop = bootstrap, {}, threading.Event()
        self.total = 0
        self.seen: set[str] = set()
        self.values: list[bytes] = []

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tp = TopicPartition("decisions", 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        while not self.stop.is_set():
            for records in consumer.poll(100).values():
                now = time.time()
                for r in records:
                    self.total += 1
                    decision = json.loads(r.value)
                    self.arrivals.setdefault(decision["id"], now)
                    if decision["id"] not in self.seen:
                        self.seen.add(decision["id"])
                        self.values.append(r.value)
        consumer.close()


def feed(config: KafkaConfig, paths: list[str], rate: float, count: int, prefix: str) -> dict[str, float]:
    """Send ``count`` inline messages at ``rate``/s; returns id -> send time."""
    producer = config.producer(linger_ms=0)
    blobs = [open(p, "rb").read() for p in paths]
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        message_id = f"{prefix}-{i:06d}"
        sent[message_id] = time.time()
        producer.send("images", key=message_id.encode(), value=blobs[i % len(blobs)],
                      headers=[("content-type", b"image/jpeg"), ("id", message_id.encode())])
    producer.flush()
    producer.close()
    return sent


def wait_for(watcher: DecisionWatcher, ids, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(i in watcher.arrivals for i in ids):
            return True
        time.sleep(0.2)
    return False


def one_run(precision: str, registry: str, ref: str, paths: list[str], rate: float, seconds: float,
            tmp: str) -> dict:
    """One streaming job at ``--precision precision`` on a fresh broker, fed ``rate`` msg/s for ``seconds``."""
    with running_broker() as broker:
        broker.create_topics(*TOPICS)
        config = KafkaConfig(broker.bootstrap)
        watcher = DecisionWatcher(broker.bootstrap)
        watcher.start()
        log_path = os.path.join(tmp, f"job-{precision}-{time.time():.0f}.log")
        job = start_stream(stream_args(broker.bootstrap, os.path.join(tmp, f"out-{precision}"), registry, "bench",
                                       "--model", ref.split("@")[0] + "@production", "--precision", precision),
                           log_path)
        try:
            warm = feed(config, paths, 10, 20, "warmup")  # model load + first batches, not measured
            if not wait_for(watcher, warm, 120):
                print(job.log()[-3000:])
                raise SystemExit("the streaming job did not answer the warm-up messages")
            count = int(rate * seconds)
            sent = feed(config, paths, rate, count, "load")
            complete = wait_for(watcher, sent, 120)
            variants = {json.loads(v)["model_variant"] for v in watcher.values}
        finally:
            job.stop()
            if os.environ.get("BENCH_KEEP_LOG"):
                import shutil
                shutil.copy(log_path, os.environ["BENCH_KEEP_LOG"] + f".{precision}")
            watcher.stop.set()
            watcher.join(timeout=5)
    got = {i: watcher.arrivals[i] for i in sent if i in watcher.arrivals}
    latencies = sorted(got[i] - sent[i] for i in got)
    arrivals = sorted(got.values())
    lo, hi = int(0.1 * len(arrivals)), int(0.9 * len(arrivals)) - 1
    sustained = (hi - lo) / (arrivals[hi] - arrivals[lo]) if hi > lo else float("nan")
    q = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {"precision": precision, "variants": sorted(variants), "complete": complete, "decided": len(got),
            "count": count, "sustained": sustained, "p50": q[0], "p95": q[1], "p99": q[2],
            "max": latencies[-1] if latencies else float("nan"), "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="offered load, messages/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the offered load")
    parser.add_argument("--quick", action="store_true", help="20 s of load")
    parser.add_argument("--precisions", default="int8,fp32", help="runs per repeat, in this order")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of every precision")
    args = parser.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    precisions = args.precisions.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        registry = os.path.join(tmp, "registry")
        ref = publish_default_model(registry)
        paths = bench_images(tmp)
        ref = add_int8_variant(registry, ref, paths[:64])
        capacity = plain_capacity(paths, registry, ref)
        capacity_batched = plain_capacity(paths, registry, ref, batch=16)
        runs = [one_run(p, registry, ref, paths, args.rate, seconds, tmp)
                for _ in range(args.repeats) for p in precisions]

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"images: {'coco128' if 'coco128' in paths[0] else 'synthetic 640x480'}")
    print(f"model: {ref} (MobileNetV2 224, 80 classes: the default model's shape, with its INT8 variant; CPU)")
    print(f"offered load: {args.rate:.0f} msg/s for {seconds:.0f} s per run; runs interleaved: {precisions} x "
          f"{args.repeats}")
    print(f"{'precision':<10} {'ran':<6} {'decided':>11} {'sustained':>10} {'p50':>7} {'p95':>7} {'p99':>7} "
          f"{'max':>7} {'load':>5}")
    for r in runs:
        print(f"{r['precision']:<10} {','.join(r['variants']):<6} {r['decided']:>5}/{r['count']:<5} "
              f"{r['sustained']:>10.1f} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['p99']:>7.3f} {r['max']:>7.3f} "
              f"{r['load']:>5.1f}{'' if r['complete'] else '  INCOMPLETE'}")
    for p in precisions:
        mine = [r for r in runs if r["precision"] == p]
        print(f"median {p}: sustained {statistics.median(r['sustained'] for r in mine):.1f} img/s, "
              f"p50 {statistics.median(r['p50'] for r in mine):.3f} s, "
              f"p99 {statistics.median(r['p99'] for r in mine):.3f} s; target (>= {args.rate:.0f}/s, p99 < 2 s): "
              f"{'met' if all(r['complete'] and r['sustained'] >= 0.95 * args.rate and r['p99'] < 2 for r in mine) else 'NOT met'}")
    print(f"baseline plain FP32 loop (decode+preprocess+run, one process): batch 1 {capacity:.1f} images/s, "
          f"batch 16 {capacity_batched:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
