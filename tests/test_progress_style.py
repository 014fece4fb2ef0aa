"""Where progress goes: a terminal gets one line redrawn in place, a log one plain line per interval, and the
switch turns it off (docs/cli.md)."""
from __future__ import annotations

import io
import time

from pipelines.progress import IntervalProgress, ProgressStyle


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_redrawn_line_and_a_log_gets_plain_lines(monkeypatch):
    monkeypatch.delenv("TAGGER_NO_PROGRESS", raising=False)
    terminal, log = _Terminal(), io.StringIO()
    live, lines = ProgressStyle.choose(terminal), ProgressStyle.choose(log)
    assert (live.mode, lines.mode, lines.interval) == ("live", "lines", 30.0)
    for style in (live, lines):
        style.show("1/2 images done")
        style.show("2/2 images done")
        style.done()
    assert terminal.getvalue().startswith("\r\x1b[K1/2 images done\r\x1b[K2/2")
    assert log.getvalue() == "progress: 1/2 images done\nprogress: 2/2 images done\n"


def test_the_switch_and_the_environment_turn_progress_off(monkeypatch):
    log = io.StringIO()
    assert ProgressStyle.choose(log, enabled=False).mode == "off"
    monkeypatch.setenv("TAGGER_NO_PROGRESS", "1")
    quiet = ProgressStyle.choose(_Terminal())
    quiet.show("anything")
    assert quiet.mode == "off" and quiet.stream.getvalue() == ""


def test_interval_progress_prints_at_most_once_per_interval(monkeypatch):
    monkeypatch.delenv("TAGGER_NO_PROGRESS", raising=False)
    log = io.StringIO()
    progress = IntervalProgress(ProgressStyle.choose(log, interval=0.2))
    began = time.monotonic()
    while time.monotonic() - began < 1.0:
        progress.update(lambda: "working")
    assert 2 <= log.getvalue().count("progress: working") <= 1.0 / 0.2 + 1
