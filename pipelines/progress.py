"""Progress output, and live progress for local tagging runs.

Where progress goes (docs/cli.md): a terminal gets one line redrawn in place; anything else (a log file, a
pipe, cron, the scheduled jobs' logs) gets one plain ``progress:`` line per interval and never a carriage
return; ``--no-progress`` or ``TAGGER_NO_PROGRESS=1`` turns it off. Each run still ends with its summary.

Tagging: FnApiRunner only reports Beam metrics when the run ends, and subprocess workers share no memory with
the launcher, so each writer instance atomically rewrites ``<dir>/<kind>-<id>.json`` at most once a second.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import IO, Any

MATCHED_KIND = "matched"  # written once by the matching step: the number of inputs, for the ETA
NO_PROGRESS_ENV = "TAGGER_NO_PROGRESS"
LOG_INTERVAL_S = 30.0  # one line per interval in a log
TERMINAL_INTERVAL_S = 1.0  # redraw rate on a terminal


@dataclass(frozen=True)
class ProgressStyle:
    """How a job shows progress: ``live`` (a terminal: one line redrawn), ``lines`` (one plain line per
    interval) or ``off``."""

    mode: str
    interval: float
    stream: Any = None

    @classmethod
    def choose(cls, stream: IO[str] | None = None, interval: float | None = None, enabled: bool = True
               ) -> "ProgressStyle":
        stream = stream or sys.stderr
        if not enabled or os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0"):
            return cls("off", LOG_INTERVAL_S, stream)
        isatty = getattr(stream, "isatty", lambda: False)
        if isatty():
            return cls("live", interval or TERMINAL_INTERVAL_S, stream)
        return cls("lines", interval or LOG_INTERVAL_S, stream)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def show(self, text: str) -> None:
        if self.mode == "live":
            self.stream.write(f"\r\x1b[K{text}")
            self.stream.flush()
        elif self.mode == "lines":
            print(f"progress: {text}", file=self.stream, flush=True)

    def done(self) -> None:
        """End a redrawn line (live mode) so the next output starts on its own line."""
        if self.mode == "live":
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class IntervalProgress:
    """Calls ``style.show`` with the latest text at most once per interval (for loops that update often)."""

    def __init__(self, style: ProgressStyle) -> None:
        self.style = style
        self._last = time.monotonic()

    def update(self, text_fn) -> None:
        if not self.style.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.style.interval:
            self._last = now
            self.style.show(text_fn())

    def close(self) -> None:
        self.style.done()


class ProgressFile:
    """A worker-side counter persisted to a small JSON file (throttled)."""

    def __init__(self, directory: str, kind: str, interval: float = 1.0) -> None:
        self.path = os.path.join(directory, f"{kind}-{uuid.uuid4().hex}.json")
        self.count = 0
        self.interval = interval
        self._last = 0.0
        os.makedirs(directory, exist_ok=True)

    def add(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self.flush()
            self._last = now

    def flush(self) -> None:
        """Best effort: progress must never fail a bundle (the run's staging may be going: Ctrl-C)."""
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump({"count": self.count}, fh)
            os.replace(tmp, self.path)
        except OSError:
            pass


def read_counts(directory: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for path in glob.glob(os.path.join(directory, "*.json")):
        kind = os.path.basename(path).split("-", 1)[0]
        try:
            with open(path) as fh:
                totals[kind] = totals.get(kind, 0) + int(json.load(fh)["count"])
        except (OSError, ValueError, KeyError):
            continue  # being replaced right now; next poll sees it
    return totals


def format_progress(done: int, errors: int, elapsed: float, total: int | None) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{done}{'/' + str(total) if total else ''} images done, {rate:.1f} images/s, {errors} errors"
    if total and rate > 0 and done < total:
        text += f", ETA {int((total - done) / rate)} s"
    return text


class ProgressPrinter:
    """Background thread showing the summed counts every ``style.interval`` seconds (see ProgressStyle).

    The total for the ETA is the count the matching step writes (kind ``matched``), once it has listed."""

    def __init__(self, directory: str, interval: float = 5.0, stream=None, style: ProgressStyle | None = None
                 ) -> None:
        self.style = style or ProgressStyle("lines", interval, stream or sys.stderr)
        self.directory, self.interval = directory, self.style.interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> "ProgressPrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.style.done()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            counts = read_counts(self.directory)
            total = counts.pop(MATCHED_KIND, None)
            done = sum(counts.values())
            if done:
                self.style.show(format_progress(done, counts.get("failed", 0), time.monotonic() - self._start,
                                                total))
