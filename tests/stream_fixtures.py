"""Helpers for the streaming tests: run ``tagger stream`` as a killable subprocess, read topics and Parquet."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPICS = ("images", "decisions", "dlq")


@dataclass
class StreamProcess:
    process: subprocess.Popen
    log_path: str
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush or commit anything."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def stream_args(bootstrap: str, output: str, registry: str, group: str = "moderation", *extra: str) -> list[str]:
    return ["--bootstrap", bootstrap, "--topic", "images", "--decisions-topic", "decisions", "--dlq-topic", "dlq",
            "--group", group, "--output", output, "--registry", registry, "--reload-interval", "1", *extra]


def start_stream(args: list[str], log_path: str) -> StreamProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "ab") as log:
        command = os.environ.get("TAGGER_STREAM_COMMAND", f"{sys.executable} -m jobs.cli stream").split()
        process = subprocess.Popen([*command, *args], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    return StreamProcess(process, log_path, args)


@contextlib.contextmanager
def streaming(args: list[str], log_path: str) -> Iterator[StreamProcess]:
    job = start_stream(args, log_path)
    try:
        yield job
    finally:
        job.stop()


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0,
               job: StreamProcess | None = None) -> list:
    """Every record of ``topic`` from the start, polling until at least ``expect`` arrived (or time runs out)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        records, deadline = [], time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            if job is not None and job.process.poll() is not None:
                raise AssertionError(f"tagger stream exited with {job.process.returncode}:\n{job.log()[-4000:]}")
            for batch in consumer.poll(500).values():
                records.extend(batch)
        # A short extra poll catches duplicates that arrive right after the expected count.
        for batch in consumer.poll(500).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def decisions(records) -> list[dict]:
    return [json.loads(r.value) for r in records]


def visible_tag_rows(output: str) -> list[dict]:
    """Tag rows a reader may trust: those in files listed by a manifest (read back with DuckDB)."""
    import duckdb

    files = []
    for path in glob.glob(os.path.join(output, "_manifests", "*.json")):
        with open(path) as fh:
            files += [os.path.join(output, rel) for rel in json.load(fh)["tag_files"]]
    if not files:
        return []
    con = duckdb.connect()
    cursor = con.execute(
        "SELECT message_id, source_partition, source_offset, model_version, tags FROM read_parquet(?)", [files])
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def stop_on_exit(job: StreamProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(job.process.pid, signal.SIGTERM)
