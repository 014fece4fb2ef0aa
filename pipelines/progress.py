"""Live progress for local runs: workers drop tiny count files, the launcher sums and prints them.

FnApiRunner only reports Beam metrics when the run ends, and subprocess workers share no memory with the
launcher, so each writer instance atomically rewrites ``<dir>/<kind>-<id>.json`` at most once a second.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import threading
import time
import uuid

MATCHED_KIND = "matched"  # written once by the matching step: the number of inputs, for the ETA


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
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"count": self.count}, fh)
        os.replace(tmp, self.path)


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
    """Background thread printing one progress line every ``interval`` seconds to stderr.

    The total for the ETA is the count the matching step writes (kind ``matched``), once it has listed."""

    def __init__(self, directory: str, interval: float = 5.0, stream=sys.stderr) -> None:
        self.directory, self.interval, self.stream = directory, interval, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> "ProgressPrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            counts = read_counts(self.directory)
            total = counts.pop(MATCHED_KIND, None)
            done = sum(counts.values())
            if done:
                line = format_progress(done, counts.get("failed", 0), time.monotonic() - self._start, total)
                print(f"progress: {line}", file=self.stream, flush=True)
