"""Stopping the child processes a tool started: by PID, politely first, never by name."""

from __future__ import annotations

import signal
import subprocess
import time

__all__ = ["stop_processes"]


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM every one still running, wait for all within ``timeout`` in total (a member's
    graceful stop hands its leadership over first), then SIGKILL those left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
