"""Ctrl-C and SIGTERM end a job with one line and a conventional exit status (130, 143), never a traceback.

Two ways to stop, chosen by what is running:

* Most code unwinds: SIGINT raises ``KeyboardInterrupt`` and SIGTERM raises :class:`Terminated` (a
  ``KeyboardInterrupt``), so ``finally`` blocks remove their staging (the registry's publish does) before the
  CLI prints the line and ends the process without interpreter teardown (onnxruntime/gRPC threads still
  alive at teardown made C++ abort with "terminate called without an active exception", exit 134).
* A running Beam pipeline cannot unwind: its worker threads keep writing, and the runner waits for bundles
  to finish. :func:`hard_stop` runs a clean-up (remove the run's staging) inside the signal handler and ends
  the process at once, which stops every worker thread with it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs."""


def exit_status(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def signal_name(exc: BaseException) -> str:
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_sigterm() -> None:
    """SIGTERM (systemd stop, ``kill``) behaves like Ctrl-C. Main thread only (Python's rule)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def end_process(prog: str, exc: BaseException, note: str = "", stream=None) -> None:
    """Print the one line and leave now: no teardown of native threads, no traceback."""
    print(f"{prog}: interrupted by {signal_name(exc)}{'; ' + note if note else ''}", file=stream or sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(exit_status(exc))


@contextlib.contextmanager
def hard_stop(prog: str, cleanup: Callable[[], str]) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM call ``cleanup`` (which returns a note for the line), print one
    line and end the process at once. Outside the main thread this is a no-op (signals go to the main one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()

    def handler(signum, frame) -> None:
        if fired.is_set():
            return  # a second Ctrl-C while cleaning up: the first one is already ending the process
        fired.set()
        # Worker threads keep running until the process ends; the ones that trip over the staging being removed
        # log errors and Beam's harness prints tracebacks to stderr. The run is over: nothing they say matters.
        logging.disable(logging.CRITICAL)
        stderr, sys.stderr = sys.stderr, open(os.devnull, "w")
        exc: BaseException = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        try:
            note = cleanup()
        except Exception as error:  # noqa: BLE001 - the run must still end, saying what was left
            note = f"clean-up failed ({type(error).__name__}: {error})"
        _stop_children()
        end_process(prog, exc, note, stream=stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop_children() -> None:
    """SIGTERM this process's own child processes (Beam's subprocess workers, if any), by pid."""
    me = os.getpid()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            try:
                os.kill(int(entry), signal.SIGTERM)
            except OSError:
                pass
