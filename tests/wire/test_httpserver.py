"""net/httpserver.py on 127.0.0.1: what it answers, and that no client bytes can break it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from fastraft.net.httpserver import MAX_HEAD_BYTES, HttpServer, Response, Route


async def _slow(query: str) -> Response:
    await asyncio.sleep(0.05)
    return Response(200, b"slow " + query.encode())


def _boom(query: str) -> Response:
    raise RuntimeError("handler bug")


BIG = 256 * 1024
ROUTES: dict[str, Route] = {"/a": lambda q: Response(200, b"A " + q.encode()),
                            "/slow": _slow, "/boom": _boom,
                            "/big": lambda q: Response(200, b"x" * BIG)}


def _run(test: Callable[[tuple[str, int]], Awaitable[None]],
         server: list[HttpServer] | None = None) -> None:
    async def main() -> None:
        srv = HttpServer(dict(ROUTES))
        if server is not None:
            server.append(srv)
        await srv.start([("127.0.0.1", 0)])
        try:
            await test(srv.addrs[0])
        finally:
            await srv.stop()
    asyncio.run(asyncio.wait_for(main(), 20))


async def _exchange(addr: tuple[str, int], data: bytes, eof: bool = False) -> bytes:
    """Send ``data`` (then half-close if ``eof``), read until the server closes (or 2 s of
    silence)."""
    r, w = await asyncio.open_connection(*addr)
    w.write(data)
    if eof:
        w.write_eof()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), 2)
            if not chunk:
                break
            out += chunk
    except (asyncio.TimeoutError, ConnectionResetError):
        pass
    w.close()
    return out


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw bytes into (status, headers, body) by Content-Length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers["content-length"])
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


def test_get_head_404_405_and_query_strings() -> None:
    async def t(addr: tuple[str, int]) -> None:
        raw = await _exchange(addr, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                                    b"HEAD /a HTTP/1.1\r\n\r\n"
                                    b"GET /missing HTTP/1.1\r\n\r\n"
                                    b"POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                                    b"GET http://example.invalid/a?y HTTP/1.1\r\n"
                                    b"Connection: close\r\n\r\n")
        # HEAD's answer has a Content-Length but no body: parse it apart.
        first, rest = raw.split(b"\r\n\r\n", 1)
        assert first.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"A x=1")
        rest = rest[len(b"A x=1"):]
        head2, rest = rest.split(b"\r\n\r\n", 1)
        assert head2.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 2" in head2
        rs = _responses(rest)
        assert [r[0] for r in rs] == [404, 405, 200]
        assert rs[1][1]["allow"] == "GET, HEAD"
        assert rs[2][2] == b"A y" and rs[2][1]["connection"] == "close"
    _run(t)


def test_keep_alive_answers_pipelined_requests_in_order_even_when_one_waits() -> None:
    async def t(addr: tuple[str, int]) -> None:
        raw = await _exchange(addr, b"GET /slow?1 HTTP/1.1\r\n\r\nGET /a?2 HTTP/1.1\r\n\r\n"
                                    b"GET /slow?3 HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert [r[2] for r in _responses(raw)] == [b"slow 1", b"A 2", b"slow 3"]
    _run(t)


def test_http10_closes_bare_lf_and_leading_blank_lines_are_accepted() -> None:
    async def t(addr: tuple[str, int]) -> None:
        raw = await _exchange(addr, b"\r\nGET /a HTTP/1.0\n\n")
        rs = _responses(raw)
        assert [r[0] for r in rs] == [200] and rs[0][1]["connection"] == "close"
    _run(t)


def test_malformed_requests_get_400_or_431_and_a_close() -> None:
    bad = {b"\x00\xff\xfe garbage\r\n\r\n": 400, b"GET /a\r\n\r\n": 400,
           b"GET /a HTTP/2.0\r\n\r\n": 400, b"GET a HTTP/1.1\r\n\r\n": 400,
           b"G(T /a HTTP/1.1\r\n\r\n": 400, b"GET /\xff HTTP/1.1\r\n\r\n": 400,
           b"GET /a HTTP/1.1\r\nno colon\r\n\r\n": 400,
           b"GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc": 400,
           b"GET /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n": 400,
           b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 400,
           b"GET /a HTTP/1.1\r\nX: " + b"y" * (4 * MAX_HEAD_BYTES) + b"\r\n\r\n": 431,
           b"GET /a HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n": 431,
           b"GET /" + b"a" * (2 * MAX_HEAD_BYTES): 431}

    async def t(addr: tuple[str, int]) -> None:
        for req, want in bad.items():
            raw = await _exchange(addr, req)
            rs = _responses(raw)
            assert [r[0] for r in rs] == [want], (req[:40], raw[:80])
            assert rs[0][1]["connection"] == "close"
        # The server is still there.
        assert _responses(await _exchange(addr, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
                                          ))[0][0] == 200
    _run(t)


def test_a_half_closed_client_gets_its_answers_then_a_close() -> None:
    async def t(addr: tuple[str, int]) -> None:
        raw = await _exchange(addr, b"GET /slow?1 HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
                              eof=True)
        assert [r[2] for r in _responses(raw)] == [b"slow 1", b"A "]
    _run(t)


def test_a_failing_handler_answers_500_and_the_connection_goes_on() -> None:
    async def t(addr: tuple[str, int]) -> None:
        raw = await _exchange(addr, b"GET /boom HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n"
                                    b"Connection: close\r\n\r\n")
        assert [r[0] for r in _responses(raw)] == [500, 200]
    _run(t)


def test_random_bytes_never_break_the_server() -> None:
    rng = random.Random(1313)
    alphabet = b"GETHPOS /:\r\n\t1.0aA?=\x00\xff"

    async def t(addr: tuple[str, int]) -> None:
        for _ in range(150):
            n = rng.randrange(1, 300)
            data = bytes(rng.choice(alphabet) for _ in range(n))
            if rng.random() < 0.5:
                data += b"\r\n\r\n"
            raw = await _exchange(addr, data, eof=True)
            # Whatever came back is well-formed HTTP (or nothing: an incomplete head).
            for status, _, _ in _responses(raw):
                assert status in (200, 400, 404, 405, 431)
        assert _responses(await _exchange(addr, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
                                          ))[0][0] == 200
    _run(t)


def test_a_client_that_does_not_read_its_answers_is_not_buffered_for_without_bound() -> None:
    srv: list[HttpServer] = []
    n = 40  # 10 MiB of answers asked for at once

    async def t(addr: tuple[str, int]) -> None:
        r, w = await asyncio.open_connection(*addr)
        w.write(b"GET /big HTTP/1.1\r\n\r\n" * (n - 1)
                + b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.3)  # not reading: the server must stop producing answers
        (conn,) = srv[0].connections
        assert conn.transport is not None, "it wrote every answer while the client read none"
        assert conn.transport.get_write_buffer_size() < 4 * BIG
        got = 0
        while True:
            chunk = await asyncio.wait_for(r.read(1 << 20), 5)
            if not chunk:
                break
            got += chunk.count(b"HTTP/1.1 200 OK")
        w.close()
        assert got == n  # and once it reads, it gets every answer
    _run(t, srv)
