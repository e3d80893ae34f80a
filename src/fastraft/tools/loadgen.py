"""`fastraft bench`: a load generator for the client protocol, and the no-op endpoint it measures
its own ceiling against.

Shape of a run::

    parent (coordinator, progress line, merge, report)
      └─ worker × --procs   (one event loop each; --conns connections; requests pipelined)

* **Closed loop** (``--clients N``): N requests in flight in total, spread over the connections
  (pipelined); each answer immediately releases the next request on the same connection.
* **Open loop** (``--rate R``): request *i* is due at ``start + i/R``. Latency is measured from
  that *intended* send time, not from when the request actually went out, so a request that had
  to wait (the connection's in-flight window was full, or the loop was late) is charged for the
  wait. Measuring from the actual send time would hide exactly the queueing that an overloaded
  server causes ("coordinated omission").

Requests are framed by hand (client/codec.py's layout, :class:`_RequestMaker`) instead of going through
``AsyncClient``: building ``[req_id, op, args]`` from pre-packed pieces and reading only the
request id and the error slot of each answer keeps the generator's cost per request low.
``--noop-ceiling`` proves it: the same workload against an endpoint that does no work.

Latencies go into HdrHistograms (microseconds, 3 significant digits); worker histograms are
merged by encoding, decoding and adding them, so percentiles of a multi-process run are exact
(to the histogram's precision), not averages of percentiles.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import multiprocessing as mp
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar, cast

import click
import msgpack
from hdrh.histogram import HdrHistogram

from fastraft.client.codec import (
    DEFAULT_MAX_CLIENT_FRAME,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from fastraft.config import parse_url
from fastraft.net.framing import FrameDecoder, frame
from fastraft.tools.procs import stop_processes

__all__ = [
    "WORKLOADS",
    "Spec",
    "Zipfian",
    "KeyChooser",
    "NoopServer",
    "NoopServerThread",
    "start_noop_subprocess",
    "run",
    "run_sweep",
    "summarize",
    "new_histogram",
    "merge_encoded",
    "format_report",
    "plot_sweep",
    "bench_command",
    "main",
]

# Histogram range: 1 µs .. 10 min, 3 significant digits (HdrHistogram's usual choice).
HIST_MIN_US = 1
HIST_MAX_US = 600_000_000
HIST_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SCHEMA_VERSION = 1

# workload -> fraction of reads (the rest are puts). YCSB A/B/C as in the YCSB core workloads.
WORKLOADS: dict[str, float] = {
    "put": 0.0,
    "get": 1.0,
    "ycsb-a": 0.5,   # update heavy: 50/50
    "ycsb-b": 0.95,  # read mostly: 95/5
    "ycsb-c": 1.0,   # read only
}
CONSISTENCY = ("linearizable", "lease", "serializable", "bounded")
DISTRIBUTIONS = ("uniform", "zipfian")

T = TypeVar("T")

_READ = 0
_UPDATE = 1
_OP_NAMES = ("read", "update")


# ------------------------------------------------------------------------------------ spec


@dataclass
class Spec:
    """One workload shape. Validated by :meth:`check` before anything starts."""

    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    workload: str = "put"
    consistency: str = "linearizable"
    max_staleness: float = 0.0   # seconds; bounded reads only
    keys: int = 1000
    distribution: str = "uniform"
    zipf_theta: float = 0.99
    value_size: int = 256
    key_size: int = 16
    clients: int = 16            # closed loop: requests in flight in total
    rate: float = 0.0            # open loop when > 0: requests per second in total
    conns: int = 4               # connections in total (split over procs)
    max_inflight: int = 1024     # open loop: per connection; more due requests wait (and count)
    procs: int = 1
    warmup: float = 1.0          # seconds, not measured
    duration: float = 5.0        # seconds measured (also the cap when ops is set)
    ops: int = 0                 # measured operations in total; 0 = run for `duration`
    timeout: float = 10.0        # seconds an answer may take after the run before it is a timeout
    preload: bool | None = None  # write every key once before the run (default: if reads)
    seed: int = 1

    @property
    def mode(self) -> str:
        return "open" if self.rate > 0 else "closed"

    @property
    def read_fraction(self) -> float:
        return WORKLOADS[self.workload]

    def check(self) -> None:
        """Raise ValueError with a one-line reason for any bad field."""
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
        if self.consistency not in CONSISTENCY:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY)}")
        if (self.consistency == "bounded") != (self.max_staleness > 0):
            raise ValueError("max staleness (> 0) goes with bounded reads, and only with them")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        for ep in self.endpoints:
            _split_endpoint(ep)
        checks = [
            (self.keys >= 1, "keys must be >= 1"),
            (0 < self.zipf_theta < 1, "zipf-theta must be in (0, 1)"),
            (0 <= self.value_size <= 1 << 20, "value-size must be in [0, 1 MiB]"),
            (8 <= self.key_size <= 1024, "key-size must be in [8, 1024]"),
            (self.keys <= 10 ** (self.key_size - 4), "key-size too small for that many keys"),
            (self.clients >= 1, "clients must be >= 1"),
            (self.rate >= 0 and math.isfinite(self.rate), "rate must be >= 0"),
            (self.conns >= 1, "conns must be >= 1"),
            (self.max_inflight >= 1, "max-inflight must be >= 1"),
            (1 <= self.procs <= 64, "procs must be in [1, 64]"),
            (self.procs <= self.conns, "procs must be <= conns (each process needs a connection)"),
            (0 <= self.warmup <= 3600, "warmup must be in [0, 3600] s"),
            (0 < self.duration <= 24 * 3600, "duration must be in (0, 86400] s"),
            (self.ops >= 0, "ops must be >= 0"),
            (0 < self.timeout <= 3600, "timeout must be in (0, 3600] s"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)
        if self.mode == "closed" and self.clients < self.conns:
            raise ValueError("clients must be >= conns in closed loop (one in flight per connection "
                             "at least)")

    def share(self, idx: int) -> Spec:
        """The part of the load that worker ``idx`` of ``procs`` generates."""
        def part(total: int) -> int:
            return total // self.procs + (1 if idx < total % self.procs else 0)
        return replace(self, conns=part(self.conns), clients=part(self.clients),
                       rate=self.rate / self.procs, ops=part(self.ops) if self.ops else 0,
                       seed=self.seed * 1000 + idx)


def _split_endpoint(ep: str) -> tuple[str, int]:
    try:
        return parse_url(ep)
    except ValueError as e:
        raise ValueError(f"bad endpoint {ep!r}: {e}") from None


# ------------------------------------------------------------------------------- key choice


class Zipfian:
    """Zipf-distributed ranks in [0, n): rank 0 is the most popular (P(r) ∝ 1/(r+1)^theta).

    Uses the constant-time method of Gray et al., "Quickly generating billion-record synthetic
    databases" (SIGMOD '94), the one YCSB uses; zeta(n) is summed once at construction.
    """

    def __init__(self, n: int, theta: float, rng: random.Random) -> None:
        if n < 1 or not 0 < theta < 1:
            raise ValueError("need n >= 1 and 0 < theta < 1")
        self.n = n
        self.theta = theta
        self.rng = rng
        self.zetan = math.fsum(1.0 / (i ** theta) for i in range(1, n + 1))
        zeta2 = 1.0 + 0.5 ** theta
        self.alpha = 1.0 / (1.0 - theta)
        self.eta = ((1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta2 / self.zetan)
                    if n > 2 else 0.0)
        self._half_pow = 0.5 ** theta

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0 or self.n == 1:
            return 0
        if uz < 1.0 + self._half_pow or self.n == 2:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1.0) ** self.alpha))


class KeyChooser:
    """Picks key indexes by the spec's distribution; keys are fixed-width ASCII so every key has
    the same size on the wire (``key-size`` bytes)."""

    def __init__(self, spec: Spec, rng: random.Random) -> None:
        self.n = spec.keys
        self.rng = rng
        self.key_size = spec.key_size
        self._zipf = (Zipfian(spec.keys, spec.zipf_theta, rng)
                      if spec.distribution == "zipfian" else None)

    def next_index(self) -> int:
        if self._zipf is not None:
            return self._zipf.next()
        return self.rng.randrange(self.n)

    def key(self, i: int) -> bytes:
        return b"key-" + str(i).zfill(self.key_size - 4).encode()


# ---------------------------------------------------------------------------- wire helpers

# [req_id, op, args] with the id always as msgpack uint32 (0xce): the body prefix then has a
# fixed size and can be written with one struct call; msgpack readers accept the wide form.
_HDR = struct.Struct(">IBBI")
_REQ_ID_MASK = 0xFFFFFFFF


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class _RequestMaker:
    """Builds request frames from pre-packed pieces: only the id and the key change per request."""

    def __init__(self, spec: Spec, rng: random.Random) -> None:
        value = rng.randbytes(spec.value_size)
        # Map order matches what encode_request would produce for these dicts.
        self._put_head = _packb("put") + b"\x82" + _packb("key")
        self._put_tail = _packb("value") + _packb(value)
        level = spec.consistency
        if level == "bounded":
            self._get_head = _packb("range") + b"\x83" + _packb("key")
            self._get_tail = (_packb("consistency") + _packb(level) + _packb("max_staleness_ms")
                              + _packb(spec.max_staleness * 1000.0))
        else:
            self._get_head = _packb("range") + b"\x82" + _packb("key")
            if level == "lease":
                self._get_tail = _packb("consistency") + _packb(level)
            else:
                self._get_tail = _packb("serializable") + _packb(level == "serializable")

    def build(self, req_id: int, kind: int, key: bytes) -> bytes:
        if kind == _READ:
            tail = self._get_head + _packb(key) + self._get_tail
        else:
            tail = self._put_head + _packb(key) + self._put_tail
        return _HDR.pack(len(tail) + 6, 0x93, 0xCE, req_id) + tail


def _response_head(body: bytes) -> tuple[int, bool]:
    """(req_id, ok) read from the first bytes of a response body without unpacking the rest."""
    if len(body) >= 2 and body[0] == 0x93:
        b = body[1]
        if b < 0x80:
            return b, body[2] == 0xC0
        if b == 0xCC:
            return body[2], body[3] == 0xC0
        if b == 0xCD:
            return int.from_bytes(body[2:4], "big"), body[4] == 0xC0
        if b == 0xCE:
            return int.from_bytes(body[2:6], "big"), body[6] == 0xC0
        if b == 0xCF:
            return int.from_bytes(body[2:10], "big"), body[10] == 0xC0
    rid, err, _ = decode_response(body)  # unusual encoding: take the slow, validating path
    return rid, err is None


def _error_code(body: bytes) -> str:
    try:
        _, err, _ = decode_response(body)
    except ValueError:
        return "MALFORMED_RESPONSE"
    return err[0] if err else "OK"


# ------------------------------------------------------------------------------ histograms


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


def merge_encoded(encoded: list[str]) -> HdrHistogram:
    """Add histograms that were encoded (base64 text) by workers into one."""
    h = new_histogram()
    for e in encoded:
        if e:
            h.add(HdrHistogram.decode(e.encode()))
    return h


def _encode(h: HdrHistogram) -> str:
    return h.encode().decode() if h.get_total_count() else ""


def latency_summary(h: HdrHistogram) -> dict[str, float]:
    """Percentiles in milliseconds (from the µs histogram)."""
    if h.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0, "min": 0.0,
                "mean": 0.0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000.0
    out["min"] = h.get_min_value() / 1000.0
    out["mean"] = round(h.get_mean_value() / 1000.0, 4)
    return out


# --------------------------------------------------------------------------- worker (async)


class _Counter:
    """Stands in for a multiprocessing.Value when the worker runs in the parent process."""

    def __init__(self) -> None:
        self.value = 0


class _Conn(asyncio.Protocol):
    """One pipelined connection of a worker."""

    def __init__(self, w: _Worker) -> None:
        self.w = w
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(DEFAULT_MAX_CLIENT_FRAME + (1 << 20))
        self.inflight: dict[int, tuple[int, int]] = {}  # req_id -> (intended ns, kind)
        self.depth = 1            # closed loop: how many this connection keeps in flight
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        self.w.on_conn_lost(self)

    def data_received(self, data: bytes) -> None:
        w = self.w
        try:
            bodies = self.decoder.feed(data)
        except ValueError:  # framing lost: nothing more can be matched on this connection
            if self.transport is not None:
                self.transport.abort()
            return
        now = time.monotonic_ns()
        out: list[bytes] = []
        for body in bodies:
            rid, ok = _response_head(body)
            sent = self.inflight.pop(rid, None)
            if sent is None:
                w.count_error("UNMATCHED_RESPONSE")
                continue
            w.on_done(sent[0], sent[1], now, ok, body)
            w.refill(self, now, out)
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if w.open_active:
            # The loop is awake anyway: send what has come due since the last tick, so
            # requests wait less than a timer tick when answers arrive in between.
            w.pump(now)


class _Worker:
    """Generates one share of the load in the current event loop."""

    def __init__(self, spec: Spec, target: tuple[str, int], counter: Any) -> None:
        self.spec = spec
        self.target = target
        self.counter = counter
        self.rng = random.Random(spec.seed)
        self.keys = KeyChooser(spec, self.rng)
        self.maker = _RequestMaker(spec, self.rng)
        self.read_fraction = spec.read_fraction
        self.conns: list[_Conn] = []
        self.next_id = 1
        self.hists = [new_histogram(), new_histogram()]
        self.errors: dict[str, int] = {}
        self.started_measured = 0
        self.done_measured = 0
        self.done_total = 0
        self.warmup_ops = 0
        self.first_done_ns = 0
        self.last_done_ns = 0
        self.backlog: deque[tuple[int, int]] = deque()  # open loop: (intended ns, kind) not sent
        self.max_backlog = 0
        self.measure_start = 0
        self.end = 0
        self.stopping = False
        self.idle = asyncio.Event()
        # Open loop: request number o_next is due at o_start + o_next * o_interval (ns).
        self.open_active = False
        self.o_start = 0
        self.o_next = 0
        self.o_interval = 1e9 / spec.rate if spec.rate > 0 else 0.0
        self.o_warm_n = int(spec.warmup * spec.rate)
        self.o_rr = 0
        # How late the generator got to each request after its intended time (tick lateness;
        # it is part of the measured latency, reported so a reader can tell it apart). Waiting
        # in the backlog for an in-flight slot comes on top and is not counted here.
        self.lag_hist = new_histogram()

    # ------------------------------------------------------------------ request building
    def _pick(self) -> int:
        return _READ if self.rng.random() < self.read_fraction else _UPDATE

    def _send(self, conn: _Conn, intended: int, kind: int, out: list[bytes]) -> None:
        rid = self.next_id
        self.next_id = (rid + 1) & _REQ_ID_MASK or 1
        conn.inflight[rid] = (intended, kind)
        out.append(self.maker.build(rid, kind, self.keys.key(self.keys.next_index())))
        if intended >= self.measure_start:
            self.started_measured += 1

    def _may_start(self, now: int) -> bool:
        if self.stopping or now >= self.end:
            return False
        return not (self.spec.ops and self.started_measured >= self.spec.ops)

    # ----------------------------------------------------------------------- callbacks
    def on_done(self, intended: int, kind: int, now: int, ok: bool, body: bytes) -> None:
        self.done_total += 1
        self.counter.value = self.done_total
        if not ok:
            self.count_error(_error_code(body))
        elif intended >= self.measure_start:
            lat_us = (now - intended) // 1000
            self.hists[kind].record_value(min(max(lat_us, HIST_MIN_US), HIST_MAX_US))
            self.done_measured += 1
            if not self.first_done_ns:
                self.first_done_ns = now
            self.last_done_ns = now
        else:
            self.warmup_ops += 1
        if self.stopping and not self._outstanding():
            self.idle.set()

    def refill(self, conn: _Conn, now: int, out: list[bytes]) -> None:
        """Called after an answer on ``conn``: keep the pipeline full."""
        if self.spec.mode == "closed":
            if len(conn.inflight) < conn.depth and self._may_start(now):
                self._send(conn, now, self._pick(), out)
        else:
            while self.backlog and len(conn.inflight) < self.spec.max_inflight:
                intended, kind = self.backlog.popleft()
                self._send(conn, intended, kind, out)

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def on_conn_lost(self, conn: _Conn) -> None:
        if conn.inflight:
            self.errors["CONNECTION_LOST"] = (self.errors.get("CONNECTION_LOST", 0)
                                              + len(conn.inflight))
            conn.inflight.clear()
        if all(c.lost for c in self.conns):
            self.stopping = True
            self.backlog.clear()
            self.idle.set()

    def _outstanding(self) -> int:
        return len(self.backlog) + sum(len(c.inflight) for c in self.conns)

    # -------------------------------------------------------------------------- running
    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.target
        for _ in range(self.spec.conns):
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self), host, port), timeout=5.0)
            self.conns.append(proto)

    async def run(self, start_ns: int) -> dict[str, Any]:
        spec = self.spec
        self.measure_start = start_ns + int(spec.warmup * 1e9)
        self.end = self.measure_start + int(spec.duration * 1e9)
        # A loop timer may fire up to a millisecond early (libuv's granularity): sleep again
        # until start_ns, else the first requests go out before it and count as warmup.
        while (delay := (start_ns - time.monotonic_ns()) / 1e9) > 0:
            await asyncio.sleep(delay)
        if spec.mode == "closed":
            await self._closed()
        else:
            await self._open(start_ns)
        # Drain: bounded by the per-request timeout after the end.
        self.stopping = True
        if self._outstanding():
            self.idle.clear()
            left = max(0.0, (self.end - time.monotonic_ns()) / 1e9) + spec.timeout
            try:
                await asyncio.wait_for(self.idle.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass
        timeouts = self._outstanding()
        for c in self.conns:
            c.inflight.clear()
            if c.transport is not None:
                c.transport.close()
        self.backlog.clear()
        return {
            "hist_read": _encode(self.hists[_READ]),
            "hist_update": _encode(self.hists[_UPDATE]),
            "ops": self.done_measured,
            "warmup_ops": self.warmup_ops,
            "errors": self.errors,
            "timeouts": timeouts,
            "first_done_ns": self.first_done_ns,
            "last_done_ns": self.last_done_ns,
            "measure_start_ns": self.measure_start,
            "end_ns": self.end,
            "max_backlog": self.max_backlog,
            "hist_lag": _encode(self.lag_hist),
        }

    async def _closed(self) -> None:
        n = len(self.conns)
        for i, c in enumerate(self.conns):
            c.depth = self.spec.clients // n + (1 if i < self.spec.clients % n else 0)
        now = time.monotonic_ns()
        for c in self.conns:
            out: list[bytes] = []
            for _ in range(c.depth):
                if self._may_start(now):
                    self._send(c, now, self._pick(), out)
            if out and c.transport is not None:
                c.transport.write(b"".join(out))
        # Answers drive the loop; here we only wait for the end (or the op count).
        while not self.stopping:
            now = time.monotonic_ns()
            if not self._may_start(now) or not self._outstanding():
                break
            await asyncio.sleep(min(0.05, max(0.0, (self.end - now) / 1e9)))

    def _open_finished(self, i: int) -> bool:
        limit = self.spec.ops  # measured ops; warm-up ops come on top
        return (self.o_start + int(i * self.o_interval) >= self.end
                or bool(limit and i - self.o_warm_n >= limit))

    def pump(self, now: int) -> None:
        """Open loop: send every request whose intended time is <= ``now``, one write per
        connection. Round-robin over connections with room; the rest waits in the backlog with
        its intended time, so the wait is charged to its latency."""
        if self.stopping or not self.open_active:
            return
        spec = self.spec
        conns = self.conns
        n = len(conns)
        cap = spec.max_inflight
        outs: dict[int, list[bytes]] = {}
        i = self.o_next
        while True:
            due = self.o_start + int(i * self.o_interval)
            if due > now or self._open_finished(i):
                break
            i += 1
            if due >= self.measure_start:
                self.lag_hist.record_value(min(max((now - due) // 1000, HIST_MIN_US),
                                               HIST_MAX_US))
            kind = self._pick()
            placed = False
            if not self.backlog:
                for _ in range(n):
                    c = conns[self.o_rr]
                    self.o_rr = (self.o_rr + 1) % n
                    if not c.lost and len(c.inflight) < cap:
                        self._send(c, due, kind, outs.setdefault(id(c), []))
                        placed = True
                        break
            if not placed:
                self.backlog.append((due, kind))
        self.o_next = i
        if len(self.backlog) > self.max_backlog:
            self.max_backlog = len(self.backlog)
        if outs:
            for c in conns:
                out = outs.get(id(c))
                if out and c.transport is not None:
                    c.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _open(self, start_ns: int) -> None:
        """One wake-up per tick, never a timer per request: each wake-up sends all that is due.

        Ticks come from a Linux timerfd (:class:`_WakeTimer`, precise to tens of µs) armed for
        the next intended time but at least ``OPEN_MIN_TICK_NS`` after the last tick, so the
        wake-ups per second are bounded whatever the rate. Without a timerfd, event-loop sleeps
        of whole milliseconds (their resolution: uvloop turns a delay under 0.5 ms into 0, and
        sleeping "until the next request" at thousands per second became a busy loop that took
        a core). Requests due between ticks also go out when answers wake the loop
        (:meth:`pump` from ``data_received``). Latency always counts from the intended time.
        """
        self.o_start = start_ns
        self.o_next = 0
        self.open_active = True
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def tick() -> None:
            now = time.monotonic_ns()
            self.pump(now)
            if self.stopping or self._open_finished(self.o_next):
                if not finished.done():
                    finished.set_result(None)
                return
            assert timer is not None
            timer.arm(max(self.o_start + int(self.o_next * self.o_interval),
                          now + OPEN_MIN_TICK_NS))

        timer = _WakeTimer.create(loop, tick)
        try:
            if timer is not None:
                tick()
                while not finished.done():
                    # bounded wait; also notices a stop (all connections lost) between ticks
                    await asyncio.wait([finished], timeout=0.1)
                    if self.stopping and not finished.done():
                        finished.set_result(None)
                return
            while not self.stopping:
                self.pump(time.monotonic_ns())
                if self._open_finished(self.o_next):
                    return
                nxt = self.o_start + int(self.o_next * self.o_interval)
                wait_ms = math.ceil((nxt - time.monotonic_ns()) / 1e6)
                await asyncio.sleep(max(1, wait_ms) / 1000)
        finally:
            self.open_active = False
            if timer is not None:
                timer.close()


# Open loop: at most one generator wake-up per this many ns (5,000/s); requests due closer
# together go out in the same tick.
OPEN_MIN_TICK_NS = 200_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _WakeTimer:
    """A one-shot wake-up at an absolute CLOCK_MONOTONIC time (the clock of
    ``time.monotonic_ns``): a Linux timerfd watched by the event loop. Event-loop timers only
    have millisecond resolution; this is precise to tens of µs and costs one wake-up."""

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, libc: Any,
                 callback: Any) -> None:
        self._loop = loop
        self._fd = fd
        self._libc = libc
        self._callback = callback
        self._spec = _Itimerspec()
        loop.add_reader(fd, self._fired)

    @classmethod
    def create(cls, loop: asyncio.AbstractEventLoop, callback: Any) -> _WakeTimer | None:
        """None where there is no timerfd (not Linux) or the loop cannot watch it."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(cls._CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        try:
            return cls(loop, fd, libc, callback)
        except (OSError, NotImplementedError, RuntimeError):
            os.close(fd)
            return None

    def arm(self, at_ns: int) -> None:
        at_ns = max(at_ns, 1)  # 0 would disarm
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(at_ns, 1_000_000_000)
        if self._libc.timerfd_settime(self._fd, self._TFD_TIMER_ABSTIME,
                                      ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count; reading re-arms the readiness
        except BlockingIOError:  # spurious wake-up
            return
        self._callback()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


async def _find_target(endpoints: list[str], timeout: float = 10.0) -> tuple[str, int]:
    """The leader among ``endpoints`` (by the members' own status), polled for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "no endpoint answered"
    while time.monotonic() < deadline:
        for ep in endpoints:
            host, port = _split_endpoint(ep)
            try:
                st = await asyncio.wait_for(_status(host, port), timeout=1.0)
            except (OSError, asyncio.TimeoutError, ValueError) as e:
                last = f"{ep}: {type(e).__name__}: {e}"
                continue
            if st.get("leader") and st.get("leader") == st.get("member_id"):
                return host, port
            last = f"{ep}: not the leader (leader {st.get('leader')!r})"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no leader found among {', '.join(endpoints)}: {last}")


async def _status(host: str, port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(frame(encode_request(1, "status", {})))
        dec = FrameDecoder(DEFAULT_MAX_CLIENT_FRAME)
        for _ in range(1000):  # bounded: a status answer is one small frame
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed before answering status")
            for body in dec.feed(data):
                _, err, res = decode_response(body)
                if err:
                    raise ValueError(f"status failed: {err[0]}: {err[1]}")
                return res
        raise ValueError("no status answer")
    finally:
        writer.close()


async def _preload(spec: Spec, target: tuple[str, int]) -> None:
    """Write every key once (pipelined, one connection) so that reads find values."""
    reader, writer = await asyncio.open_connection(*target)
    try:
        maker = _RequestMaker(spec, random.Random(spec.seed))
        keys = KeyChooser(spec, random.Random(spec.seed))
        dec = FrameDecoder(DEFAULT_MAX_CLIENT_FRAME)
        window = 256
        sent = done = 0
        deadline = time.monotonic() + max(30.0, spec.keys / 500)
        while done < spec.keys:
            if time.monotonic() > deadline:
                raise RuntimeError(f"preload of {spec.keys} keys did not finish in time")
            chunk = []
            while sent < spec.keys and sent - done < window:
                chunk.append(maker.build(sent + 1, _UPDATE, keys.key(sent)))
                sent += 1
            if chunk:
                writer.write(b"".join(chunk))
            data = await asyncio.wait_for(reader.read(1 << 20), timeout=spec.timeout)
            if not data:
                raise RuntimeError("the endpoint closed the connection during preload")
            for body in dec.feed(data):
                _, ok = _response_head(body)
                if not ok:
                    raise RuntimeError(f"preload put failed: {_error_code(body)}")
                done += 1
    finally:
        writer.close()


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop loop, without installing uvloop's policy for the process:
    a library call must not change which loop every later ``asyncio.run`` of its caller gets."""
    try:
        import uvloop
    except ImportError:  # the project depends on it; a plain loop still works, only slower
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _worker_proc(spec_d: dict[str, Any], target: tuple[str, int], counter: Any, ready: Any,
                 go: Any, start_ns: Any, results: Any) -> None:
    """Entry point of a worker process (spawned): connect, report ready, wait for go, run."""
    spec = Spec(**spec_d)

    async def body() -> dict[str, Any]:
        w = _Worker(spec, target, counter)
        await w.connect()
        ready.release()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, go.wait, 30.0)
        if not ok:
            raise RuntimeError("no go signal from the coordinator within 30 s")
        return await w.run(start_ns.value)

    try:
        results.put(("ok", _run_loop(body())))
    except BaseException as e:  # reported to the parent, which fails the run with it
        results.put(("error", f"{type(e).__name__}: {e}"))
        ready.release()


# --------------------------------------------------------------------------- coordinator


class _Progress:
    """The live line on stderr: elapsed, operations answered, current rate."""

    def __init__(self, label: str, total_s: float, enabled: bool) -> None:
        self.label = label
        self.total_s = total_s
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = (self.t0, 0)

    def show(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        dt = now - self.last[0]
        rate = (done - self.last[1]) / dt if dt > 0 else 0.0
        self.last = (now, done)
        sys.stderr.write(f"\r{self.label}  {now - self.t0:5.1f}/{self.total_s:.0f}s  "
                         f"answered {done:>10,}  {rate:>11,.0f} ops/s   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(spec: Spec, *, progress: bool = False, label: str = "") -> dict[str, Any]:
    """Run one workload and return the merged result (see :func:`summarize`)."""
    spec.check()
    target = _run_loop(_find_target(spec.endpoints))
    reads = spec.read_fraction > 0
    if spec.preload or (spec.preload is None and reads):
        _run_loop(_preload(spec, target))
    total_s = spec.warmup + spec.duration
    prog = _Progress(label or f"[{spec.workload} {spec.mode}]", total_s, progress)
    parts: list[dict[str, Any]]
    if spec.procs == 1:
        parts = [_run_inprocess(spec, target, prog)]
    else:
        parts = _run_procs(spec, target, prog)
    prog.close()
    return summarize(spec, parts, target)


def _run_inprocess(spec: Spec, target: tuple[str, int], prog: _Progress) -> dict[str, Any]:
    counter = _Counter()

    async def body() -> dict[str, Any]:
        w = _Worker(spec.share(0), target, counter)
        await w.connect()

        async def ticker() -> None:
            while True:
                await asyncio.sleep(0.5)
                prog.show(counter.value)

        t = asyncio.create_task(ticker()) if prog.enabled else None
        try:
            return await w.run(time.monotonic_ns() + 10_000_000)
        finally:
            if t is not None:
                t.cancel()

    return _run_loop(body())


def _run_procs(spec: Spec, target: tuple[str, int], prog: _Progress) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")  # fork would copy the parent's loop state; spawn is clean
    counters = [ctx.Value("q", 0, lock=False) for _ in range(spec.procs)]
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    start_ns = ctx.Value("q", 0, lock=False)
    results = ctx.Queue()
    procs = []
    for i in range(spec.procs):
        p = ctx.Process(target=_worker_proc, daemon=True,
                        args=(asdict(spec.share(i)), target, counters[i], ready, go, start_ns,
                              results))
        p.start()
        procs.append(p)
    try:
        deadline = time.monotonic() + 60.0
        for _ in procs:
            if not ready.acquire(timeout=max(0.1, deadline - time.monotonic())):
                raise RuntimeError("worker processes did not start within 60 s")
        start_ns.value = time.monotonic_ns() + 20_000_000  # CLOCK_MONOTONIC is system-wide
        go.set()
        parts: list[dict[str, Any]] = []
        hard_end = time.monotonic() + spec.warmup + spec.duration + spec.timeout + 30.0
        while len(parts) < len(procs):
            left = hard_end - time.monotonic()
            if left <= 0:
                raise RuntimeError("worker processes did not report in time")
            try:
                status, payload = results.get(timeout=min(0.5, left))
            except Exception:  # queue.Empty: time for a progress line
                prog.show(sum(c.value for c in counters))
                continue
            if status != "ok":
                raise RuntimeError(f"a worker failed: {payload}")
            parts.append(payload)
        return parts
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
                p.join(timeout=5.0)


def summarize(spec: Spec, parts: list[dict[str, Any]], target: tuple[str, int]) -> dict[str, Any]:
    """Merge worker results into the report dict (the JSON schema; see docs in the module)."""
    hr = merge_encoded([p["hist_read"] for p in parts])
    hu = merge_encoded([p["hist_update"] for p in parts])
    total = new_histogram()
    for h in (hr, hu):
        if h.get_total_count():  # adding an empty histogram would drag the minimum to 0
            total.add(h)
    ops = sum(p["ops"] for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    start = parts[0]["measure_start_ns"] if parts else 0
    last = max((p["last_done_ns"] for p in parts), default=0)
    # Closed loop runs to the end and a bit over (answers in flight); an op-count run may end
    # earlier. Either way the window is from the measured start to the last measured answer.
    window = (last - start) / 1e9 if last > start else 0.0
    hists = {"read": hr, "update": hu}
    return {
        "schema": SCHEMA_VERSION,
        "tool": "fastraft-loadgen",
        "target": f"{target[0]}:{target[1]}",
        "spec": asdict(spec),
        "mode": spec.mode,
        "offered_rate": spec.rate if spec.mode == "open" else None,
        "ops": ops,
        "warmup_ops": sum(p["warmup_ops"] for p in parts),
        "errors": errors,
        "timeouts": sum(p["timeouts"] for p in parts),
        "duration_s": round(window, 6),
        "throughput": round(ops / window, 2) if window > 0 else 0.0,
        "max_backlog": max((p.get("max_backlog", 0) for p in parts), default=0),
        # open loop: how late the generator got to requests after their intended time
        "send_lag_ms": latency_summary(merge_encoded([p.get("hist_lag", "") for p in parts])),
        "latency_ms": latency_summary(total),
        "by_op": {name: {"ops": h.get_total_count(), "latency_ms": latency_summary(h)}
                  for name, h in hists.items() if h.get_total_count()},
        "histogram": _encode(total),
    }


def run_sweep(spec: Spec, rates: list[float], *, progress: bool = False) -> list[dict[str, Any]]:
    """Open loop at each rate in turn (each a full run with warm-up)."""
    out = []
    for r in rates:
        out.append(run(replace(spec, rate=r), progress=progress, label=f"[rate {r:,.0f}/s]"))
    return out


# ---------------------------------------------------------------------- no-op endpoint


class _NoopConn(asyncio.Protocol):
    """Answers put/range/status at once; with ``delay`` > 0 serves one request at a time per
    connection, each taking ``delay`` seconds (a slow, serial endpoint for queueing tests)."""

    def __init__(self, srv: NoopServer) -> None:
        self.srv = srv
        self.transport: asyncio.Transport | None = None
        self.dec = FrameDecoder(DEFAULT_MAX_CLIENT_FRAME)
        self.queue: deque[bytes] = deque()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.dec.feed(data)
        except ValueError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.srv.delay <= 0:
            out = [frame(self.srv.answer(b)) for b in bodies]
            if out and self.transport is not None:
                self.transport.write(b"".join(out))  # one write per read, as net/listener.py does
            return
        self.queue.extend(bodies)
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        body = self.queue.popleft()
        asyncio.get_running_loop().call_later(self.srv.delay, self._finish, body)

    def _finish(self, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame(self.srv.answer(body)))
        self._next()


class NoopServer:
    """A fake member speaking the client protocol: a dict store, no Raft, no disk.

    It is the load tool's yardstick: whatever rate the tool reaches against it is the tool's own
    ceiling (bounded also by this server's speed, which FACTS.md puts far above a real member's).
    """

    MEMBER_ID = 1

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.store: dict[bytes, bytes] = {}
        self.revision = 1
        self.requests = 0
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    def _header(self) -> dict[str, int]:
        return {"cluster_id": 1, "member_id": self.MEMBER_ID, "revision": self.revision,
                "raft_term": 1}

    def answer(self, body: bytes) -> bytes:
        self.requests += 1
        try:
            rid, op, args = decode_request(body)
        except ValueError as e:
            return encode_response(getattr(e, "req_id", None) or 0, ("BAD_REQUEST", str(e), {}),
                                   None)
        if op == "put":
            key, value = args.get("key"), args.get("value")
            if type(key) is not bytes or type(value) is not bytes:
                return encode_response(rid, ("BAD_REQUEST", "key and value must be bytes", {}),
                                       None)
            self.revision += 1
            self.store[key] = value
            return encode_response(rid, None, {"header": self._header()})
        if op == "range":
            key = args.get("key")
            v = self.store.get(key) if type(key) is bytes else None
            kvs = [] if v is None else [{"key": key, "value": v, "create_revision": 1,
                                         "mod_revision": 1, "version": 1, "lease": 0}]
            return encode_response(rid, None, {"header": self._header(), "kvs": kvs,
                                               "count": len(kvs), "more": False})
        if op == "status":
            return encode_response(rid, None, {
                "member_id": self.MEMBER_ID, "leader": self.MEMBER_ID, "version": "noop",
                "db_size": 0, "raft_term": 1, "raft_index": self.revision,
                "raft_applied_index": self.revision, "is_learner": False, "errors": []})
        return encode_response(rid, ("UNKNOWN_OP", f"no-op endpoint does not serve {op}", {}),
                               None)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _NoopConn(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class NoopServerThread:
    """The no-op endpoint on its own event loop in a thread (for tests): ``with ... as port:``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.server = NoopServer(delay)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop)
        port = fut.result(timeout=10)
        return f"127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def start_noop_subprocess(delay: float = 0.0) -> tuple[subprocess.Popen, str]:
    """Start the no-op endpoint in its own process; return (process, "127.0.0.1:port")."""
    p = subprocess.Popen([sys.executable, "-m", "fastraft.tools.loadgen", "--serve-noop",
                          "--noop-delay", str(delay)],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()  # the child prints its port first; EOF if it died
    if not line.startswith("LISTENING "):
        p.kill()
        p.wait(timeout=10)
        raise RuntimeError(f"the no-op endpoint did not start (said {line!r})")
    return p, f"127.0.0.1:{int(line.split()[1])}"


def _serve_noop_forever(delay: float) -> None:
    async def body() -> None:
        srv = NoopServer(delay)
        port = await srv.start()
        print(f"LISTENING {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await srv.stop()

    _run_loop(body())


# ------------------------------------------------------------------------------ reporting


def format_report(res: dict[str, Any], title: str = "") -> str:
    lat = res["latency_ms"]
    lines = []
    if title:
        lines.append(title)
    sp = res["spec"]
    shape = (f"{sp['clients']} clients" if res["mode"] == "closed"
             else f"open loop {res['offered_rate']:,.0f}/s offered")
    lines.append(f"  {sp['workload']} ({sp['consistency']} reads), {sp['distribution']} over "
                 f"{sp['keys']:,} keys, {sp['value_size']} B values; {shape}; {sp['conns']} conns "
                 f"x {sp['procs']} procs; target {res['target']}")
    err = sum(res["errors"].values())
    lines.append(f"  ops {res['ops']:,} in {res['duration_s']:.2f}s = {res['throughput']:,.0f} "
                 f"ops/s; errors {err}{' ' + json.dumps(res['errors']) if err else ''}; "
                 f"timeouts {res['timeouts']}")
    lines.append("  latency ms: " + "  ".join(f"{k} {lat[k]:.3f}"
                                              for k in ("p50", "p90", "p99", "p99.9", "max")))
    lag = res.get("send_lag_ms")
    if res["mode"] == "open" and lag:
        lines.append(f"  generator late by (included above) ms: p50 {lag['p50']:.3f}  "
                     f"p99 {lag['p99']:.3f}  max {lag['max']:.3f}")
    for name, b in res.get("by_op", {}).items():
        if len(res.get("by_op", {})) > 1:
            bl = b["latency_ms"]
            lines.append(f"    {name:<6} {b['ops']:>10,} ops  p50 {bl['p50']:.3f}  p99 "
                         f"{bl['p99']:.3f}  max {bl['max']:.3f}")
    return "\n".join(lines)


def plot_sweep(series: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Latency percentiles against achieved throughput, one line style per series."""
    try:
        import matplotlib
    except ImportError:
        raise click.ClickException("--plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", ":", "-."]
    for si, (name, results) in enumerate(series.items()):
        xs = [r["throughput"] for r in results]
        for pi, p in enumerate(("p50", "p90", "p99", "p99.9")):
            # colour = percentile, line style = series: the eye pairs target and no-op lines
            ax.plot(xs, [max(r["latency_ms"][p], 1e-3) for r in results],
                    styles[si % len(styles)], color=f"C{pi}", marker="o", label=f"{name} {p}")
    ax.set_xlabel("achieved throughput (ops/s)")
    ax.set_ylabel("latency (ms, from intended send time)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------ CLI


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 1000,2000,4000") from None
    if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise click.BadParameter("rates must be positive numbers")
    return rates


def _staleness(text: str | None) -> float:
    if text is None:
        return 0.0
    from fastraft.ctl import parse_duration  # the CLI's own duration syntax
    try:
        return parse_duration(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--max-staleness") from None


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoints", default="127.0.0.1:2379", show_default=True,
              help="comma-separated host:port of the members; the leader is found by status")
@click.option("--workload", type=click.Choice(list(WORKLOADS)), default="put", show_default=True,
              help="put, get, or a YCSB mix: a 50/50, b 95/5 read/update, c read only")
@click.option("--consistency", type=click.Choice(CONSISTENCY), default="linearizable",
              show_default=True, help="read level (README, read levels)")
@click.option("--max-staleness", default=None, metavar="DURATION",
              help="bounded reads: how stale an answer may be (500ms, 2s)")
@click.option("--keys", type=int, default=1000, show_default=True, help="key count")
@click.option("--distribution", type=click.Choice(DISTRIBUTIONS), default="uniform",
              show_default=True)
@click.option("--zipf-theta", type=float, default=0.99, show_default=True)
@click.option("--value-size", type=int, default=256, show_default=True, help="bytes")
@click.option("--key-size", type=int, default=16, show_default=True, help="bytes")
@click.option("--clients", type=int, default=16, show_default=True,
              help="closed loop: requests in flight in total")
@click.option("--rate", type=float, default=0.0,
              help="open loop: requests/s in total (latency from the intended send time)")
@click.option("--sweep", default="", help="open loop at each of these rates, e.g. 1000,2000,4000")
@click.option("--conns", type=int, default=4, show_default=True, help="connections in total")
@click.option("--max-inflight", type=int, default=1024, show_default=True,
              help="open loop: in-flight cap per connection (due requests wait beyond it)")
@click.option("--procs", type=int, default=1, show_default=True, help="load processes")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="seconds")
@click.option("--duration", type=float, default=5.0, show_default=True,
              help="seconds measured (cap when --ops is given)")
@click.option("--ops", type=int, default=0, help="measured operations in total (0: use duration)")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="seconds answers may take after the end before they count as timeouts")
@click.option("--preload/--no-preload", default=None,
              help="write every key before the run (default: when the workload reads)")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--noop-ceiling", is_flag=True,
              help="also run the same workload against a no-op endpoint (own process)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="write results as JSON here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG of latency percentiles against throughput (with --sweep)")
@click.option("--quiet", is_flag=True, help="no progress line")
@click.option("--serve-noop", is_flag=True, hidden=True)
@click.option("--noop-delay", type=float, default=0.0, hidden=True)
def bench_command(endpoints: str, workload: str, consistency: str, max_staleness: str | None,
                  keys: int, distribution: str,
                  zipf_theta: float, value_size: int, key_size: int, clients: int, rate: float,
                  sweep: str, conns: int, max_inflight: int, procs: int, warmup: float,
                  duration: float, ops: int, timeout: float, preload: bool | None, seed: int,
                  noop_ceiling: bool, json_path: str | None, plot_path: str | None, quiet: bool,
                  serve_noop: bool, noop_delay: float) -> None:
    """Drive a cluster with a closed or open loop of put/get/YCSB requests and report throughput
    and latency percentiles (HdrHistogram).

    \b
    fastraft bench --workload put --clients 64 --duration 10
    fastraft bench --workload ycsb-b --distribution zipfian --rate 5000 --procs 2 --conns 8
    fastraft bench --sweep 1000,2000,4000 --plot lat.png --json out.json --noop-ceiling
    """
    if serve_noop:
        _serve_noop_forever(noop_delay)
        return
    rates = _parse_rates(sweep) if sweep else []
    if plot_path and not rates:
        raise click.UsageError("--plot needs --sweep")
    spec = Spec(endpoints=[e.strip() for e in endpoints.split(",") if e.strip()],
                workload=workload, consistency=consistency,
                max_staleness=_staleness(max_staleness), keys=keys, distribution=distribution,
                zipf_theta=zipf_theta, value_size=value_size, key_size=key_size, clients=clients,
                rate=rate if not rates else rates[0], conns=conns, max_inflight=max_inflight,
                procs=procs, warmup=warmup, duration=duration, ops=ops, timeout=timeout,
                preload=preload, seed=seed)
    try:
        spec.check()
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if plot_path:
        try:
            import matplotlib  # noqa: F401  (fail before the run, not after)
        except ImportError:
            raise click.UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    report: dict[str, Any] = {"schema": SCHEMA_VERSION, "tool": "fastraft-loadgen"}
    progress = not quiet
    try:
        if rates:
            report["sweep"] = run_sweep(spec, rates, progress=progress)
            for r in report["sweep"]:
                click.echo(format_report(r, f"target, open loop {r['offered_rate']:,.0f}/s:"))
        else:
            report["result"] = run(spec, progress=progress, label="[target]")
            click.echo(format_report(report["result"], "target:"))
        if noop_ceiling:
            proc, ep = start_noop_subprocess()
            try:
                nspec = replace(spec, endpoints=[ep])
                if rates:
                    report["noop_sweep"] = run_sweep(nspec, rates, progress=progress)
                    for r in report["noop_sweep"]:
                        click.echo(format_report(
                            r, f"no-op endpoint (tool ceiling), {r['offered_rate']:,.0f}/s:"))
                else:
                    report["noop_ceiling"] = run(nspec, progress=progress, label="[no-op]")
                    click.echo(format_report(report["noop_ceiling"],
                                             "no-op endpoint (the tool's own ceiling):"))
                    t = report["result"]["throughput"]
                    c = report["noop_ceiling"]["throughput"]
                    if c > 0:
                        click.echo(f"  target reached {100 * t / c:.1f}% of the tool's ceiling"
                                   f"{' (the tool may be the bottleneck)' if t > 0.5 * c else ''}")
            finally:
                stop_processes([proc], timeout=5.0)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    if plot_path:
        series = {"target": report["sweep"]}
        if "noop_sweep" in report:
            series["no-op"] = report["noop_sweep"]
        plot_sweep(series, plot_path)
        click.echo(f"plot written to {plot_path}")


def main() -> None:
    bench_command(prog_name="fastraft bench")


if __name__ == "__main__":
    main()
