"""Framing and the msgpack field checks shared by the peer and client codecs.

Every frame is a 4-byte big-endian unsigned length followed by a msgpack body. Decoders raise
:class:`WireError` (and nothing else) on malformed input, so a connection handler needs exactly
one ``except`` to survive a confused or hostile peer. This module imports no ``_core``: the
client codec (:mod:`fastraft.client.codec`) builds on it in a client-only install.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from fastraft.errors import BadRequestError, RequestTooLargeError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_PEER_FRAME",
    "U64_LIMIT",
    "WireError",
    "FrameTooLargeError",
    "frame",
    "FrameDecoder",
    "ask_one_frame",
    "pack",
    "unpack",
    "u64_field",
    "bool_field",
    "bytes_field",
    "list_field",
    "str_map_field",
]

U64_LIMIT = 1 << 64
# etcd's default --max-request-bytes: the largest client request (and value) a member accepts.
DEFAULT_MAX_REQUEST_BYTES = 1_572_864
# Peer frames carry batches of entries and whole snapshots, hence the much larger limit than a
# client request's; a client takes responses (large ranges) up to the same bound.
MAX_PEER_FRAME = 64 * 1024 * 1024
# The largest range answer a member builds (--max-response-bytes). The client reads frames up to
# MAX_PEER_FRAME; a range fails with RESPONSE_TOO_LARGE as soon as its scan passes this, so one
# `get --prefix` over a big store costs at most about this much, never the whole store (etcd,
# under gRPC's 2 GiB limit, builds the whole answer).
DEFAULT_MAX_RESPONSE_BYTES = 60 * 1024 * 1024
_LEN = struct.Struct(">I")


class WireError(BadRequestError):
    """malformed data on the wire"""

    def __init__(self, reason: str, req_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when the envelope was readable far enough to know which request to answer.
        self.req_id = req_id


class FrameTooLargeError(WireError):
    """a frame announced a length over the limit"""

    code = RequestTooLargeError.code

    def __init__(self, size: int, limit: int, frames: list[bytes] | None = None) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit
        # Complete frames that preceded the oversized one in the same read: still valid.
        self.frames = frames or []


# --------------------------------------------------------------------------------- framing


def frame(body: bytes) -> bytes:
    """Prefix ``body`` with its 4-byte big-endian length."""
    n = len(body)
    if n >= 1 << 32:
        raise WireError(f"frame body of {n} bytes cannot be framed")
    return _LEN.pack(n) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Work is linear in the bytes fed: when no partial frame is pending, frames are sliced straight
    out of the chunk just read; only a trailing partial frame is kept in a buffer, which grows by
    amortized appends (so a large frame arriving in many pieces is not copied again and again).
    """

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int) -> None:
        if max_frame < 0:
            raise ValueError("max_frame must be >= 0")
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return the bodies of all frames now complete, in order.

        Raises :class:`FrameTooLargeError` as soon as a length prefix over ``max_frame`` is seen
        (before its body arrives); the decoder is then unusable and the connection should close.
        """
        buf: bytes | bytearray | memoryview
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        end = len(buf)
        pos = 0
        frames: list[bytes] = []
        limit = self.max_frame
        with memoryview(buf) as mv:
            while end - pos >= 4:
                (n,) = _LEN.unpack_from(mv, pos)
                if n > limit:
                    self._buf = bytearray()
                    raise FrameTooLargeError(n, limit, frames)
                stop = pos + 4 + n
                if stop > end:
                    break
                frames.append(bytes(mv[pos + 4 : stop]))
                pos = stop
            if buf is self._buf:
                rest = None
            else:
                rest = bytes(mv[pos:]) if pos < end else b""
        if rest is None:
            if pos:
                # Deleting a prefix of a bytearray just moves its start pointer in CPython.
                del self._buf[:pos]
        elif rest:
            self._buf = bytearray(rest)
        return frames


async def ask_one_frame(addr: tuple[str, int], request: bytes, max_answer: int,
                        timeout: float, closed: str = "closed without answering") -> bytes:
    """Send ``request`` (framed already) on a new connection to ``addr`` and return the body of
    the first frame that comes back, within ``timeout`` seconds. Raises OSError (ConnectionError
    saying ``closed`` when the peer closes first), asyncio.TimeoutError or WireError."""
    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection(*addr)
        try:
            writer.write(request)
            dec = FrameDecoder(max_answer)
            for _ in range(10_000):  # bounded: the answer is one frame
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError(closed)
                bodies = dec.feed(data)
                if bodies:
                    return bodies[0]
            raise WireError("no complete answer")
        finally:
            writer.close()

    return await asyncio.wait_for(ask(), timeout)


# ---------------------------------------------------------------------------------- helpers


def unpack(body: bytes) -> Any:
    try:
        # strict_map_key: only str/bytes map keys, so a crafted map cannot smuggle in odd keys.
        return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises many types (ValueError, ExtraData, StackError...)
        raise WireError(f"invalid msgpack: {type(e).__name__}: {e}") from None


def pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise WireError(f"cannot encode: {e}") from None


def u64_field(v: Any, what: str) -> int:
    # bool is an int subclass; msgpack true/false must not pass for numbers.
    if type(v) is not int:
        raise WireError(f"{what} must be an integer, got {type(v).__name__}")
    if v < 0 or v >= U64_LIMIT:
        raise WireError(f"{what} out of range: {v}")
    return v


def bool_field(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise WireError(f"{what} must be a boolean, got {type(v).__name__}")
    return v


def bytes_field(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise WireError(f"{what} must be bytes, got {type(v).__name__}")
    return v


def list_field(v: Any, what: str, arity: int | None = None) -> list:
    if type(v) is not list:
        raise WireError(f"{what} must be an array, got {type(v).__name__}")
    if arity is not None and len(v) != arity:
        raise WireError(f"{what} must have {arity} elements, got {len(v)}")
    return v


def str_map_field(v: Any, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise WireError(f"{what} must be a map, got {type(v).__name__}")
    for k in v:
        if type(k) is not str:
            raise WireError(f"{what} keys must be strings")
    return v


