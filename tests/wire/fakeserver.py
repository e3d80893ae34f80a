"""A small fake fastraft server for client and ctl tests.

It speaks the real client wire protocol (frames, msgpack envelope) over asyncio on 127.0.0.1 and
keeps a tiny dict store with etcd-like revisions. Behaviour is switchable per server: leader,
follower (answers NOT_LEADER with the leader's URL), no leader (NO_LEADER), per-op delays (to make
calls time out), dropping connections, and scripted one-shot errors.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from fastraft.net.framing import FrameDecoder, FrameTooLargeError, WireError, frame
from fastraft.client.codec import DEFAULT_MAX_CLIENT_FRAME, decode_request, encode_response


class Store:
    """Shared by the servers of one fake cluster, as a replicated store would look."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, dict[str, Any]] = {}
        self.revision = 1
        self.compacted = 0

    def header(self, member_id: int) -> dict[str, int]:
        return {"cluster_id": 0xC1, "member_id": member_id, "revision": self.revision,
                "raft_term": 2}

    def select(self, key: bytes, end: bytes) -> list[dict[str, Any]]:
        if end == b"":
            return [self.kvs[key]] if key in self.kvs else []
        return [self.kvs[k] for k in sorted(self.kvs)
                if k >= key and (end == b"\0" or k < end)]

    def put(self, args: dict[str, Any]) -> dict[str, Any]:
        key, value = args["key"], args["value"]
        prev = self.kvs.get(key)
        self.revision += 1
        self.kvs[key] = {"key": key, "value": value,
                         "create_revision": prev["create_revision"] if prev else self.revision,
                         "mod_revision": self.revision,
                         "version": prev["version"] + 1 if prev else 1, "lease": 0}
        return {"prev_kv": prev} if args.get("prev_kv") and prev else {}

    def range(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("revision", 0) and args["revision"] < self.compacted:
            raise LookupError("COMPACTED")
        kvs = self.select(args["key"], args.get("range_end", b""))
        count = len(kvs)
        if args.get("limit"):
            kvs = kvs[: args["limit"]]
        if args.get("keys_only"):
            kvs = [dict(kv, value=b"") for kv in kvs]
        return {"kvs": [] if args.get("count_only") else kvs, "count": count,
                "more": len(kvs) < count}

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        kvs = self.select(args["key"], args.get("range_end", b""))
        if kvs:
            self.revision += 1
        for kv in kvs:
            del self.kvs[kv["key"]]
        out: dict[str, Any] = {"deleted": len(kvs)}
        if args.get("prev_kv"):
            out["prev_kvs"] = kvs
        return out

    def compare(self, c: list[Any]) -> bool:
        target, result, key, _end, value = c
        kv = self.kvs.get(key)
        field = {"value": "value", "version": "version", "create": "create_revision",
                 "mod": "mod_revision"}[target]
        have = kv[field] if kv else (b"" if target == "value" else 0)
        return {"=": have == value, "!=": have != value, ">": have > value,
                "<": have < value}[result]

    def txn(self, args: dict[str, Any], member_id: int) -> dict[str, Any]:
        ok = all(self.compare(c) for c in args["compare"])
        responses = []
        for op, a in args["success" if ok else "failure"]:
            r = getattr(self, op)(a)
            r["header"] = self.header(member_id)
            responses.append([op, r])
        return {"succeeded": ok, "responses": responses}


class FakeServer:
    def __init__(self, member_id: int, store: Store, name: str = "") -> None:
        self.member_id = member_id
        self.name = name or f"m{member_id:x}"
        self.store = store
        self.role = "leader"  # "leader" | "follower" | "noleader"
        self.leader_url = ""  # the NOT_LEADER hint a follower gives
        self.leader_id = 0
        self.delays: dict[str, float] = {}  # op -> seconds before answering
        self.drop_ops: set[str] = set()  # ops whose connection is closed instead of answered
        # One-shot errors to answer next: (code, message) or (code, message, extra fields).
        self.script: list[tuple[Any, ...]] = []
        self.calls: Counter[str] = Counter()
        self.max_frame = DEFAULT_MAX_CLIENT_FRAME
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        leader = {"leader": self.member_id, "follower": self.leader_id, "noleader": 0}[self.role]
        return {"member_id": self.member_id, "leader": leader, "version": "0.1.0",
                "db_size": 24_576 + 1000 * len(self.store.kvs), "raft_term": 2,
                "raft_index": self.store.revision + 7,
                "raft_applied_index": self.store.revision + 7,
                "is_learner": False, "errors": []}

    def answer(self, op: str, args: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if self.script:
            code, msg, *extra = self.script.pop(0)
            return (code, msg, extra[0] if extra else {}), {}
        if op == "status":
            return None, self.status()
        if op == "health":
            if self.role == "noleader":
                return None, {"health": False, "reason": "no leader"}
            return None, {"health": True, "reason": ""}
        if op == "member_list":
            return None, {"members": [{"id": m.member_id, "name": m.name, "peer_urls": [
                f"http://127.0.0.1:{m.port + 1}"], "client_urls": [m.url], "is_learner": False}
                for m in self.cluster]}
        needs_leader = op != "range" or not args.get("serializable")
        if needs_leader and self.role == "noleader":
            return ("NO_LEADER", "no leader", {}), {}
        if needs_leader and self.role == "follower":
            return ("NOT_LEADER", "not leader", {"leader": format(self.leader_id, "x"),
                                                 "leader_urls": [self.leader_url]}), {}
        try:
            res: dict[str, Any] | None = None
            if op == "put":
                res = self.store.put(args)
            elif op == "range":
                res = self.store.range(args)
            elif op == "delete":
                res = self.store.delete(args)
            elif op == "txn":
                res = self.store.txn(args, self.member_id)
            elif op == "compact":
                if args["revision"] > self.store.revision:
                    return ("FUTURE_REV", "required revision is a future revision", {}), {}
                self.store.compacted = args["revision"]
                res = {}
            if res is not None:
                # The header carries the revision after the op, as etcd's does.
                return None, {**res, "header": self.store.header(self.member_id)}
        except LookupError:
            return ("COMPACTED", "required revision has been compacted", {}), {}
        except (KeyError, TypeError) as e:
            return ("BAD_REQUEST", f"bad args: {e}", {}), {}
        return ("UNKNOWN_OP", f"unknown op {op!r}", {}), {}

    cluster: list[FakeServer] = []


class _Proto(asyncio.Protocol):
    def __init__(self, srv: FakeServer) -> None:
        self.srv = srv
        self.dec = FrameDecoder(srv.max_frame)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.srv.connections += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            bodies = self.dec.feed(data)
        except FrameTooLargeError as e:
            self.transport.write(frame(encode_response(0, e, {})))
            self.transport.close()
            return
        for body in bodies:
            try:
                rid, op, args = decode_request(body)
            except WireError as e:
                self.transport.write(frame(encode_response(e.req_id or 0, e, {})))
                continue
            self.srv.calls[op] += 1
            if op in self.srv.drop_ops:
                self.transport.close()
                return
            err, res = self.srv.answer(op, args)
            out = frame(encode_response(rid, err, res))
            delay = self.srv.delays.get(op, 0.0)
            if delay:
                asyncio.get_running_loop().call_later(delay, self._write, out)
            else:
                self.transport.write(out)

    def _write(self, out: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)


class FakeCluster:
    """N fake servers on 127.0.0.1 ephemeral ports, served by a loop in a background thread."""

    def __init__(self, n: int = 3) -> None:
        self.store = Store()
        self.servers = [FakeServer(0x100 + i, self.store) for i in range(n)]
        for s in self.servers:
            s.cluster = self.servers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        for s in self.servers:
            self.call(self._start(s))
        self.set_leader(0)
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.servers:
            if s.server is not None:
                self.loop.call_soon_threadsafe(s.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    async def _start(self, s: FakeServer) -> None:
        s.server = await asyncio.get_running_loop().create_server(
            lambda: _Proto(s), "127.0.0.1", 0)
        s.port = s.server.sockets[0].getsockname()[1]

    def stop_server(self, i: int) -> None:
        s = self.servers[i]

        async def _stop() -> None:
            assert s.server is not None
            s.server.close()

        self.call(_stop())

    def set_leader(self, i: int | None) -> None:
        """Make server ``i`` leader and the rest followers; None: nobody has a leader."""
        for j, s in enumerate(self.servers):
            if i is None:
                s.role, s.leader_id, s.leader_url = "noleader", 0, ""
            else:
                lead = self.servers[i]
                s.role = "leader" if j == i else "follower"
                s.leader_id, s.leader_url = lead.member_id, lead.url

    @property
    def endpoints(self) -> list[str]:
        return [s.endpoint for s in self.servers]


if __name__ == "__main__":  # pragma: no cover - handy for trying fastractl by hand
    import time

    with FakeCluster(3) as c:
        print(",".join(c.endpoints), flush=True)
        time.sleep(3600)
