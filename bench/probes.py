"""The two floors under one replicated write on this machine, measured in the same run as the
systems: one fsync'd 4 KiB append on the disk that holds the data dirs, and one loopback TCP round
trip of a small message between two processes.

    python bench/probes.py [--dir DIR]      # prints the medians

A replicated put needs at least one durable append and one round trip to a follower (and the
follower's own durable append), hence the issue's bar for one client, one request at a time:
put p50 <= 2 x (fsync + RTT).

Two more figures are context, not part of the bar:

* the same append + fsync in three processes at once, as the three members of a local cluster
  do for every put when they share one disk;
* a bare replication pipeline: a client and three member processes of plain blocking Python
  sockets doing only what any replicated put must (client -> leader; leader -> both followers;
  each member appends + fsyncs; leader waits for its own sync and the first follower ack;
  leader -> client), with no protocol, encoding, state machine or event loop. Its p50 is what
  the machine itself charges for one replicated put from Python.
"""

from __future__ import annotations

import argparse
import json
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


def _read_port(p: subprocess.Popen, what: str) -> int:
    """The port a child prints as its first line once it listens."""
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"{what} did not start (said {line!r})")
    return int(line)


def _timed_round_trips(port: int, msg: bytes, reply_len: int, n: int, warmup: int,
                       timeout: float) -> list[float]:
    """Send `msg` and wait for `reply_len` bytes back, warmup + n times; the last n in ms."""
    out: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(warmup + n):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < reply_len:  # bounded: the socket has a timeout
                d = s.recv(65536)
                if not d:
                    raise ConnectionError("the probe's peer closed the connection")
                got += len(d)
            if i >= warmup:
                out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def _reap(p: subprocess.Popen, timeout: float) -> None:
    """Wait up to `timeout` s for a child to exit, then kill it by PID."""
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


# Each concurrent prober is its own process (the members are); it says "ready" once started,
# waits for the go line on stdin so that all of them sync at the same time, then prints its
# times as JSON.
_FSYNC_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import probes
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(probes.fsync_append_ms(sys.argv[2], int(sys.argv[3]))), flush=True)
"""


def concurrent_fsync_append_ms(directory: str, procs: int = 3, n: int = 200) -> list[float]:
    """`procs` processes each run fsync_append_ms(directory, n) at the same time; all times, ms."""
    if procs < 1 or n < 1:
        raise ValueError("procs and n must be >= 1")
    here = os.path.dirname(os.path.abspath(__file__))
    kids = [subprocess.Popen([sys.executable, "-c", _FSYNC_CHILD, here, directory, str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(procs)]
    out: list[float] = []
    try:
        for k in kids:
            assert k.stdout is not None
            if k.stdout.readline().strip() != "ready":
                raise RuntimeError("fsync prober did not start")
        for k in kids:
            assert k.stdin is not None
            k.stdin.write("go\n")
            k.stdin.flush()
        for k in kids:
            assert k.stdout is not None
            out.extend(json.loads(k.stdout.readline() or "[]"))
        if len(out) != procs * n:
            raise RuntimeError("an fsync prober failed")
        return out
    finally:
        for k in kids:
            if k.stdin is not None:
                k.stdin.close()  # a prober still waiting for "go" gets EOF and goes on
            _reap(k, 30)


# One member of the bare replication pipeline. Messages have a fixed size, acks are one byte.
# argv: role (leader|follower), directory, message size. Prints its port; a leader then reads
# its followers' ports from stdin. Runs until its upstream closes, then removes its file.
_PIPELINE_MEMBER = r"""
import os, select, socket, sys
role, directory, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = os.path.join(directory, "pipeline-probe-%d" % os.getpid())
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        try:
            d = c.recv(n - len(buf))
        except ConnectionResetError:  # the leader exits with the slower follower's acks unread
            return None
        if not d:
            return None
        buf += d
    return buf

def nodelay(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c

try:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    print(s.getsockname()[1], flush=True)
    if role == "follower":
        c = nodelay(s.accept()[0])
        while (m := recv_exact(c, size)) is not None:
            os.write(fd, m)
            os.fsync(fd)
            c.sendall(b"k")
    else:
        fs = [nodelay(socket.create_connection(("127.0.0.1", int(p)), timeout=10))
              for p in sys.stdin.readline().split()]
        acks = {f: 0 for f in fs}
        c = nodelay(s.accept()[0])
        sent = 0
        while (m := recv_exact(c, size)) is not None:
            for f in fs:
                f.sendall(m)
            sent += 1
            os.write(fd, m)
            os.fsync(fd)
            while max(acks.values()) < sent:  # a majority: our sync and one follower's ack
                ready = select.select(fs, [], [], 10)[0]
                if not ready:
                    sys.exit("no follower answered for 10 s")
                for f in ready:
                    d = f.recv(4096)
                    if not d:
                        sys.exit("a follower closed its connection")
                    acks[f] += len(d)
            c.sendall(b"k")
finally:
    os.close(fd)
    os.remove(path)
"""


def replication_pipeline_ms(directory: str, n: int = 500, size: int = 300,
                            warmup: int = 50) -> list[float]:
    """n puts, one at a time, through the bare pipeline (see the module docstring); ms each."""
    if n < 1 or size < 1 or warmup < 0:
        raise ValueError("n and size must be >= 1 and warmup >= 0")

    def member(role: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _PIPELINE_MEMBER, role, directory,
                                 str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)

    procs: list[subprocess.Popen] = []
    ok = False
    try:
        procs = [member("follower"), member("follower")]
        fports = [_read_port(p, "pipeline member") for p in procs]
        leader = member("leader")
        procs.append(leader)
        lport = _read_port(leader, "pipeline member")
        assert leader.stdin is not None
        leader.stdin.write(" ".join(map(str, fports)) + "\n")
        leader.stdin.flush()
        out = _timed_round_trips(lport, os.urandom(size), 1, n, warmup, 10.0)  # 1-byte acks
        ok = True
        return out
    finally:
        # Closing the client ends the leader, whose exit closes the followers' connections.
        # After a failure a member may wait for a peer that never comes: do not wait long.
        for p in reversed(procs):
            if p.stdin is not None:
                p.stdin.close()
            _reap(p, 10 if ok else 1)


def loopback_rtt_ms(n: int = 2000, warmup: int = 100) -> list[float]:
    """n ping-pongs of a 64-byte message over loopback TCP to an echo process; ms each."""
    if n < 1 or warmup < 0:
        raise ValueError("n must be >= 1 and warmup >= 0")
    p = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        return _timed_round_trips(_read_port(p, "echo server"), _MSG, len(_MSG), n, warmup, 5.0)
    finally:
        # Closing our end makes the echo loop see EOF and exit; bounded wait, then kill by PID.
        _reap(p, 5)


def measure(directory: str, fsyncs: int = 200, rtts: int = 2000,
            pipelines: int = 500) -> dict[str, float]:
    """Medians in ms: fsync (4 KiB append), rtt, the issue's put-1 bar 2 x (fsync + rtt), and
    as context: fsync3, the append + fsync while three processes do it at once, and pipeline,
    one put through the bare replication pipeline (``pipelines`` puts; 0 skips it)."""
    f = statistics.median(fsync_append_ms(directory, fsyncs))
    r = statistics.median(loopback_rtt_ms(rtts))
    f3 = statistics.median(concurrent_fsync_append_ms(directory, 3, fsyncs))
    m = {"fsync_ms": round(f, 4), "rtt_ms": round(r, 4), "target_ms": round(2 * (f + r), 4),
         "fsync3_ms": round(f3, 4)}
    if pipelines:
        m["pipeline_ms"] = round(statistics.median(replication_pipeline_ms(directory,
                                                                           pipelines)), 4)
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fsync and loopback RTT floors")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the probe file")
    ap.add_argument("--fsyncs", type=int, default=200)
    ap.add_argument("--rtts", type=int, default=2000)
    ap.add_argument("--pipelines", type=int, default=500,
                    help="puts through the bare replication pipeline (0: skip)")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.dir):
        ap.error(f"not a directory: {a.dir}")
    if a.fsyncs < 1 or a.rtts < 1 or a.pipelines < 0:
        ap.error("--fsyncs and --rtts must be >= 1, --pipelines >= 0")
    m = measure(a.dir, a.fsyncs, a.rtts, a.pipelines)
    print(f"fsync'd 4 KiB append p50 {m['fsync_ms']:.3f} ms; loopback RTT p50 {m['rtt_ms']:.3f} ms; "
          f"2 x (fsync + RTT) = {m['target_ms']:.3f} ms; the append + fsync in 3 processes at "
          f"once p50 {m['fsync3_ms']:.3f} ms")
    if "pipeline_ms" in m:
        print(f"one put through the bare replication pipeline (3 members, fsync each) p50 "
              f"{m['pipeline_ms']:.3f} ms")


if __name__ == "__main__":
    main()
