"""A small HTTP/1.1 server for probes and metrics (``--listen-metrics-urls``), on the member's loop.

It serves GET and HEAD of a fixed set of paths and nothing else, so a hand-written parser is
enough, and it is written to be safe against any bytes a client sends:

* a request head is bounded (:data:`MAX_HEAD_BYTES`); a longer one gets ``431`` and the
  connection is closed. A request line or header that does not parse gets ``400`` and a close;
  a request with a body (which GET/HEAD do not have) gets ``400`` and a close, since the stream
  can no longer be split; another method gets ``405``.
* requests on one connection are answered in order, one at a time (reading pauses while a
  handler waits, e.g. for a ReadIndex, and while the client does not read its answers);
  keep-alive as HTTP/1.1 says (``Connection: close`` and HTTP/1.0 close), and an idle
  connection is closed after :data:`IDLE_TIMEOUT`.
* connections are bounded (:data:`MAX_CONNECTIONS`); one more is closed at once.
* a handler that raises answers ``500`` (and is logged): nothing escapes into the loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

__all__ = ["HttpServer", "Response", "Route", "MAX_HEAD_BYTES"]

log = logging.getLogger("fastraft.http")

MAX_HEAD_BYTES = 8192
MAX_HEADERS = 64
MAX_CONNECTIONS = 128
IDLE_TIMEOUT = 30.0
LINGER = 2.0  # seconds to drop a client's input after refusing its request, then close

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}
# The blank line that ends a head; a bare LF is accepted as a line end too (RFC 9112 §2.2).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


# route(query) -> a Response now, or an awaitable of one (a check that waits for the cluster).
Route = Callable[[str], "Response | Awaitable[Response]"]


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass
class _Request:
    method: str
    path: str
    query: str
    keep_alive: bool


def _parse_head(head: bytes) -> _Request:
    """One request head (without the blank line). Raises _BadRequest."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, "malformed request line")
    method_b, target_b, version_b = parts
    if not method_b or not set(method_b) <= _TOKEN:
        raise _BadRequest(400, "malformed method")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _BadRequest(400, "unsupported HTTP version")
    try:
        target = target_b.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "non-ASCII request target") from None
    if not target or any(c <= " " or c == "\x7f" for c in target):
        raise _BadRequest(400, "malformed request target")
    if target.startswith(("http://", "https://")):  # absolute form: keep the path
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise _BadRequest(400, "malformed request target")
    path, _, query = target.partition("?")
    if len(lines) - 1 > MAX_HEADERS:
        raise _BadRequest(431, "too many header fields")
    conn_tokens: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise _BadRequest(400, "malformed header field")
        lname = name.lower()
        v = value.strip()
        if lname == b"content-length":
            if not v.isdigit() or int(v) != 0:
                raise _BadRequest(400, "a request body is not accepted")
        elif lname == b"transfer-encoding":
            raise _BadRequest(400, "a request body is not accepted")
        elif lname == b"connection":
            conn_tokens.update(t.strip().decode("latin-1").lower() for t in v.split(b","))
    if version_b == b"HTTP/1.1":
        keep_alive = "close" not in conn_tokens
    else:
        keep_alive = "keep-alive" in conn_tokens
    return _Request(method_b.decode("ascii"), path, query, keep_alive)


class _HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a handler is running; reading is paused
        self._idle: asyncio.TimerHandle | None = None
        self._draining = False  # answered an unparsable request: discard input, then close
        self._eof = False  # the client will send nothing more
        self._write_paused = False  # the client does not read its answers: stop reading too

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= MAX_CONNECTIONS:
            self.transport.close()
            return
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self._idle is not None:
            self._idle.cancel()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.server.loop.call_later(IDLE_TIMEOUT, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        self._buf += data
        self._arm_idle()
        self._serve()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._reading(False)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._reading(True)
        self._pump()

    def _pump(self) -> None:
        """Answer what is buffered; a client that half-closed is closed once all is answered."""
        self._serve()
        if self._eof and not (self._busy or self._write_paused or self._draining):
            self._close()

    def _reading(self, on: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if not on:
            t.pause_reading()
        elif not self._busy and not self._write_paused:
            t.resume_reading()

    def eof_received(self) -> bool | None:
        # A half-closed client still gets the answers to what it sent; then we close.
        self._eof = True
        if self._draining:
            self._close()
        else:
            self._pump()
        return True

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order, until one must wait."""
        while (self.transport is not None and not self._busy and not self._draining
               and not self._write_paused):
            if self._buf[:1] in (b"\r", b"\n"):
                # Empty lines before a request line are ignored (RFC 9112 §2.2).
                self._buf = bytearray(self._buf.lstrip(b"\r\n"))
            m = _HEAD_END.search(self._buf)
            if m is None:
                if len(self._buf) > MAX_HEAD_BYTES:
                    self._fail(431, "request head too large")
                return
            if m.start() > MAX_HEAD_BYTES:
                self._fail(431, "request head too large")
                return
            head = bytes(self._buf[:m.start()])
            del self._buf[:m.end()]
            try:
                req = _parse_head(head)
            except _BadRequest as e:
                self._fail(e.status, str(e))
                return
            if req.method not in ("GET", "HEAD"):
                self._write(req, Response(405, b"only GET and HEAD are served\n",
                                          headers={"Allow": "GET, HEAD"}))
                continue
            route = self.server.routes.get(req.path)
            if route is None:
                self._write(req, Response(404, b"not found\n"))
                continue
            try:
                res = route(req.query)
            except Exception:
                log.exception("http: %s %s failed", req.method, req.path)
                res = Response(500, b"internal error\n")
            if isinstance(res, Response):
                self._write(req, res)
                continue
            self._busy = True
            self._reading(False)
            task = self.server.loop.create_task(self._wait(req, res))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    async def _wait(self, req: _Request, pending: Awaitable[Response]) -> None:
        try:
            res = await pending
        except asyncio.CancelledError:
            self._close()
            raise
        except Exception:
            log.exception("http: %s %s failed", req.method, req.path)
            res = Response(500, b"internal error\n")
        self._busy = False
        if self.transport is None:
            return
        self._write(req, res)
        if self.transport is not None:
            self._reading(True)
            self._pump()

    def _write(self, req: _Request, res: Response) -> None:
        t = self.transport
        if t is None:
            return
        head = [f"HTTP/1.1 {res.status} {_REASONS.get(res.status, 'Unknown')}",
                f"Content-Type: {res.content_type}", f"Content-Length: {len(res.body)}"]
        head += [f"{k}: {v}" for k, v in res.headers.items()]
        if not req.keep_alive:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        t.write(data if req.method == "HEAD" else data + res.body)
        if not req.keep_alive:
            t.close()
            self.transport = None

    def _fail(self, status: int, why: str) -> None:
        """Answer a request we cannot parse, then close: the stream cannot be split any more.

        A lingering close: our side is shut after the answer, and what the client still sends
        is read and dropped for a moment; closing at once with unread input would send a
        reset, which can destroy the answer before the client reads it."""
        t = self.transport
        self._buf.clear()
        if t is None:
            return
        body = (why + "\n").encode()
        t.write((f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; "
                 f"charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                 ).encode("latin-1") + body)
        self._draining = True
        if t.can_write_eof():
            t.write_eof()
            if self._idle is not None:
                self._idle.cancel()
            self._idle = self.server.loop.call_later(LINGER, self._close)
        else:
            self._close()


class HttpServer:
    """Serves ``routes`` (path -> :data:`Route`) on one or more addresses."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.connections: set[_HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def addrs(self) -> list[tuple[str, int]]:
        """The bound (host, port) of every listening socket (port 0 resolved)."""
        return [s.getsockname()[:2] for srv in self._servers
                for s in cast(asyncio.Server, srv).sockets]

    async def start(self, addrs: list[tuple[str, int]]) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            for host, port in addrs:
                self._servers.append(await self._loop.create_server(
                    lambda: _HttpConnection(self), host, port, reuse_address=True))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for c in list(self.connections):
            c._close()
        for t in list(self.tasks):
            t.cancel()
        for s in self._servers:
            await s.wait_closed()
        self._servers = []
