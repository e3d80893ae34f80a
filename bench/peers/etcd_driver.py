"""A closed- or open-loop etcd v3 load driver: grpc.aio with etcd's own KV protobufs.

Which client, exactly: the Python ``etcd3`` package (0.12) installs here but its generated
``*_pb2.py`` modules predate protobuf 4 and import only under the slow pure-Python protobuf
(``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``), and its client is synchronous (one thread per
concurrent request: GIL-bound). So this driver takes the serialized descriptors of etcd's
``kv.proto``, ``auth.proto`` and ``rpc.proto`` out of those modules (read with ``ast``, not
imported), registers them in a fresh descriptor pool of the fast (upb) protobuf runtime, and calls
``/etcdserverpb.KV/Put`` and ``/etcdserverpb.KV/Range`` over ``grpc.aio`` channels, many requests in
flight. ``--noop-server`` serves the same two methods doing nothing: driving that measures the
driver's own ceiling.

Output: one JSON line on stdout, the same fields as ``fastraft.tools.loadgen`` results (with the
HdrHistogram encoded, so that the results of several driver processes can be merged exactly).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import json
import os
import random
import signal
import sys
import time
from typing import Any

from fastraft.tools.loadgen import (
    HIST_MAX_US,
    HIST_MIN_US,
    KeyChooser,
    Spec,
    latency_summary,
    new_histogram,
)

_PROTOS = ("kv_pb2.py", "auth_pb2.py", "rpc_pb2.py")


def _serialized_descriptor(path: str) -> bytes:
    """The ``serialized_pb=_b('...')`` literal of an old generated module (``_b`` = latin-1)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            v = node.value
            if isinstance(v, ast.Call) and v.args and isinstance(v.args[0], ast.Constant):
                return v.args[0].value.encode("latin-1")
    raise RuntimeError(f"no serialized descriptor in {path}")


def load_messages() -> dict[str, Any]:
    """etcd's request/response classes, built in the fast protobuf runtime."""
    spec = importlib.util.find_spec("etcd3")
    if spec is None or spec.origin is None:
        raise SystemExit("the etcd driver needs the etcd3 package for etcd's protobuf "
                         "descriptors: pip install etcd3")
    from google.protobuf import descriptor_pool, message_factory

    base = os.path.join(os.path.dirname(spec.origin), "etcdrpc")
    pool = descriptor_pool.DescriptorPool()
    for name in _PROTOS:
        pool.AddSerializedFile(_serialized_descriptor(os.path.join(base, name)))
    out = {}
    for n in ("PutRequest", "PutResponse", "RangeRequest", "RangeResponse", "StatusRequest",
              "StatusResponse"):
        out[n] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"etcdserverpb.{n}"))
    return out


def _methods(channel: Any, m: dict[str, Any]) -> tuple[Any, Any, Any]:
    put = channel.unary_unary("/etcdserverpb.KV/Put",
                              request_serializer=m["PutRequest"].SerializeToString,
                              response_deserializer=m["PutResponse"].FromString)
    rng = channel.unary_unary("/etcdserverpb.KV/Range",
                              request_serializer=m["RangeRequest"].SerializeToString,
                              response_deserializer=m["RangeResponse"].FromString)
    status = channel.unary_unary("/etcdserverpb.Maintenance/Status",
                                 request_serializer=m["StatusRequest"].SerializeToString,
                                 response_deserializer=m["StatusResponse"].FromString)
    return put, rng, status


async def find_leader(endpoints: list[str], timeout: float = 15.0) -> str:
    """The endpoint whose Status says it is the leader (bounded poll)."""
    import grpc

    m = load_messages()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ep in endpoints:
            async with grpc.aio.insecure_channel(ep) as ch:
                _, _, status = _methods(ch, m)
                try:
                    st = await status(m["StatusRequest"](), timeout=1.0)
                except grpc.aio.AioRpcError:
                    continue
                if st.leader and st.leader == st.header.member_id:
                    return ep
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no etcd leader among {endpoints}")


async def preload(endpoint: str, spec: Spec, window: int = 256) -> None:
    """Put every key once (at most `window` in flight) so that reads find values, as
    ``fastraft.tools.loadgen`` does before a read workload."""
    import grpc

    m = load_messages()
    keys = KeyChooser(spec, random.Random(spec.seed))
    value = random.Random(spec.seed).randbytes(spec.value_size)
    sem = asyncio.Semaphore(window)
    async with grpc.aio.insecure_channel(endpoint) as ch:
        put, _, _ = _methods(ch, m)

        async def one(i: int) -> None:
            async with sem:
                await put(m["PutRequest"](key=keys.key(i), value=value), timeout=spec.timeout)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(spec.keys))),
                               timeout=max(30.0, spec.keys / 500))


async def drive(endpoint: str, spec: Spec, channels: int, start_ns: int = 0) -> dict[str, Any]:
    """Closed loop (spec.rate == 0): spec.clients coroutines, each one request at a time.

    Open loop (spec.rate > 0): request i is due at start + i/rate; spec.clients coroutines take
    the next due request in turn, so at most spec.clients are in flight. Latency is measured from
    the *intended* time, so a request that waited for a free coroutine is charged for the wait
    (no coordinated omission; the same rule as ``fastraft.tools.loadgen``).

    `start_ns` (CLOCK_MONOTONIC, system-wide on Linux) lets several driver processes share one
    window; 0 = start now.
    """
    import grpc

    m = load_messages()
    rng = random.Random(spec.seed)
    keys = KeyChooser(spec, rng)
    value = rng.randbytes(spec.value_size)
    serializable = spec.consistency == "serializable"
    chans = [grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    for c in chans:  # connect before the clock starts, so the first requests do not pay for it
        await asyncio.wait_for(c.channel_ready(), timeout=10.0)
    hist = new_histogram()
    errors: dict[str, int] = {}
    now0 = time.monotonic_ns()
    t0 = start_ns if start_ns > now0 else now0
    if t0 > now0:
        await asyncio.sleep((t0 - now0) / 1e9)
    measure_start = t0 + int(spec.warmup * 1e9)
    end = measure_start + int(spec.duration * 1e9)
    ops = 0
    last = 0
    read_frac = spec.read_fraction
    open_loop = spec.rate > 0
    interval = 1e9 / spec.rate if open_loop else 0.0
    seq = 0  # open loop: the next request's number (coroutines share it; one event loop)

    async def one(put: Any, rg: Any, start: int) -> None:
        nonlocal ops, last
        key = keys.key(keys.next_index())
        try:
            if read_frac and rng.random() < read_frac:
                await rg(m["RangeRequest"](key=key, serializable=serializable),
                         timeout=spec.timeout)
            else:
                await put(m["PutRequest"](key=key, value=value), timeout=spec.timeout)
        except grpc.aio.AioRpcError as e:
            errors[e.code().name] = errors.get(e.code().name, 0) + 1
            return
        now = time.monotonic_ns()
        if start >= measure_start:
            hist.record_value(min(max((now - start) // 1000, HIST_MIN_US), HIST_MAX_US))
            ops += 1
            last = now

    async def client(i: int) -> None:
        nonlocal seq
        put, rg, _ = _methods(chans[i % channels], m)
        while True:
            if open_loop:
                due = t0 + int(seq * interval)
                seq += 1
                if due >= end:
                    return
                wait = due - time.monotonic_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                start = due
            else:
                start = time.monotonic_ns()
                if start >= end:
                    return
            await one(put, rg, start)

    try:
        await asyncio.gather(*(client(i) for i in range(spec.clients)))
    finally:
        for c in chans:
            await c.close()
    window = (last - measure_start) / 1e9 if last > measure_start else 0.0
    return {"target": endpoint, "mode": "open" if open_loop else "closed",
            "offered_rate": spec.rate if open_loop else None, "ops": ops, "errors": errors,
            "duration_s": round(window, 6),
            "throughput": round(ops / window, 2) if window else 0.0,
            "latency_ms": latency_summary(hist),
            "histogram": hist.encode().decode() if ops else ""}


async def noop_server() -> None:
    """Serve KV/Put and KV/Range doing nothing; print the port; run until SIGTERM."""
    import grpc

    m = load_messages()

    async def put(req: Any, ctx: Any) -> Any:
        return m["PutResponse"]()

    async def rng(req: Any, ctx: Any) -> Any:
        return m["RangeResponse"]()

    async def status(req: Any, ctx: Any) -> Any:
        r = m["StatusResponse"](leader=1)
        r.header.member_id = 1
        return r

    def h(fn: Any, req: str, resp: str) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=m[req].FromString,
            response_serializer=m[resp].SerializeToString)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("etcdserverpb.KV", {
            "Put": h(put, "PutRequest", "PutResponse"),
            "Range": h(rng, "RangeRequest", "RangeResponse")}),
        grpc.method_handlers_generic_handler("etcdserverpb.Maintenance", {
            "Status": h(status, "StatusRequest", "StatusResponse")}),
    ])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", default="127.0.0.1:2379")
    ap.add_argument("--workload", default="put", choices=["put", "get", "ycsb-a", "ycsb-b",
                                                          "ycsb-c"])
    ap.add_argument("--consistency", default="linearizable",
                    choices=["linearizable", "serializable"])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="open loop: requests/s (0 = closed loop); --clients caps the in-flight")
    ap.add_argument("--preload", choices=["auto", "yes", "no"], default="auto",
                    help="put every key once first (auto: when the workload reads)")
    ap.add_argument("--start-at", type=int, default=0,
                    help="time.monotonic_ns() to start at (aligns several driver processes)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--noop-server", action="store_true")
    a = ap.parse_args(argv)
    if a.noop_server:
        asyncio.run(noop_server())
        return
    spec = Spec(endpoints=a.endpoints.split(","), workload=a.workload, consistency=a.consistency,
                clients=a.clients, conns=a.channels, keys=a.keys, value_size=a.value_size,
                warmup=a.warmup, duration=a.duration, rate=a.rate, seed=a.seed)
    try:
        spec.check()
    except ValueError as e:
        ap.error(str(e))

    async def body() -> dict[str, Any]:
        leader = await find_leader(spec.endpoints)
        if a.preload == "yes" or (a.preload == "auto" and spec.read_fraction > 0):
            await preload(leader, spec)
        return await drive(leader, spec, a.channels, a.start_at)

    res = asyncio.run(body())
    res["client_cpu_s"] = round(time.process_time(), 3)
    res["client"] = "grpc.aio + etcd rpc.proto descriptors (fast protobuf runtime)"
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
