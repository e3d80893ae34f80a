"""The msgpack listener (net/listener.py) over a service: requests go to ``submit`` with a done
callback, watches to ``watch`` with the connection as sink; replies are written once per socket
read, and late replies (after an apply) once per batch when the service calls its flush hook."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastraft.client.codec import decode_response, encode_request
from fastraft.errors import FastraftError, UnknownOperationError
from fastraft.net.framing import FrameDecoder, frame
from fastraft.net.listener import ClientConnection, ClientServer

Done = Callable[[FastraftError | None, dict[str, Any] | None], None]


class FakeService:
    """Answers ``status`` at once, holds ``put`` until ``apply()``, refuses anything else."""

    stream_ops = frozenset(("watch",))

    def __init__(self) -> None:
        self.held: list[Done] = []
        self.hooks: list[Callable[[], None]] = []
        self.watches: list[tuple[Any, int]] = []
        self.closed: list[Any] = []

    def submit(self, op: str, args: dict[str, Any], done: Done) -> None:
        if op == "status":
            done(None, {"ok": True})
        elif op == "put":
            self.held.append(done)
        else:
            done(UnknownOperationError(op), None)

    def watch(self, sink: Any, req_id: int, op: str, args: dict[str, Any]) -> None:
        self.watches.append((sink, req_id))

    def stream_closed(self, sink: Any) -> None:
        self.closed.append(sink)

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)

    def apply(self) -> None:
        """As the KV service after an apply: answer what waited, then flush the front ends."""
        held, self.held = self.held, []
        for i, done in enumerate(held):
            done(None, {"applied": i})
        for hook in self.hooks:
            hook()


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _answers(data: bytes) -> list[tuple[int, Any, Any]]:
    return [decode_response(b) for b in FrameDecoder(1 << 20).feed(data)]


def test_replies_are_written_once_per_read_and_once_per_applied_batch() -> None:
    async def body() -> None:
        svc = FakeService()
        server = ClientServer(svc, max_frame=1 << 20)
        conn, tr = ClientConnection(server), FakeTransport()
        conn.connection_made(tr)  # type: ignore[arg-type]
        # One read: two answered at once, two held, one unknown: one write for the three.
        conn.data_received(b"".join(frame(encode_request(i, op, {})) for i, op in enumerate(
            ("status", "put", "put", "nope", "status"), 1)))
        assert len(tr.writes) == 1
        got = _answers(tr.writes[0])
        assert [(rid, err is None) for rid, err, _ in got] == [(1, True), (4, False), (5, True)]
        assert got[1][1][0] == "UNKNOWN_OP"
        # The held two are answered outside any read: both go out in ONE write at the hook,
        # not one loop iteration later.
        svc.apply()
        assert len(tr.writes) == 2
        assert [(rid, res) for rid, _, res in _answers(tr.writes[1])] == [
            (2, {"applied": 0}), (3, {"applied": 1})]
        await asyncio.sleep(0)  # the per-iteration fallback flush finds nothing left
        assert len(tr.writes) == 2
        # A watch goes to the service with the connection as its sink; losing the
        # connection tells the service.
        conn.data_received(frame(encode_request(9, "watch", {"key": b"k"})))
        assert svc.watches == [(conn, 9)]
        conn.connection_lost(None)
        assert svc.closed == [conn] and conn not in server.pending

    asyncio.run(body())
