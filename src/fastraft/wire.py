"""What goes on the wire: framing, peer messages, client requests and responses.

Every frame is a 4-byte big-endian unsigned length followed by a msgpack body. The ``encode_*``
functions return the *body*; wrap it with :func:`frame` before writing. The ``decode_*``
functions take a body and raise :class:`WireError` (and nothing else) on any malformed input, so a
connection handler needs exactly one ``except`` to survive a confused or hostile peer.

Layouts (msgpack arrays, chosen over maps because they are smaller and faster to build):

* peer message: ``[type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
  snapshot, context]``; an entry is ``[index, term, type, data]``; a snapshot is
  ``[index, term, voters, learners, data]`` or nil.
* peer hello (first frame of a peer connection): ``["fastraft-peer", 1, cluster_id, member_id]``.
  A hello with cluster_id 0 is a *join query* from a member starting with an empty data dir and
  ``--initial-cluster-state existing``: the receiver answers with one frame
  ``["fastraft-join", 1, cluster_id, members]`` (members: hex id -> {name, peer_urls,
  client_urls, is_learner}) and closes the connection.
* client request: ``[req_id, op, args]``; response: ``[req_id, error | nil, result]`` with
  ``error = [code, message, extra]`` (see docs/architecture.md).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from fastraft._core import Message
from fastraft.errors import BadRequestError, FastraftError, RequestTooLargeError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "CLIENT_ENVELOPE_BYTES",
    "DEFAULT_MAX_CLIENT_FRAME",
    "MAX_PEER_FRAME",
    "WireError",
    "FrameTooLargeError",
    "frame",
    "FrameDecoder",
    "encode_message",
    "decode_message",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "encode_hello",
    "decode_hello",
    "encode_join_answer",
    "decode_join_answer",
    "make_snapshot",
]

# etcd's default --max-request-bytes; client frames get room for the envelope on top.
DEFAULT_MAX_REQUEST_BYTES = 1_572_864
CLIENT_ENVELOPE_BYTES = 1024
DEFAULT_MAX_CLIENT_FRAME = DEFAULT_MAX_REQUEST_BYTES + CLIENT_ENVELOPE_BYTES
# Peer frames carry batches of entries and whole snapshots, hence the much larger limit.
MAX_PEER_FRAME = 64 * 1024 * 1024

_U64_LIMIT = 1 << 64
_MSG_TYPES = frozenset(range(1, 13))  # MsgApp .. MsgReadIndexResp (docs/architecture.md)
_ENTRY_TYPES = frozenset((0, 1))  # ENTRY_NORMAL, ENTRY_CONF_CHANGE
_HELLO_MAGIC = "fastraft-peer"
_HELLO_VERSION = 1
_JOIN_MAGIC = "fastraft-join"
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


# ---------------------------------------------------------------------------------- helpers


def _unpack(body: bytes) -> Any:
    try:
        # strict_map_key: only str/bytes map keys, so a crafted map cannot smuggle in odd keys.
        return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises many types (ValueError, ExtraData, StackError...)
        raise WireError(f"invalid msgpack: {type(e).__name__}: {e}") from None


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise WireError(f"cannot encode: {e}") from None


def _u64(v: Any, what: str) -> int:
    # bool is an int subclass; msgpack true/false must not pass for numbers.
    if type(v) is not int:
        raise WireError(f"{what} must be an integer, got {type(v).__name__}")
    if v < 0 or v >= _U64_LIMIT:
        raise WireError(f"{what} out of range: {v}")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise WireError(f"{what} must be a boolean, got {type(v).__name__}")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise WireError(f"{what} must be bytes, got {type(v).__name__}")
    return v


def _list(v: Any, what: str, arity: int | None = None) -> list:
    if type(v) is not list:
        raise WireError(f"{what} must be an array, got {type(v).__name__}")
    if arity is not None and len(v) != arity:
        raise WireError(f"{what} must have {arity} elements, got {len(v)}")
    return v


def _str_map(v: Any, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise WireError(f"{what} must be a map, got {type(v).__name__}")
    for k in v:
        if type(k) is not str:
            raise WireError(f"{what} keys must be strings")
    return v


# -------------------------------------------------------------------------------- snapshots

_snapshot_cls: Any = None


def make_snapshot(index: int, term: int, voters: tuple, learners: tuple, data: bytes | None) -> Any:
    """Build ``fastraft.raft.Snapshot`` if raft.py is importable, else a plain 5-tuple."""
    global _snapshot_cls
    if _snapshot_cls is None:
        try:
            from fastraft.raft import Snapshot  # lazy: raft.py imports us indirectly via node
        except ModuleNotFoundError as e:
            if e.name != "fastraft.raft":
                raise
            _snapshot_cls = tuple
        else:
            _snapshot_cls = Snapshot
    if _snapshot_cls is tuple:
        return (index, term, voters, learners, data)
    return _snapshot_cls(index, term, voters, learners, data)


def _snapshot_fields(s: Any) -> tuple:
    if isinstance(s, tuple):
        if len(s) != 5:
            raise WireError("snapshot tuple must have 5 fields")
        return s
    return (s.index, s.term, s.voters, s.learners, s.data)


def _decode_snapshot(v: Any) -> Any:
    if v is None:
        return None
    f = _list(v, "snapshot", 5)
    voters = tuple(_u64(x, "snapshot voter") for x in _list(f[2], "snapshot voters"))
    learners = tuple(_u64(x, "snapshot learner") for x in _list(f[3], "snapshot learners"))
    data = f[4]
    if data is not None:
        _bytes(data, "snapshot data")
    return make_snapshot(_u64(f[0], "snapshot index"), _u64(f[1], "snapshot term"),
                         voters, learners, data)


# ---------------------------------------------------------------------------- peer messages


def encode_message(m: Message) -> bytes:
    """Encode one Raft message (body only; see :func:`frame`)."""
    snap = m.snapshot
    if snap is not None:
        idx, term, voters, learners, data = _snapshot_fields(snap)
        snap = [idx, term, list(voters), list(learners), data]
    return _pack([
        m.type, m.to, m.frm, m.term, m.log_term, m.index,
        [list(e) for e in m.entries],
        m.commit, m.reject, m.reject_hint, snap, m.context,
    ])


def decode_message(body: bytes) -> Message:
    """Decode a peer message; raises :class:`WireError` on anything malformed."""
    f = _list(_unpack(body), "message", 12)
    mtype = _u64(f[0], "message type")
    if mtype not in _MSG_TYPES:
        raise WireError(f"unknown message type {mtype}")
    entries = []
    for e in _list(f[6], "entries"):
        e = _list(e, "entry", 4)
        etype = _u64(e[2], "entry type")
        if etype not in _ENTRY_TYPES:
            raise WireError(f"unknown entry type {etype}")
        entries.append((_u64(e[0], "entry index"), _u64(e[1], "entry term"), etype,
                        _bytes(e[3], "entry data")))
    return Message(
        type=mtype,
        to=_u64(f[1], "to"),
        frm=_u64(f[2], "frm"),
        term=_u64(f[3], "term"),
        log_term=_u64(f[4], "log_term"),
        index=_u64(f[5], "index"),
        entries=entries,
        commit=_u64(f[7], "commit"),
        reject=_bool(f[8], "reject"),
        reject_hint=_u64(f[9], "reject_hint"),
        snapshot=_decode_snapshot(f[10]),
        context=_bytes(f[11], "context"),
    )


def encode_hello(cluster_id: int, member_id: int) -> bytes:
    """The first frame a peer sends on a connection: who it is and which cluster it belongs to."""
    _u64(cluster_id, "cluster_id")
    _u64(member_id, "member_id")
    return _pack([_HELLO_MAGIC, _HELLO_VERSION, cluster_id, member_id])


def decode_hello(body: bytes) -> tuple[int, int]:
    """Return ``(cluster_id, member_id)`` from a hello frame."""
    f = _list(_unpack(body), "hello", 4)
    if f[0] != _HELLO_MAGIC:
        raise WireError("not a fastraft peer hello")
    if f[1] != _HELLO_VERSION or type(f[1]) is not int:
        raise WireError(f"unsupported peer protocol version {f[1]!r}")
    return _u64(f[2], "cluster_id"), _u64(f[3], "member_id")


def encode_join_answer(cluster_id: int, members: dict[str, dict[str, Any]]) -> bytes:
    """The answer to a join query (a hello with cluster_id 0): the cluster id and members."""
    _u64(cluster_id, "cluster_id")
    return _pack([_JOIN_MAGIC, _HELLO_VERSION, cluster_id, members])


def decode_join_answer(body: bytes) -> tuple[int, dict[str, dict[str, Any]]]:
    """Return ``(cluster_id, members)``; members are checked for shape."""
    f = _list(_unpack(body), "join answer", 4)
    if f[0] != _JOIN_MAGIC:
        raise WireError("not a fastraft join answer")
    if f[1] != _HELLO_VERSION or type(f[1]) is not int:
        raise WireError(f"unsupported join protocol version {f[1]!r}")
    cid = _u64(f[2], "cluster_id")
    members = _str_map(f[3], "members")
    out: dict[str, dict[str, Any]] = {}
    for h, m in members.items():
        try:
            mid = int(h, 16)
        except ValueError:
            raise WireError(f"member id {h!r} is not hex") from None
        m = _str_map(m, "member")
        urls = _list(m.get("peer_urls", []), "peer_urls")
        curls = _list(m.get("client_urls", []), "client_urls")
        if not all(type(u) is str for u in urls + curls) or type(m.get("name", "")) is not str:
            raise WireError("member names and URLs must be strings")
        out[format(mid, "x")] = {"name": m.get("name", ""), "peer_urls": list(urls),
                                 "client_urls": list(curls),
                                 "is_learner": _bool(m.get("is_learner", False), "is_learner")}
    return cid, out


# ------------------------------------------------------------------------- client protocol


def encode_request(req_id: int, op: str, args: dict[str, Any]) -> bytes:
    """Encode a client request ``[req_id, op, args]`` (body only)."""
    _u64(req_id, "request id")
    if type(op) is not str:
        raise WireError("op must be a string")
    return _pack([req_id, op, _str_map(args, "args")])


def decode_request(body: bytes) -> tuple[int, str, dict[str, Any]]:
    """Validate the envelope of a client request and return ``(req_id, op, args)``.

    Only the envelope is checked here; the server checks each op's arguments. When the request
    id was readable, the raised :class:`WireError` carries it in ``req_id`` so the server can
    still answer ``BAD_REQUEST`` to the right request.
    """
    obj = _unpack(body)
    if type(obj) is list and len(obj) >= 1 and type(obj[0]) is int and 0 <= obj[0] < _U64_LIMIT:
        req_id: int | None = obj[0]
    else:
        req_id = None
    try:
        f = _list(obj, "request", 3)
        _u64(f[0], "request id")
        if type(f[1]) is not str:
            raise WireError("op must be a string")
        args = _str_map(f[2], "args")
    except WireError as e:
        e.req_id = req_id
        raise
    return f[0], f[1], args


def _error_triple(error: Any) -> list | None:
    if error is None:
        return None
    if isinstance(error, FastraftError):
        extra = {str(k): v for k, v in error.extra.items()}
        return [error.code, error.message, extra]
    code, message, extra = error
    return [str(code), str(message), dict(extra or {})]


def encode_response(req_id: int, error: Any, result: dict[str, Any] | None) -> bytes:
    """Encode ``[req_id, error, result]``.

    ``error`` is None, a ``(code, message, extra)`` triple or a :class:`FastraftError`.
    """
    _u64(req_id, "request id")
    return _pack([req_id, _error_triple(error), result if result is not None else {}])


def decode_response(body: bytes) -> tuple[int, tuple[str, str, dict] | None, dict[str, Any]]:
    """Return ``(req_id, error, result)``; ``error`` is None or ``(code, message, extra)``."""
    f = _list(_unpack(body), "response", 3)
    req_id = _u64(f[0], "request id")
    err = f[1]
    error: tuple[str, str, dict] | None = None
    if err is not None:
        e = _list(err, "error", 3)
        if type(e[0]) is not str or type(e[1]) is not str:
            raise WireError("error code and message must be strings")
        error = (e[0], e[1], _str_map(e[2], "error extra"))
    result = f[2]
    if result is None:
        result = {}
    return req_id, error, _str_map(result, "result")
