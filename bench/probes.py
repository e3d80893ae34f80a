"""The two floors under one replicated write on this machine, measured in the same run as the
systems: one fsync'd 4 KiB append on the disk that holds the data dirs, and one loopback TCP round
trip of a small message between two processes.

    python bench/probes.py [--dir DIR]      # prints both medians

A replicated put needs at least one durable append and one round trip to a follower (and the
follower's own durable append), hence the issue's bar for one client, one request at a time:
put p50 <= 2 x (fsync + RTT).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BLOCK = 4096
_MSG = b"x" * 64

# The echo side runs in its own interpreter so that the two ends do not share a GIL (the peers
# being compared are separate processes too). It prints its port, then echoes until EOF.
_ECHO_SERVER = r"""
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
"""


def fsync_append_ms(directory: str, n: int = 200, size: int = BLOCK) -> list[float]:
    """n appends of `size` bytes, each followed by fsync; returns each one's time in ms.

    Appends (not overwrites) because a log grows: each sync also has to persist the file's new
    size, which an overwrite in place does not (FACTS.md: overwrite + fdatasync is ~2x cheaper).
    """
    if n < 1 or size < 1:
        raise ValueError("n and size must be >= 1")
    block = os.urandom(size)
    fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=directory)
    out: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.write(fd, block)
            os.fsync(fd)
            out.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        os.close(fd)
        os.remove(path)
    return out


def loopback_rtt_ms(n: int = 2000, warmup: int = 100) -> list[float]:
    """n ping-pongs of a 64-byte message over loopback TCP to an echo process; ms each."""
    if n < 1 or warmup < 0:
        raise ValueError("n must be >= 1 and warmup >= 0")
    p = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"echo server did not start (said {line!r})")
        out: list[float] = []
        with socket.create_connection(("127.0.0.1", int(line)), timeout=5.0) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(warmup + n):
                t0 = time.perf_counter_ns()
                s.sendall(_MSG)
                got = 0
                while got < len(_MSG):  # bounded: the socket has a 5 s timeout
                    d = s.recv(65536)
                    if not d:
                        raise ConnectionError("echo server closed the connection")
                    got += len(d)
                if i >= warmup:
                    out.append((time.perf_counter_ns() - t0) / 1e6)
        return out
    finally:
        # Closing our end makes the echo loop see EOF and exit; bounded wait, then kill by PID.
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def measure(directory: str, fsyncs: int = 200, rtts: int = 2000) -> dict[str, float]:
    """Medians in ms: fsync (4 KiB append), rtt, and the issue's put-1 bar 2 x (fsync + rtt)."""
    f = statistics.median(fsync_append_ms(directory, fsyncs))
    r = statistics.median(loopback_rtt_ms(rtts))
    return {"fsync_ms": round(f, 4), "rtt_ms": round(r, 4), "target_ms": round(2 * (f + r), 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fsync and loopback RTT floors")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the probe file")
    ap.add_argument("--fsyncs", type=int, default=200)
    ap.add_argument("--rtts", type=int, default=2000)
    a = ap.parse_args(argv)
    if not os.path.isdir(a.dir):
        ap.error(f"not a directory: {a.dir}")
    if a.fsyncs < 1 or a.rtts < 1:
        ap.error("--fsyncs and --rtts must be >= 1")
    m = measure(a.dir, a.fsyncs, a.rtts)
    print(f"fsync'd 4 KiB append p50 {m['fsync_ms']:.3f} ms; loopback RTT p50 {m['rtt_ms']:.3f} ms; "
          f"2 x (fsync + RTT) = {m['target_ms']:.3f} ms")


if __name__ == "__main__":
    main()
