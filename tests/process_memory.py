"""The peak resident memory of a child process, measured honestly.

``wait4``'s ``ru_maxrss`` is not it: a child forked from a big process (pytest, a benchmark that imported
torch) starts with the parent's pages counted, and exec keeps that high-water mark. The kernel's per-process
``VmHWM`` (``/proc/PID/status``) starts afresh at exec and only rises, so polling it until the process exits
gives its own peak, missing at most the growth of the last poll interval.
"""
from __future__ import annotations

import subprocess
import time


def vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(cmd: list[str], timeout: float, interval: float = 0.05) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, peak RSS in MB) of ``cmd``; kills it and raises TimeoutError past ``timeout``."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        import threading

        out: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
                   for k, s in (("out", proc.stdout), ("err", proc.stderr))]
        for r in readers:
            r.start()
        peak, deadline = 0, time.monotonic() + timeout
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kb(proc.pid) or 0)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{cmd[0]} did not finish in {timeout:.0f} s")
            time.sleep(interval)
        for r in readers:
            r.join()
        return proc.returncode, out["out"].decode(), out["err"].decode(), peak / 1024
