"""Run a few members on 127.0.0.1 as child processes: for `fastraft cluster`, the demo and tests.

Each member is ``python -m fastraft serve ...`` with its own data dir and a log file
(``<base>/<name>.log``, stderr of the child). Members are stopped by PID only, with a bounded wait
before SIGKILL. ``request()`` is a tiny blocking client for one request to one endpoint (the
library client retries and redirects; here the caller wants to see each member's own answer).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from fastraft.client.codec import decode_response, encode_request
from fastraft.config import parse_url
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, frame

__all__ = ["LocalCluster", "MemberProc", "request", "free_ports"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1, chosen below the kernel's ephemeral range.

    Ports from the ephemeral range (what binding port 0 gives) can be taken as the source port of
    any outgoing connection between our check and the member's bind; ports below it are only
    ever taken by an explicit bind. Each is checked bindable, then released: a race remains only
    with another process picking listening ports the same way.
    """
    lo, _ = _ephemeral_range()
    low_end = 10000 if lo > 12000 else 1024
    rng = random.Random()
    ports: list[int] = []
    for _ in range(200 * max(1, n)):  # bounded: almost every port down there is free
        if len(ports) == n:
            return ports
        port = rng.randrange(low_end, lo)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    raise RuntimeError(f"could not find {n} free ports in {low_end}-{lo - 1} on 127.0.0.1")


def request(endpoint: str, op: str, args: dict[str, Any] | None = None, *,
            timeout: float = 5.0, req_id: int = 1) -> tuple[tuple | None, dict[str, Any]]:
    """Send one request to one endpoint ("host:port"); return (error, result).

    error is None or (code, message, extra). Raises OSError / socket.timeout on network trouble.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(parse_url(endpoint), timeout=timeout) as s:
        s.sendall(frame(encode_request(req_id, op, args or {})))
        dec = FrameDecoder(MAX_PEER_FRAME)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from {endpoint} within {timeout}s")
            s.settimeout(left)
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"{endpoint} closed the connection")
            for body in dec.feed(data):
                rid, err, res = decode_response(body)
                if rid == req_id:
                    return err, res


@dataclass
class MemberProc:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)
    metrics_port: int | None = None  # --listen-metrics-urls, when the cluster has them

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class LocalCluster:
    """N members n1..nN on 127.0.0.1.

    Ports: with ``base_port`` B, member i (1-based) serves clients on B + 10*(i-1) and peers on
    B + 10*(i-1) + 1 (so 2379/2380, 2389/2390, 2399/2400), and with ``metrics`` /health,
    /readyz, /livez and /metrics on B + 10*(i-1) + 2 (2381, 2391, 2401); without it, free ports
    are picked.
    """

    def __init__(self, size: int, base_dir: str, *, base_port: int | None = None,
                 token: str = "fastraft-local", heartbeat_ms: int = 50,
                 election_ms: int = 500, extra_args: list[str] | None = None,
                 metrics: bool = False) -> None:
        if not 1 <= size <= 9:
            raise ValueError("size must be between 1 and 9")
        self.base_dir = base_dir
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = list(extra_args or [])
        os.makedirs(base_dir, exist_ok=True)
        if base_port is None:
            ports = free_ports(3 * size)
            trios = [(ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]) for i in range(size)]
        else:
            trios = [(base_port + 10 * i, base_port + 10 * i + 1, base_port + 10 * i + 2)
                     for i in range(size)]
        self.members = [
            MemberProc(f"n{i + 1}", c, p, os.path.join(base_dir, f"n{i + 1}.fastraft"),
                       os.path.join(base_dir, f"n{i + 1}.log"),
                       metrics_port=mp if metrics else None)
            for i, (c, p, mp) in enumerate(trios)]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def member(self, name: str) -> MemberProc:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def args(self, m: MemberProc) -> list[str]:
        return [sys.executable, "-m", "fastraft", "serve",
                "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", f"http://{m.endpoint}",
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                *(["--listen-metrics-urls", m.metrics_url] if m.metrics_url else []),
                *self.extra_args, *m.extra]

    def start(self, name: str | None = None) -> None:
        """Start one member (or all that are not running)."""
        for m in self.members:
            if (name is None or m.name == name) and not m.alive:
                # The installed package is used as is: never put src/ on the path (CI installs
                # non-editable and src/ there has no compiled _core).
                env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
                env.setdefault("PYTHONUNBUFFERED", "1")
                with open(m.log_path, "ab") as logf:
                    m.proc = subprocess.Popen(self.args(m), stdin=subprocess.DEVNULL,
                                              stdout=logf, stderr=logf, env=env)

    def kill(self, name: str) -> None:
        """SIGKILL one member by PID and reap it."""
        m = self.member(name)
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(timeout=10)

    def stop(self, name: str | None = None, timeout: float = 10.0) -> None:
        """SIGTERM (graceful) by PID, wait up to `timeout`, then SIGKILL."""
        targets = [m for m in self.members if (name is None or m.name == name) and m.alive]
        for m in targets:
            assert m.proc is not None
            os.kill(m.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for m in targets:
            assert m.proc is not None
            try:
                m.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait(timeout=10)

    def status(self, name: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The member's own status result, or None if it does not answer."""
        try:
            err, res = request(self.member(name).endpoint, "status", timeout=timeout)
        except (OSError, ValueError):
            return None
        return None if err else res

    def wait_ready(self, name: str, timeout: float = 15.0) -> None:
        """Poll until the member answers status (bounded)."""
        deadline = time.monotonic() + timeout
        m = self.member(name)
        while time.monotonic() < deadline:
            if not m.alive:
                raise RuntimeError(f"{name} exited with {m.proc.returncode if m.proc else None}:"
                                   f"\n{m.log_text()[-2000:]}")
            if self.status(name, timeout=0.5) is not None:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not answer within {timeout}s")

    def wait_leader(self, timeout: float = 15.0, among: list[str] | None = None) -> str:
        """Poll until the running members agree on a leader; return its name (bounded)."""
        names = among or [m.name for m in self.members if m.alive]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            for n in names:
                st = self.status(n, timeout=0.5)
                leaders.add(st["leader"] if st else None)
            if len(leaders) == 1:
                lid = leaders.pop()
                if lid:
                    for n in names:
                        st = self.status(n, timeout=0.5)
                        if st and st["member_id"] == lid:
                            return n
            time.sleep(0.05)
        raise TimeoutError(f"no leader among {names} within {timeout}s")

    def close(self) -> None:
        """Stop every member still running (by PID)."""
        self.stop(timeout=5.0)
