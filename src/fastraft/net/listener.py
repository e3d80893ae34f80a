"""The client-facing server: an asyncio Protocol per connection (uvloop when installed).

It only frames and decodes; serving (propose, read, status) belongs to the KV service
(server/kvservice.py), which it knows only as a :class:`Service`: a request goes in with a
``done`` callback (the connection's ``reply`` for that request id), a watch with the connection
as its sink. Two rules keep it fast and robust:

* Replies are buffered per connection and written with ONE ``transport.write`` per
  ``data_received`` call, and one per loop iteration for replies that come later (e.g. writes
  answered after their entry applied) or at once when the service says a batch of such answers
  is complete (its flush hook: after an apply). FACTS.md: joining replies is worth 4-5x.
* Nothing a client sends can raise out of ``data_received``: a malformed envelope gets a
  ``BAD_REQUEST`` answer; broken framing (an oversized frame) gets a ``REQUEST_TOO_LARGE``
  answer with request id 0 and the connection is closed, since the stream can no longer be split.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

from fastraft.client.codec import decode_request, encode_response
from fastraft.errors import BadRequestError, FastraftError, ResponseTooLargeError
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, FrameTooLargeError, WireError, frame

__all__ = ["ClientServer", "ClientConnection", "Service"]

log = logging.getLogger("fastraft.server")


class Service(Protocol):
    """What the listener needs of the KV service (server/kvservice.py's KVService).
    ``stream_ops``: the operations served by ``watch`` (answers streamed to a sink), not
    ``submit``."""

    stream_ops: frozenset[str]

    def submit(self, op: str, args: dict[str, Any],
               done: Callable[[FastraftError | None, dict[str, Any] | None], None]) -> None: ...

    def watch(self, sink: ClientConnection, req_id: int, op: str,
              args: dict[str, Any]) -> None: ...

    def stream_closed(self, sink: ClientConnection) -> None: ...

    def add_flush_hook(self, hook: Callable[[], None]) -> None: ...


class ClientConnection(asyncio.Protocol):
    """One client connection: frames in, buffered replies out."""

    def __init__(self, server: ClientServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(server.max_frame)
        self._out: list[bytes] = []
        self._in_receive = False
        self._flush_scheduled = False
        self.closed = False

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._out.clear()
        self.server.connections.discard(self)
        self.server.pending.discard(self)
        self.server.service.stream_closed(self)  # drop this connection's watchers

    def data_received(self, data: bytes) -> None:
        self._in_receive = True
        try:
            try:
                bodies = self._decoder.feed(data)
            except FrameTooLargeError as e:
                # Serve what came complete before it, then answer and close: framing is lost.
                for body in e.frames:
                    self._handle(body)
                self.reply(0, e, None)
                self._flush()
                if self.transport is not None:
                    self.transport.close()
                return
            for body in bodies:
                self._handle(body)
        finally:
            self._in_receive = False
        self._flush()

    # ----------------------------------------------------------------------- requests
    def _handle(self, body: bytes) -> None:
        try:
            req_id, op, args = decode_request(body)
        except WireError as e:
            self.reply(e.req_id or 0, BadRequestError(f"malformed request: {e.reason}"), None)
            return
        try:
            if op in self.server.stream_ops:
                self.server.service.watch(self, req_id, op, args)
            else:
                # partial, not a closure: one C call into reply, no Python frame of its own.
                self.server.service.submit(op, args, partial(self.reply, req_id))
        except FastraftError as e:
            self.reply(req_id, e, None)
        except Exception as e:  # a service bug must not take the connection or loop down
            log.exception("internal error handling %s", op)
            self.reply(req_id, ("INTERNAL", f"internal error: {type(e).__name__}: {e}", {}), None)

    def reply(self, req_id: int, error: Any, result: dict[str, Any] | None) -> None:
        """Queue a response; written with the others of this read (or loop iteration)."""
        if self.closed:
            return
        try:
            body = encode_response(req_id, error, result)
        except WireError as e:
            log.error("cannot encode the response to request %d: %s", req_id, e)
            body = encode_response(req_id, ("INTERNAL", f"cannot encode response: {e}", {}), None)
        if len(body) > MAX_PEER_FRAME:
            # The client would refuse the frame and lose the connection: say why instead.
            body = encode_response(req_id, ResponseTooLargeError(
                f"the answer is {len(body):,} bytes; a client reads at most {MAX_PEER_FRAME:,}"),
                None)
        self._out.append(frame(body))
        if not self._in_receive and not self._flush_scheduled:
            self._flush_scheduled = True
            self.server.pending.add(self)  # written by the service's flush hook, or:
            asyncio.get_running_loop().call_soon(self._flush)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the client (the transport's write buffer)."""
        tr = self.transport
        if tr is None:
            return 0
        try:
            return int(tr.get_write_buffer_size())
        except RuntimeError:  # the transport is closing
            return 0

    def flush(self) -> None:
        """Write the queued replies now."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.transport is None:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        self.transport.write(data)

    def close(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()


class ClientServer:
    """Listens on the client addresses and hands each request to ``service``."""

    def __init__(self, service: Service, *, max_frame: int) -> None:
        self.service = service
        self.stream_ops = service.stream_ops
        self.max_frame = max_frame
        self.connections: set[ClientConnection] = set()
        # Connections holding replies given outside a read of theirs (not yet written).
        self.pending: set[ClientConnection] = set()
        service.add_flush_hook(self.flush_pending)
        self._servers: list[asyncio.AbstractServer] = []
        self.addrs: list[tuple[str, int]] = []

    async def start(self, addrs: list[tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()
        for host, port in addrs:
            srv = await loop.create_server(lambda: ClientConnection(self), host, port,
                                           reuse_address=True)
            self._servers.append(srv)
            self.addrs.append((host, srv.sockets[0].getsockname()[1]))

    def flush_pending(self) -> None:
        """Write the replies queued outside a read (the service answered a batch: an apply)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, set()
        for c in pending:
            c.flush()

    def stop_listening(self) -> None:
        for s in self._servers:
            s.close()

    async def stop(self) -> None:
        """Stop listening, flush what is queued and close every connection."""
        self.stop_listening()
        for c in list(self.connections):
            c.close()
        for s in self._servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()
        await asyncio.sleep(0)  # let connection_lost callbacks run
