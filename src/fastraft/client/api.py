"""fastraft client library: :class:`Client` (blocking sockets) and :class:`AsyncClient` (asyncio).

Both speak the client protocol of docs/architecture.md and share one retry policy:

* **Leader discovery.** A member that is not the leader answers ``NOT_LEADER`` with the leader's
  client URLs; the client goes there next (and remembers it). Without a hint, or when an
  endpoint refuses the connection, it tries the next endpoint.
* **Unreachable endpoints.** A partition drops packets: a connect to a cut-off member is not
  refused, it never answers. So a connect has its own bound (``connect_timeout``, well below the
  call's), and when one endpoint has not answered within a short stagger the next is dialled
  beside it ("happy eyeballs", RFC 8305): the first to connect serves the call. An endpoint whose
  connect or request timed out goes to the back of the order for a while (its leader hints are
  not followed meanwhile), so the calls that follow go straight to members that answer.
* **Reads** are retried across endpoints until the call's deadline (``timeout``, 5 s by default):
  reading twice is harmless. One attempt waits at most ``request_timeout`` (a third of the
  call's by default) before the read is asked elsewhere. A sent write waits until the call's
  deadline, or ``request_timeout`` when one is given (then: outcome unknown, below).
* **Writes** (put, delete, txn, compact) are retried *only* when the cluster said they were not
  applied (``NOT_LEADER``, ``NO_LEADER``, ``NOT_COMMITTED``, ``STOPPING``) or when no connection
  could be made so nothing was sent (a connect that never completed sent nothing, so the write
  is tried on another endpoint). If a write was sent and no answer came (deadline passed,
  connection lost), the client raises :class:`fastraft.TimeoutError`: the write may or may not
  have been applied, and retrying blindly could apply it twice. Read the key back (or use a
  txn compare) to find out.
* **Lease reads** refused for a reason that passes by itself (a transfer, a new leader before
  its first acknowledged heartbeat round) come with ``retry_ms``: the same member is asked again
  after that pause, until the call's deadline. An expired lease is raised at once.
* Server errors become the matching exception of :mod:`fastraft.errors`.
* **Watch** (``Client.watch`` / ``AsyncClient.watch``) runs on a connection of its own, against
  the first endpoint that answers (any member serves it from its applied state) and is never
  moved: when that member goes away, iterating raises :class:`WatchLostError`; watch again from
  its ``resume_revision`` (the last seen event's revision + 1) to continue without gaps.

Keys and values may be ``str`` (encoded as UTF-8) or ``bytes``; results always hold ``bytes``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from fastraft.client import snapfile
from fastraft.client.codec import decode_response, encode_request
from fastraft.config import parse_url
from fastraft.errors import (
    BadRequestError,
    CompactedError,
    FastraftError,
    LeaseUnavailableError,
    NoLeaderError,
    TimeoutError,
    UnavailableError,
    WatchCanceledError,
    WatchLostError,
    error_from_code,
)
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, WireError, frame

__all__ = [
    "Client",
    "AsyncClient",
    "KeyValue",
    "Header",
    "PutResult",
    "GetResult",
    "DeleteResult",
    "TxnResult",
    "Member",
    "MemberChange",
    "Compare",
    "Op",
    "parse_endpoint",
    "prefix_range_end",
    "Watch",
    "AsyncWatch",
    "WatchEvent",
    "SnapshotSaved",
]

DEFAULT_TIMEOUT = 5.0
# Responses may carry large ranges; they come from a server we chose to trust, so the peer limit.
MAX_RESPONSE_FRAME = MAX_PEER_FRAME
# Codes that guarantee a write was not applied, so it is safe to send it again (a stopping
# member answers STOPPING only for writes it never proposed; one it had proposed gets TIMEOUT).
_RETRY_WRITE = frozenset({"NOT_LEADER", "NO_LEADER", "NOT_COMMITTED", "STOPPING"})
# Codes after which a read may be tried again, possibly elsewhere.
_RETRY_READ = _RETRY_WRITE | {"TIMEOUT"}
# The longest pause a server may ask for before a lease read is asked again (its heartbeat
# interval; etcd's longest recommended is a few hundred ms).
_LEASE_RETRY_MAX_MS = 1000
# Pause between rounds over all endpoints, so a cluster mid-election is not hammered (a round
# is one cheap answer per member); short, because the time from a new leader's election to the
# call finding it is added to every failover a client sees (etcd's client retries every 25 ms).
_ROUND_PAUSE_MIN = 0.025
_ROUND_PAUSE_MAX = 0.05
# A connect's own bound, at most this share of the call's time: one unanswered endpoint must
# leave time for the others.
DEFAULT_CONNECT_TIMEOUT = 1.0
_CONNECT_SHARE = 1 / 3
# How long a connect may go unanswered before the next endpoint is dialled beside it (RFC 8305
# suggests 250 ms on the open internet; a cluster's members are closer than that).
_DIAL_STAGGER = 0.1
# How long an endpoint that timed out stays at the back of the order.
_SLOW_PENALTY = 5.0

Endpoint = tuple[str, int]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0
    # Serializable and bounded reads: seconds since the answering member last heard from a
    # leader (0 on a leader a quorum confirmed within an election timeout); None otherwise.
    contact_age: float | None = None


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class GetResult:
    header: Header
    kvs: list[KeyValue] = field(default_factory=list)
    count: int = 0
    more: bool = False


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int = 0
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TxnResult:
    header: Header
    succeeded: bool
    responses: list[PutResult | GetResult | DeleteResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool


@dataclass(frozen=True, slots=True)
class MemberChange:
    """The result of member_add/remove/promote: the member added (None for the others) and the
    member list once the change is applied."""
    header: Header
    member: Member | None
    members: list[Member]
    cluster_token: str = ""  # member_add only: the new member's --initial-cluster-token


def _malformed(what: str, e: Exception) -> FastraftError:
    return FastraftError(f"malformed {what} in server response: {type(e).__name__}: {e}")


def _header(m: Any) -> Header:
    m = m or {}
    age = m.get("contact_age_ms")
    return Header(int(m.get("cluster_id", 0)), int(m.get("member_id", 0)),
                  int(m.get("revision", 0)), int(m.get("raft_term", 0)),
                  None if age is None else float(age) / 1000.0)


def _kv(m: dict[str, Any]) -> KeyValue:
    return KeyValue(bytes(m["key"]), bytes(m.get("value", b"")), int(m.get("create_revision", 0)),
                    int(m.get("mod_revision", 0)), int(m.get("version", 0)),
                    int(m.get("lease", 0)))


def _put_result(r: dict[str, Any]) -> PutResult:
    pk = r.get("prev_kv")
    return PutResult(_header(r.get("header")), _kv(pk) if pk else None)


def _get_result(r: dict[str, Any]) -> GetResult:
    kvs = [_kv(x) for x in r.get("kvs") or []]
    return GetResult(_header(r.get("header")), kvs, int(r.get("count", len(kvs))),
                     bool(r.get("more", False)))


def _delete_result(r: dict[str, Any]) -> DeleteResult:
    return DeleteResult(_header(r.get("header")), int(r.get("deleted", 0)),
                        [_kv(x) for x in r.get("prev_kvs") or []])


_BY_OP: dict[str, Callable[[Any], PutResult | GetResult | DeleteResult]] = {
    "put": _put_result, "range": _get_result, "delete": _delete_result}


def _txn_response(item: Any) -> PutResult | GetResult | DeleteResult:
    # Accept [op, result] (mirrors the request's [op, args]) or a bare result map.
    if isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in _BY_OP:
        return _BY_OP[item[0]](item[1])
    if "kvs" in item or "count" in item:
        return _get_result(item)
    if "deleted" in item:
        return _delete_result(item)
    return _put_result(item)


def _txn_result(r: dict[str, Any]) -> TxnResult:
    return TxnResult(_header(r.get("header")), bool(r.get("succeeded", False)),
                     [_txn_response(x) for x in r.get("responses") or []])


def _members(r: dict[str, Any]) -> list[Member]:
    return [Member(int(m["id"]) if not isinstance(m["id"], str) else int(m["id"], 16),
                   str(m.get("name", "")), list(m.get("peer_urls") or []),
                   list(m.get("client_urls") or []), bool(m.get("is_learner", False)))
            for m in r.get("members") or []]


def _member_change(r: dict[str, Any]) -> MemberChange:
    m = r.get("member")
    return MemberChange(_header(r.get("header")), _members({"members": [m]})[0] if m else None,
                        _members(r), str(r.get("cluster_token", "")))


def _member_add_args(name: str, peer_urls: list[str] | str, learner: bool) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise ValueError("member name must be a non-empty string")
    urls = [u.strip() for u in peer_urls.split(",")] if isinstance(peer_urls, str) else peer_urls
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise ValueError("peer_urls must be a non-empty list of URLs (or a comma-separated str)")
    if type(learner) is not bool:
        raise ValueError("learner must be a bool")
    return {"name": name, "peer_urls": urls, "learner": learner}


def _member_id_arg(member_id: int | str) -> dict[str, Any]:
    """An id as an int or as the hex string `member list` prints."""
    if isinstance(member_id, str):
        try:
            member_id = int(member_id, 16)
        except ValueError:
            raise ValueError(f"member id {member_id!r} is not hexadecimal") from None
    if type(member_id) is not int or not 0 < member_id < 1 << 64:
        raise ValueError(f"member id must be a positive 64-bit integer, got {member_id!r}")
    return {"id": member_id}


def _parse(what: str, fn: Any, r: dict[str, Any]) -> Any:
    try:
        return fn(r)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _malformed(what, e) from None


# ----------------------------------------------------------------------- request building


def _b(v: str | bytes, what: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    raise TypeError(f"{what} must be str or bytes, not {type(v).__name__}")


def _key(k: str | bytes) -> bytes:
    kb = _b(k, "key")
    if not kb:
        raise BadRequestError("key is not provided (an empty key is only valid with prefix=True)")
    return kb


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all keys: the prefix was empty or all 0xff


def _range(key: str | bytes, range_end: str | bytes | None, prefix: bool) -> tuple[bytes, bytes]:
    if prefix:
        if range_end is not None:
            raise BadRequestError("use either prefix or range_end, not both")
        kb = _b(key, "key")
        if not kb:
            return b"\0", b"\0"  # an empty prefix means every key (etcd does the same)
        return kb, prefix_range_end(kb)
    return _key(key), b"" if range_end is None else _b(range_end, "range_end")


def _nonneg(v: int, what: str) -> int:
    if type(v) is not int or v < 0:
        raise BadRequestError(f"{what} must be a non-negative integer, got {v!r}")
    return v


def _put_args(key: str | bytes, value: str | bytes, prev_kv: bool, lease: int) -> dict[str, Any]:
    return {"key": _key(key), "value": _b(value, "value"), "prev_kv": bool(prev_kv),
            "lease": _nonneg(lease, "lease")}


# Read levels (README, "Read levels"); etcdctl's short names too.
READ_LEVELS = {"linearizable": "linearizable", "l": "linearizable", "lease": "lease",
               "serializable": "serializable", "s": "serializable", "bounded": "bounded"}
Consistency = Literal["linearizable", "l", "lease", "serializable", "s", "bounded"]


def _level_args(consistency: str, max_staleness: float | None) -> dict[str, Any]:
    """The wire fields of a read level. Linearizable and serializable keep the old
    ``serializable`` flag, so they work against servers that predate read levels."""
    level = READ_LEVELS.get(consistency) if isinstance(consistency, str) else None
    if level is None:
        raise BadRequestError(f"consistency must be one of linearizable (l), lease, "
                              f"serializable (s), bounded; got {consistency!r}")
    if level != "bounded":
        if max_staleness is not None:
            raise BadRequestError(f"max_staleness applies to consistency='bounded' only, "
                                  f"not {level!r}")
        if level == "lease":
            return {"consistency": "lease"}
        return {"serializable": level == "serializable"}
    if (max_staleness is None or isinstance(max_staleness, bool)
            or not isinstance(max_staleness, (int, float)) or not math.isfinite(max_staleness)
            or max_staleness <= 0):
        raise BadRequestError(f"consistency='bounded' needs max_staleness, a number of seconds "
                              f"> 0; got {max_staleness!r}")
    return {"consistency": "bounded", "max_staleness_ms": float(max_staleness) * 1000.0}


def _range_args(key: str | bytes, range_end: str | bytes | None, prefix: bool, limit: int,
                revision: int, keys_only: bool, count_only: bool,
                consistency: str, max_staleness: float | None = None,
                exact_count: bool = True) -> dict[str, Any]:
    level = _level_args(consistency, max_staleness)
    k, end = _range(key, range_end, prefix)
    args = {"key": k, "range_end": end, "limit": _nonneg(limit, "limit"),
            "revision": _nonneg(revision, "revision"), "keys_only": bool(keys_only),
            "count_only": bool(count_only), **level}
    if not exact_count:
        args["exact_count"] = False  # sent only when asked: older members refuse unknown args
    return args


def _delete_args(key: str | bytes, range_end: str | bytes | None, prefix: bool,
                 prev_kv: bool) -> dict[str, Any]:
    k, end = _range(key, range_end, prefix)
    return {"key": k, "range_end": end, "prev_kv": bool(prev_kv)}


_CMP_RESULTS = ("=", "!=", ">", "<")


@dataclass(frozen=True, slots=True)
class Compare:
    """One txn condition; build with ``Compare.value(key, "=", b"v")`` and friends."""

    target: str  # "value" | "version" | "create" | "mod"
    result: str  # "=" | "!=" | ">" | "<"
    key: bytes
    operand: bytes | int  # what the target is compared with (not named "value": a builder is)
    range_end: bytes = b""

    @staticmethod
    def _make(target: str, key: str | bytes, result: str, value: Any,
              range_end: str | bytes | None) -> Compare:
        if result not in _CMP_RESULTS:
            raise BadRequestError(f"compare result must be one of {', '.join(_CMP_RESULTS)}, "
                                  f"got {result!r}")
        end = b"" if range_end is None else _b(range_end, "range_end")
        return Compare(target, result, _key(key), value, end)

    @staticmethod
    def value(key: str | bytes, result: str, value: str | bytes,
              range_end: str | bytes | None = None) -> Compare:
        return Compare._make("value", key, result, _b(value, "value"), range_end)

    @staticmethod
    def version(key: str | bytes, result: str, version: int,
                range_end: str | bytes | None = None) -> Compare:
        return Compare._make("version", key, result, _nonneg(version, "version"), range_end)

    @staticmethod
    def create(key: str | bytes, result: str, revision: int,
               range_end: str | bytes | None = None) -> Compare:
        return Compare._make("create", key, result, _nonneg(revision, "revision"), range_end)

    @staticmethod
    def mod(key: str | bytes, result: str, revision: int,
            range_end: str | bytes | None = None) -> Compare:
        return Compare._make("mod", key, result, _nonneg(revision, "revision"), range_end)

    def to_wire(self) -> list[Any]:
        return [self.target, self.result, self.key, self.range_end, self.operand]


@dataclass(frozen=True, slots=True)
class Op:
    """One txn operation; build with ``Op.put``, ``Op.get`` or ``Op.delete``."""

    op: str
    args: dict[str, Any]

    @staticmethod
    def put(key: str | bytes, value: str | bytes, *, prev_kv: bool = False, lease: int = 0) -> Op:
        return Op("put", _put_args(key, value, prev_kv, lease))

    @staticmethod
    def get(key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False,
            limit: int = 0, revision: int = 0, keys_only: bool = False,
            count_only: bool = False) -> Op:
        # Inside a txn the read happens at the txn's own point in the log: always linearizable.
        return Op("range", _range_args(key, range_end, prefix, limit, revision, keys_only,
                                       count_only, "linearizable"))

    @staticmethod
    def delete(key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False,
               prev_kv: bool = False) -> Op:
        return Op("delete", _delete_args(key, range_end, prefix, prev_kv))

    def to_wire(self) -> list[Any]:
        return [self.op, self.args]


def _txn_args(compare: list[Compare], success: list[Op], failure: list[Op]) -> dict[str, Any]:
    for c in compare:
        if not isinstance(c, Compare):
            raise TypeError(f"txn compare items must be Compare, not {type(c).__name__}")
    for o in [*success, *failure]:
        if not isinstance(o, Op):
            raise TypeError(f"txn ops must be Op, not {type(o).__name__}")
    return {"compare": [c.to_wire() for c in compare], "success": [o.to_wire() for o in success],
            "failure": [o.to_wire() for o in failure]}


# ----------------------------------------------------------------------------- endpoints


def parse_endpoint(ep: str) -> Endpoint:
    """``host:port``, ``http://host:port`` or ``[::1]:port`` to ``(host, port)``."""
    try:
        return parse_url(ep)
    except ValueError as e:
        raise ValueError(f"endpoint {ep!r}: {e}") from None


def _fmt(ep: Endpoint) -> str:
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


class _SlowEndpoints:
    """Endpoints that recently let a connect or a request time out (a partition, a stopped host):
    tried after the others, and hints pointing at them not followed, until their penalty ends or
    they answer again. Reset by any answer, so a healed member is back at once when it answers."""

    def __init__(self) -> None:
        self._until: dict[Endpoint, float] = {}

    def punish(self, ep: Endpoint) -> None:
        self._until[ep] = time.monotonic() + _SLOW_PENALTY

    def forgive(self, ep: Endpoint) -> None:
        self._until.pop(ep, None)

    def slow(self, ep: Endpoint) -> bool:
        until = self._until.get(ep)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[ep]
            return False
        return True

    def order(self, eps: list[Endpoint]) -> list[Endpoint]:
        """``eps`` with the slow ones moved to the back (stable otherwise)."""
        return [e for e in eps if not self.slow(e)] + [e for e in eps if self.slow(e)]


class _Attempts:
    """The retry policy of one call: which endpoint next, and whether to try again."""

    def __init__(self, endpoints: list[Endpoint], preferred: Endpoint | None, timeout: float,
                 write: bool, redirect: bool = True, slow: _SlowEndpoints | None = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 request_timeout: float | None = None) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.write = write
        self.redirect = redirect
        self.slow = slow if slow is not None else _SlowEndpoints()
        self.connect_timeout = min(connect_timeout, timeout * _CONNECT_SHARE)
        # A read attempt has its own bound (then it is asked elsewhere). A write once sent
        # cannot be sent again, so by default it waits for its answer until the call's
        # deadline (waiting is the only way to learn its outcome); an explicit request_timeout
        # gives up on it sooner, as outcome unknown.
        self.write_timeout = request_timeout
        if request_timeout is not None:
            self.read_timeout = request_timeout
        else:  # a pinned endpoint (status, health) has nowhere else to go: the whole call's
            self.read_timeout = timeout * _CONNECT_SHARE if redirect else timeout
        order = list(endpoints)
        if preferred is not None and not self.slow.slow(preferred):
            if preferred in order:
                order.remove(preferred)
            order.insert(0, preferred)
        self.order = order
        self.pos = 0
        self.hint: Endpoint | None = None
        self.hint_pause = 0.0
        self.rounds = 0
        self.last: FastraftError | None = None
        self.no_leader = False
        # Endpoints that refused a connection during this call: down (a crashed leader), so a
        # follower's hint naming one is not chased (that would loop without a pause until the
        # followers notice, an election timeout later).
        self.refused: set[Endpoint] = set()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attempt_deadline(self) -> float:
        """When to give up waiting for the answer of the request just sent."""
        bound = self.write_timeout if self.write else self.read_timeout
        if bound is None:
            return self.deadline
        return min(self.deadline, time.monotonic() + max(bound, 0.001))

    def next(self) -> tuple[Endpoint | None, float]:
        """The next endpoint to try and how long to pause first; (None, 0) when out of time."""
        if self.remaining() <= 0:
            return None, 0.0
        if self.hint is not None:
            ep, self.hint = self.hint, None
            pause, self.hint_pause = min(self.hint_pause, max(0.0, self.remaining())), 0.0
            return ep, pause
        pause = 0.0
        if self.pos >= len(self.order):
            self.pos = 0
            self.rounds += 1
            pause = min(_ROUND_PAUSE_MAX, _ROUND_PAUSE_MIN * (2 ** min(self.rounds, 10)))
            pause = min(pause, max(0.0, self.remaining()))
        if self.pos == 0:
            self.order = self.slow.order(self.order)  # each round: the answering ones first
        ep = self.order[self.pos]
        self.pos += 1
        return ep, pause

    def fallbacks(self, ep: Endpoint) -> list[Endpoint]:
        """What to dial beside ``ep`` if it does not answer: the others, answering ones first."""
        if not self.redirect:
            return []
        return self.slow.order([e for e in self.order if e != ep])

    def last_error(self) -> FastraftError:
        """What a call pinned to one endpoint raises when it failed: the failure recorded."""
        return self.last if self.last is not None else self.exhausted()

    def connect_failed(self, ep: Endpoint, e: BaseException | str) -> None:
        self.refused.add(ep)
        self.last = UnavailableError(f"cannot connect to {_fmt(ep)}: {e}")

    def connect_timed_out(self, ep: Endpoint) -> None:
        self.slow.punish(ep)
        self.connect_failed(ep, "timed out")

    def answered(self, ep: Endpoint) -> None:
        self.slow.forgive(ep)
        self.refused.discard(ep)

    def lost(self, ep: Endpoint, what: str, timed_out: bool = False) -> None:
        """The request was sent and no answer came: fatal for a write, retried for a read."""
        if timed_out:
            self.slow.punish(ep)
        if self.write:
            raise TimeoutError(f"no answer from {_fmt(ep)} ({what}): the outcome of the write is "
                               f"unknown; read the key to find out before retrying")
        self.last = TimeoutError(f"no answer from {_fmt(ep)} ({what})")

    def error(self, ep: Endpoint, code: str, message: str, extra: dict[str, Any]) -> None:
        """Raise the server's error, or return to retry."""
        retriable = _RETRY_WRITE if self.write else _RETRY_READ
        err = error_from_code(code, message, {k: v for k, v in extra.items() if k != "message"})
        retry_ms = extra.get("retry_ms")
        if (code == "LEASE_UNAVAILABLE" and not self.write and type(retry_ms) is int
                and 0 < retry_ms <= _LEASE_RETRY_MAX_MS):
            # A leader that will hold its lease again in a moment (a new term before its first
            # acknowledged round, a transfer under way) says when to ask again: the same member,
            # after that pause. An expired lease carries no retry_ms and is raised at once.
            self.last = err
            self.hint, self.hint_pause = ep, retry_ms / 1000.0
            return
        if code not in retriable or not self.redirect:
            if code == "TIMEOUT" and self.write:
                raise TimeoutError(f"{_fmt(ep)}: {message}: the outcome of the write is unknown")
            raise err
        self.no_leader = self.no_leader or code == "NO_LEADER"
        self.last = err
        if code == "NOT_LEADER":
            for url in extra.get("leader_urls") or []:
                try:
                    hint = parse_endpoint(str(url))
                except ValueError:
                    continue
                # A follower that has not yet noticed its leader is cut off (or dead) still
                # names it: an endpoint that just timed out or refused is not chased again.
                if hint != ep and not self.slow.slow(hint) and hint not in self.refused:
                    self.hint = hint
                break

    def exhausted(self) -> FastraftError:
        waited = f"{self.timeout:g}s"
        if isinstance(self.last, LeaseUnavailableError):
            return self.last  # still refused at the deadline: the leader's own reason
        if self.no_leader or isinstance(self.last, NoLeaderError):
            return NoLeaderError(f"no leader: the cluster elected none within {waited} "
                                 f"(no quorum or an election in progress)")
        if isinstance(self.last, UnavailableError):
            return UnavailableError(f"no endpoint reachable within {waited}: {self.last.message}")
        if self.last is not None:
            return TimeoutError(f"request failed within {waited}: {self.last.message}")
        return TimeoutError(f"request timed out after {waited}")


def _addr(ep: Endpoint) -> tuple[int, tuple[Any, ...]]:
    """The socket family and address of an endpoint (names resolved, first address)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(ep[0], ep[1], type=socket.SOCK_STREAM)[0]
    return family, sockaddr


def _dial_first(candidates: list[Endpoint], at: _Attempts) -> tuple[Endpoint, socket.socket]:
    """Connect to the first candidate, dialling the next beside it each time one has not
    answered within the stagger (happy eyeballs); return the first that connects. Each dial is
    bounded by the connect timeout (then its endpoint is marked slow), all by the call's
    deadline. Raises OSError (the last failure) when none connects."""
    pending: dict[socket.socket, tuple[Endpoint, float]] = {}
    queue = list(candidates)
    next_start = 0.0
    last: OSError | None = None
    try:
        while True:
            now = time.monotonic()
            if queue and (now >= next_start or not pending):
                ep = queue.pop(0)
                try:
                    family, addr = _addr(ep)
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as e:
                    at.connect_failed(ep, e)
                    last = e
                    continue
                sock.setblocking(False)
                rc = sock.connect_ex(addr)
                if rc == 0:
                    return ep, sock
                if rc not in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                    sock.close()
                    last = OSError(rc, os.strerror(rc))
                    at.connect_failed(ep, last)
                    continue
                pending[sock] = (ep, now)
                next_start = now + _DIAL_STAGGER
            for sock, (ep, started) in list(pending.items()):
                if now - started >= at.connect_timeout or now >= at.deadline:
                    del pending[sock]
                    sock.close()
                    at.connect_timed_out(ep)
                    last = socket.timeout("timed out")
            if not pending:
                if queue and now < at.deadline:
                    continue
                raise last or socket.timeout("timed out")
            wake = min([started + at.connect_timeout for _, started in pending.values()]
                       + [at.deadline] + ([next_start] if queue else []))
            _, writable, _ = select.select([], list(pending), [], max(0.0, wake - now))
            for sock in writable:
                ep, _ = pending.pop(sock)
                rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc == 0:
                    return ep, sock
                sock.close()
                last = OSError(rc, os.strerror(rc))
                at.connect_failed(ep, last)
                next_start = 0.0  # refused: dial the next one now
    finally:
        for sock in pending:
            sock.close()


# -------------------------------------------------------------------------- blocking client


class _SyncConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(True)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(MAX_RESPONSE_FRAME)
        self.ready: list[bytes] = []

    def alive(self) -> bool:
        """False if the server closed the connection while it sat idle in our cache."""
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return True
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _endpoints(endpoints: list[str] | str, timeout: float, connect_timeout: float = 1.0,
               request_timeout: float | None = None) -> list[Endpoint]:
    """A client's endpoints, checked (``"h:p,h:p"`` or a list), after checking its timeouts."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if connect_timeout <= 0:
        raise ValueError("connect_timeout must be positive")
    if request_timeout is not None and request_timeout <= 0:
        raise ValueError("request_timeout must be positive")
    eps = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed = [parse_endpoint(e) for e in eps if e.strip()]
    if not parsed:
        raise ValueError("at least one endpoint is required")
    return parsed


class Client:
    """Blocking client: one plain socket per endpoint, one request at a time (thread-safe).

    ``timeout`` bounds each call, retries included. ``connect_timeout`` bounds one connect (at
    most a third of ``timeout``). ``request_timeout`` bounds the wait for one answer: a read
    (default: a third of ``timeout``) is then asked elsewhere; a sent write (default: the whole
    ``timeout``) then raises :class:`fastraft.TimeoutError`, outcome unknown, and is never sent
    again. See the module docstring for when a write is retried.
    """

    def __init__(self, endpoints: list[str] | str = "127.0.0.1:2379", *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 request_timeout: float | None = None) -> None:
        self.endpoints: list[Endpoint] = _endpoints(endpoints, timeout, connect_timeout,
                                                    request_timeout)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._conns: dict[Endpoint, _SyncConn] = {}
        self._leader: Endpoint | None = None
        self._slow = _SlowEndpoints()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- plumbing

    def _attempts(self, write: bool, endpoint: Endpoint | None, timeout: float) -> _Attempts:
        if endpoint is not None:
            return _Attempts([endpoint], None, timeout, write, redirect=False, slow=self._slow,
                             connect_timeout=self.connect_timeout,
                             request_timeout=self.request_timeout)
        return _Attempts(self.endpoints, self._leader, timeout, write, slow=self._slow,
                         connect_timeout=self.connect_timeout,
                         request_timeout=self.request_timeout)

    def _conn(self, ep: Endpoint, at: _Attempts) -> tuple[Endpoint, _SyncConn]:
        """A live connection to ``ep``, or, if ``ep`` does not answer soon, to whichever of
        the others connects first (the request then goes there)."""
        c = self._conns.get(ep)
        if c is not None and c.alive() and not at.slow.slow(ep):
            return ep, c
        if c is not None:
            c.close()
            del self._conns[ep]
        won, sock = _dial_first([ep, *at.fallbacks(ep)], at)
        at.answered(won)
        old = self._conns.pop(won, None)
        if old is not None:
            old.close()
        c = self._conns[won] = _SyncConn(sock)
        return won, c

    def _drop(self, ep: Endpoint) -> None:
        c = self._conns.pop(ep, None)
        if c is not None:
            c.close()

    def _roundtrip(self, c: _SyncConn, req_id: int, data: bytes, deadline: float
                   ) -> tuple[tuple[str, str, dict] | None, dict[str, Any]]:
        c.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        c.sock.sendall(data)
        while True:
            while c.ready:
                rid, err, res = decode_response(c.ready.pop(0))
                if rid == req_id:
                    return err, res
                # A reply to an older request that timed out on this connection: skip it.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out")
            c.sock.settimeout(remaining)
            chunk = c.sock.recv(262144)
            if not chunk:
                raise ConnectionResetError("connection closed by the server")
            c.ready.extend(c.decoder.feed(chunk))

    def _call(self, op: str, args: dict[str, Any], *, write: bool,
              endpoint: Endpoint | None = None, timeout: float | None = None) -> dict[str, Any]:
        at = self._attempts(write, endpoint, self.timeout if timeout is None else timeout)
        req_id = next(self._ids)
        data = frame(encode_request(req_id, op, args))
        with self._lock:
            while True:
                ep, pause = at.next()
                if ep is None:
                    raise at.exhausted()
                if pause:
                    time.sleep(pause)
                    if at.remaining() <= 0:
                        raise at.exhausted()
                try:
                    ep, c = self._conn(ep, at)
                except OSError:
                    if self._leader is not None and at.slow.slow(self._leader):
                        self._leader = None
                    if endpoint is not None:
                        raise at.last_error() from None
                    continue
                try:
                    err, res = self._roundtrip(c, req_id, data, at.attempt_deadline())
                except (OSError, WireError) as e:
                    self._drop(ep)
                    timed_out = isinstance(e, socket.timeout)
                    if ep == self._leader:
                        self._leader = None
                    at.lost(ep, "timed out" if timed_out else str(e), timed_out)
                    if endpoint is not None:
                        raise at.last_error() from None
                    continue
                at.answered(ep)
                if err is None:
                    if endpoint is None and write:
                        self._leader = ep
                    return res
                at.error(ep, *err)

    # ---------------------------------------------------------------------- API

    def put(self, key: str | bytes, value: str | bytes, *, prev_kv: bool = False,
            lease: int = 0) -> PutResult:
        """Set ``key`` to ``value``. A write: see the class docstring on retries."""
        return _parse("put", _put_result, self._call("put", _put_args(key, value, prev_kv, lease),
                                                      write=True))

    def get(self, key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False,
            limit: int = 0, revision: int = 0, keys_only: bool = False, count_only: bool = False,
            consistency: Consistency = "linearizable",
            max_staleness: float | None = None, exact_count: bool = True) -> GetResult:
        """Read one key, a range ``[key, range_end)``, or every key under a prefix.

        ``consistency``: "linearizable"/"l" (default, ReadIndex), "lease" (the leader's lease,
        no round trip), "serializable"/"s" (any member's local state) or "bounded" (local state
        if fresh within ``max_staleness`` seconds, else TooStaleError). See the README.
        ``exact_count=False`` with a ``limit``: the member stops at limit + 1 keys (``more``
        is exact, ``count`` is not the total), for paging through a big range."""
        args = _range_args(key, range_end, prefix, limit, revision, keys_only, count_only,
                           consistency, max_staleness, exact_count)
        return _parse("range", _get_result, self._call("range", args, write=False))

    def delete(self, key: str | bytes, range_end: str | bytes | None = None, *,
               prefix: bool = False, prev_kv: bool = False) -> DeleteResult:
        """Delete one key, a range or a prefix; ``deleted`` is the count. A write."""
        return _parse("delete", _delete_result,
                      self._call("delete", _delete_args(key, range_end, prefix, prev_kv),
                                 write=True))

    def txn(self, compare: list[Compare], success: list[Op], failure: list[Op]) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``, atomically. A write."""
        return _parse("txn", _txn_result,
                      self._call("txn", _txn_args(compare, success, failure), write=True))

    def compact(self, revision: int) -> Header:
        """Discard history before ``revision``. A write."""
        res = self._call("compact", {"revision": _nonneg(revision, "revision")}, write=True)
        return _parse("compact", lambda r: _header(r.get("header")), res)

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """Status of ONE member (default: the first endpoint); never redirected."""
        ep = parse_endpoint(endpoint) if endpoint else self.endpoints[0]
        return self._call("status", {}, write=False, endpoint=ep)

    def member_list(self) -> list[Member]:
        """The cluster's members, from any endpoint that answers."""
        return _parse("member_list", _members, self._call("member_list", {}, write=False))

    def member_add(self, name: str, peer_urls: list[str] | str, *,
                   learner: bool = False) -> MemberChange:
        """Add a member (a learner with ``learner=True``); returns once the change is applied.
        Start the new member afterwards with ``--initial-cluster-state existing``."""
        res = self._call("member_add", _member_add_args(name, peer_urls, learner), write=True)
        return _parse("member_add", _member_change, res)

    def member_remove(self, member_id: int | str) -> MemberChange:
        """Remove a member (id as int or hex string); returns once the change is applied."""
        return _parse("member_remove", _member_change,
                      self._call("member_remove", _member_id_arg(member_id), write=True))

    def member_promote(self, member_id: int | str) -> MemberChange:
        """Make a learner a voter; refused while it is not in sync with the leader."""
        return _parse("member_promote", _member_change,
                      self._call("member_promote", _member_id_arg(member_id), write=True))

    def health(self, endpoint: str | None = None) -> dict[str, Any]:
        """``{"health": bool, "reason": str}`` of ONE member (default: the first endpoint)."""
        ep = parse_endpoint(endpoint) if endpoint else self.endpoints[0]
        return self._call("health", {}, write=False, endpoint=ep)

    def move_leader(self, target: int | str) -> dict[str, Any]:
        """Have the leader hand leadership to voter ``target`` (id as int or hex string);
        returns ``{"header", "leader", "previous"}`` once ``target`` leads. Sent to the leader
        (found as for a write); refused (BadRequestError) for an unknown id or a learner,
        LeaderTransferError when the transfer did not happen."""
        args = {"target": _member_id_arg(target)["id"]}
        return self._call("move_leader", args, write=True)

    def snapshot(self, path: str, *, endpoint: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> SnapshotSaved:
        """Save the KV state of ONE member (default: the first endpoint) to the file
        ``path`` (client/snapfile.py): a consistent copy at one revision, streamed in chunks
        (memory holds one chunk). Written to ``path + ".part"`` and renamed once complete and
        checksummed: on any failure there is no ``path`` (and no part file). ``progress(chunks,
        bytes)`` is called after each chunk. The client's ``timeout`` bounds each wait for the
        member (connecting, the next chunk), not the whole transfer."""
        ep = parse_endpoint(endpoint) if endpoint else self.endpoints[0]
        return _save_snapshot(ep, path, self.timeout, self.connect_timeout, progress)

    def watch(self, key: str | bytes, range_end: str | bytes | None = None, *,
              prefix: bool = False, start_revision: int = 0, prev_kv: bool = False,
              timeout: float | None = None) -> Watch:
        """Watch a key, a range ``[key, range_end)`` or a prefix; see :class:`Watch`.

        ``start_revision`` 0 = changes after now; an older revision replays history first, then
        continues live without a gap. Served by the first endpoint that answers (any member,
        from its applied state), on a connection of its own so this client stays usable.
        ``timeout`` bounds creating the watch (default: the client's), not the iteration."""
        args = _watch_args(key, range_end, prefix, start_revision, prev_kv)
        return Watch(self.endpoints, args, self.timeout if timeout is None else timeout)

    def close(self) -> None:
        with self._lock:
            for ep in list(self._conns):
                self._drop(ep)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ async client


class _FramedConn(asyncio.Protocol):
    """A client connection's framing: each complete frame goes to ``frame_received``; a bad
    frame or body fails the connection (``broken``) and closes it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(MAX_RESPONSE_FRAME)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.decoder.feed(data):
                self.frame_received(body)
        except WireError as e:
            self.broken(ConnectionResetError(f"bad response: {e.reason}"))
            if self.transport is not None:
                self.transport.close()

    def frame_received(self, body: bytes) -> None:
        raise NotImplementedError

    def broken(self, exc: Exception) -> None:
        raise NotImplementedError


class _AsyncConn(_FramedConn):
    """One pipelined connection: many requests in flight, matched to replies by request id."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[tuple[Any, dict[str, Any]]]] = {}
        self.closed = False

    def frame_received(self, body: bytes) -> None:
        rid, err, res = decode_response(body)
        fut = self.pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result((err, res))

    def broken(self, exc: Exception) -> None:
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionResetError(f"connection lost: {exc or 'closed by the server'}"))

    def request(self, req_id: int, data: bytes) -> asyncio.Future[tuple[Any, dict[str, Any]]]:
        fut: asyncio.Future[tuple[Any, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future())
        self.pending[req_id] = fut
        assert self.transport is not None
        self.transport.write(data)
        return fut


class AsyncClient:
    """asyncio client: one pipelined connection per endpoint, shared by concurrent calls.

    Same API and retry rules as :class:`Client`, as coroutines.
    """

    def __init__(self, endpoints: list[str] | str = "127.0.0.1:2379", *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 request_timeout: float | None = None) -> None:
        self.endpoints: list[Endpoint] = _endpoints(endpoints, timeout, connect_timeout,
                                                    request_timeout)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._conns: dict[Endpoint, _AsyncConn] = {}
        self._connecting: dict[Endpoint, asyncio.Future[_AsyncConn]] = {}
        self._leader: Endpoint | None = None
        self._slow = _SlowEndpoints()
        self._ids = itertools.count(1)

    def _usable(self, ep: Endpoint) -> _AsyncConn | None:
        """The cached connection to ``ep`` if it may carry a request. Not when ``ep`` recently
        timed out: a request sent into a cut-off connection would hold the call (a write cannot
        be taken back), so such an endpoint must first prove itself with a fresh connect."""
        c = self._conns.get(ep)
        if c is None or c.closed or self._slow.slow(ep):
            return None
        return c

    def _shared_dial(self, ep: Endpoint, timeout: float) -> asyncio.Future[_AsyncConn]:
        fut = self._connecting.get(ep)
        if fut is None:
            # Concurrent callers share one dial instead of opening a connection each.
            fut = asyncio.get_running_loop().create_task(self._dial(ep, timeout))
            self._connecting[ep] = fut
            fut.add_done_callback(lambda f: self._dial_done(ep, f))
        return fut

    def _dial_done(self, ep: Endpoint, f: asyncio.Future[_AsyncConn]) -> None:
        self._connecting.pop(ep, None)
        if not f.cancelled():
            f.exception()  # retrieved here: every waiter may have timed out already

    async def _dial(self, ep: Endpoint, timeout: float) -> _AsyncConn:
        loop = asyncio.get_running_loop()
        # Bounded by the connect timeout: a dial outlives the call that started it (others may
        # share it, and a late success is kept for the next call), but not for long.
        _, proto = await asyncio.wait_for(loop.create_connection(_AsyncConn, ep[0], ep[1]),
                                          timeout)
        self._conns[ep] = proto
        return proto

    async def _conn(self, ep: Endpoint, at: _Attempts) -> tuple[Endpoint, _AsyncConn]:
        """A connection to ``ep``, or, if ``ep`` does not answer within the stagger, to whichever
        of the others is connected first (happy eyeballs, as :func:`_dial_first`)."""
        queue = [ep, *at.fallbacks(ep)]
        dials: dict[asyncio.Future[_AsyncConn], Endpoint] = {}
        next_start = 0.0
        last: BaseException = socket.timeout("timed out")
        while True:
            now = time.monotonic()
            if now >= at.deadline:
                for cand in dials.values():
                    at.connect_timed_out(cand)
                raise last
            if queue and (now >= next_start or not dials):
                cand = queue.pop(0)
                c = self._usable(cand)
                if c is not None:
                    return cand, c
                dials[self._shared_dial(cand, max(at.connect_timeout, 0.001))] = cand
                next_start = now + _DIAL_STAGGER
                continue
            if not dials:
                raise last
            wake = at.deadline - now
            if queue:
                wake = min(wake, next_start - now)
            done, _ = await asyncio.wait(list(dials), timeout=max(wake, 0.0),
                                         return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                cand = dials.pop(d)
                exc = asyncio.CancelledError() if d.cancelled() else d.exception()
                if exc is None:
                    at.answered(cand)
                    return cand, d.result()
                if isinstance(exc, asyncio.TimeoutError):
                    at.connect_timed_out(cand)
                    last = socket.timeout("timed out")
                else:
                    at.connect_failed(cand, exc if str(exc) else type(exc).__name__)
                    last = exc if isinstance(exc, OSError) else OSError(str(exc))
                next_start = 0.0  # failed: dial the next one now

    async def _call(self, op: str, args: dict[str, Any], *, write: bool,
                    endpoint: Endpoint | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {"slow": self._slow, "connect_timeout": self.connect_timeout,
                              "request_timeout": self.request_timeout}
        if endpoint is not None:
            at = _Attempts([endpoint], None, self.timeout, write, redirect=False, **kw)
        else:
            at = _Attempts(self.endpoints, self._leader, self.timeout, write, **kw)
        req_id = next(self._ids)
        data = frame(encode_request(req_id, op, args))
        while True:
            ep, pause = at.next()
            if ep is None:
                raise at.exhausted()
            if pause:
                await asyncio.sleep(pause)
                if at.remaining() <= 0:
                    raise at.exhausted()
            try:
                ep, c = await self._conn(ep, at)
            except OSError:
                if self._leader is not None and self._slow.slow(self._leader):
                    self._leader = None
                if endpoint is not None:
                    raise at.last_error() from None
                continue
            fut = c.request(req_id, data)
            try:
                err, res = await asyncio.wait_for(
                    fut, max(at.attempt_deadline() - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                c.pending.pop(req_id, None)
                if ep == self._leader:
                    self._leader = None
                at.lost(ep, "timed out", timed_out=True)
                if endpoint is not None:
                    raise at.last_error() from None
                continue
            except ConnectionError as e:
                if ep == self._leader:
                    self._leader = None
                at.lost(ep, str(e))
                if endpoint is not None:
                    raise at.last_error() from None
                continue
            at.answered(ep)
            if err is None:
                if endpoint is None and write:
                    self._leader = ep
                return res
            at.error(ep, *err)

    async def put(self, key: str | bytes, value: str | bytes, *, prev_kv: bool = False,
                  lease: int = 0) -> PutResult:
        """Set ``key`` to ``value``. A write: see :class:`Client` on retries."""
        res = await self._call("put", _put_args(key, value, prev_kv, lease), write=True)
        return _parse("put", _put_result, res)

    async def get(self, key: str | bytes, range_end: str | bytes | None = None, *,
                  prefix: bool = False, limit: int = 0, revision: int = 0,
                  keys_only: bool = False, count_only: bool = False,
                  consistency: Consistency = "linearizable",
                  max_staleness: float | None = None, exact_count: bool = True) -> GetResult:
        """Read one key, a range ``[key, range_end)``, or every key under a prefix (read
        levels and ``exact_count`` as :meth:`Client.get`)."""
        args = _range_args(key, range_end, prefix, limit, revision, keys_only, count_only,
                           consistency, max_staleness, exact_count)
        return _parse("range", _get_result, await self._call("range", args, write=False))

    async def delete(self, key: str | bytes, range_end: str | bytes | None = None, *,
                     prefix: bool = False, prev_kv: bool = False) -> DeleteResult:
        """Delete one key, a range or a prefix. A write."""
        res = await self._call("delete", _delete_args(key, range_end, prefix, prev_kv),
                               write=True)
        return _parse("delete", _delete_result, res)

    async def txn(self, compare: list[Compare], success: list[Op],
                  failure: list[Op]) -> TxnResult:
        """Atomic compare-and-swap over several keys. A write."""
        res = await self._call("txn", _txn_args(compare, success, failure), write=True)
        return _parse("txn", _txn_result, res)

    async def compact(self, revision: int) -> Header:
        """Discard history before ``revision``. A write."""
        res = await self._call("compact", {"revision": _nonneg(revision, "revision")},
                               write=True)
        return _parse("compact", lambda r: _header(r.get("header")), res)

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """Status of ONE member (default: the first endpoint); never redirected."""
        ep = parse_endpoint(endpoint) if endpoint else self.endpoints[0]
        return await self._call("status", {}, write=False, endpoint=ep)

    async def member_list(self) -> list[Member]:
        return _parse("member_list", _members, await self._call("member_list", {}, write=False))

    async def member_add(self, name: str, peer_urls: list[str] | str, *,
                         learner: bool = False) -> MemberChange:
        """See :meth:`Client.member_add`."""
        res = await self._call("member_add", _member_add_args(name, peer_urls, learner),
                               write=True)
        return _parse("member_add", _member_change, res)

    async def member_remove(self, member_id: int | str) -> MemberChange:
        """See :meth:`Client.member_remove`."""
        return _parse("member_remove", _member_change,
                      await self._call("member_remove", _member_id_arg(member_id), write=True))

    async def member_promote(self, member_id: int | str) -> MemberChange:
        """See :meth:`Client.member_promote`."""
        return _parse("member_promote", _member_change,
                      await self._call("member_promote", _member_id_arg(member_id), write=True))

    async def health(self, endpoint: str | None = None) -> dict[str, Any]:
        """``{"health": bool, "reason": str}`` of ONE member (default: the first endpoint)."""
        ep = parse_endpoint(endpoint) if endpoint else self.endpoints[0]
        return await self._call("health", {}, write=False, endpoint=ep)

    async def move_leader(self, target: int | str) -> dict[str, Any]:
        """See :meth:`Client.move_leader`."""
        args = {"target": _member_id_arg(target)["id"]}
        return await self._call("move_leader", args, write=True)

    def watch(self, key: str | bytes, range_end: str | bytes | None = None, *,
              prefix: bool = False, start_revision: int = 0, prev_kv: bool = False,
              timeout: float | None = None) -> AsyncWatch:
        """As :meth:`Client.watch`; ``async for ev in client.watch(...)`` or ``async with``."""
        args = _watch_args(key, range_end, prefix, start_revision, prev_kv)
        return AsyncWatch(self.endpoints, args, self.timeout if timeout is None else timeout)

    async def close(self) -> None:
        for fut in list(self._connecting.values()):
            fut.cancel()
        for c in self._conns.values():
            if c.transport is not None:
                c.transport.close()
        self._conns.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------------------------ watch


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``type`` is ``"PUT"`` or ``"DELETE"``; a DELETE's ``kv`` holds the key and
    ``mod_revision`` (the revision of the delete) only. ``prev_kv`` when asked for and known."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


def _watch_args(key: str | bytes, range_end: str | bytes | None, prefix: bool,
                start_revision: int, prev_kv: bool) -> dict[str, Any]:
    k, end = _range(key, range_end, prefix)
    return {"key": k, "range_end": end, "start_revision": _nonneg(start_revision,
                                                                  "start_revision"),
            "prev_kv": bool(prev_kv)}


class _WatchState:
    """The protocol state of one watch stream, shared by Watch and AsyncWatch (no I/O)."""

    def __init__(self, req_id: int, start_revision: int) -> None:
        self.req_id = req_id
        self.watch_id = 0
        self.next_revision = start_revision  # 0 until created (then header revision + 1)
        self.created = False
        self.finished = False  # a canceled frame came (or the caller cancelled)
        self.cancel_requested = False
        self.events: list[WatchEvent] = []

    def feed(self, rid: int, err: tuple[str, str, dict] | None, res: dict[str, Any],
             where: str) -> None:
        """Take one response frame; queue its events; raise when the server ends the watch."""
        if rid != self.req_id:
            return  # the answer to our watch_cancel: the canceled frame is what counts
        if err is not None:
            code, message, extra = err
            self.finished = True
            raise error_from_code(code, message, extra)
        try:
            if res.get("created"):
                self.created = True
                self.watch_id = int(res["watch_id"])
                if not self.next_revision:
                    self.next_revision = int(res["header"]["revision"]) + 1
                return
            for e in res.get("events") or []:
                pk = e.get("prev_kv")
                ev = WatchEvent(str(e["type"]), _kv(e["kv"]), _kv(pk) if pk else None)
                self.events.append(ev)
                self.next_revision = max(self.next_revision, ev.kv.mod_revision + 1)
            canceled = bool(res.get("canceled"))
            reason = str(res.get("reason", ""))
            compact = int(res.get("compact_revision", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _malformed("watch response", e) from None
        if canceled:
            self.finished = True
            if self.cancel_requested:
                return
            if compact:
                raise CompactedError(f"watch on {where} cancelled: {reason}",
                                     compact_revision=compact)
            raise WatchCanceledError(
                f"watch on {where} cancelled by the server: {reason}; watch again from "
                f"revision {self.next_revision} to resume", self.next_revision)

    def lost(self, where: str, what: str) -> WatchLostError:
        self.finished = True
        return WatchLostError(f"watch on {where} lost ({what}); watch again from revision "
                              f"{self.next_revision} to resume without gaps",
                              self.next_revision)


class Watch:
    """A blocking watch on its own connection; iterate it for :class:`WatchEvent` s, one at a time.

    Events come in revision order (the changes of one revision in the order they were made). The
    iteration ends after :meth:`cancel` (or the ``with`` block). If the member goes away or the
    server cancels the watch, iterating raises :class:`WatchLostError` /
    :class:`WatchCanceledError` whose ``resume_revision`` (also :attr:`next_revision`) is where a
    new watch continues without a gap: the last seen event's revision + 1. A watch from a
    compacted revision raises :class:`fastraft.CompactedError`.
    """

    def __init__(self, endpoints: list[Endpoint], args: dict[str, Any], timeout: float,
                 req_id: int = 1) -> None:
        self._state = _WatchState(req_id, args["start_revision"])
        self._decoder = FrameDecoder(MAX_RESPONSE_FRAME)
        self._sock: socket.socket | None = None
        self._ids = itertools.count(req_id + 1)
        self.endpoint: Endpoint | None = None
        at = _Attempts(endpoints, None, timeout, write=False)
        data = frame(encode_request(req_id, "watch", args))
        while True:
            ep, pause = at.next()
            if ep is None:
                raise at.exhausted()
            if pause:
                time.sleep(pause)
            try:
                ep, sock = _dial_first([ep, *at.fallbacks(ep)], at)
            except OSError:
                continue
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self.endpoint = sock, ep
            try:
                sock.sendall(data)
                while not self._state.created:
                    if not self._read(at.deadline):
                        raise socket.timeout("timed out")
                return
            except (OSError, WireError) as e:
                self._close_sock()
                self._state = _WatchState(req_id, args["start_revision"])
                self._decoder = FrameDecoder(MAX_RESPONSE_FRAME)
                at.lost(ep, "timed out" if isinstance(e, socket.timeout) else str(e))
            except FastraftError:
                self._close_sock()
                raise

    @property
    def watch_id(self) -> int:
        return self._state.watch_id

    @property
    def next_revision(self) -> int:
        """The revision a new watch would start from to continue this one without a gap."""
        return self._state.next_revision

    def _where(self) -> str:
        return _fmt(self.endpoint) if self.endpoint else "?"

    def _read(self, deadline: float | None) -> bool:
        """Read and process what arrives before ``deadline``; False on timeout."""
        sock = self._sock
        assert sock is not None
        if deadline is None:
            sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            return False
        if not chunk:
            raise ConnectionResetError("connection closed by the server")
        for body in self._decoder.feed(chunk):
            self._state.feed(*decode_response(body), self._where())
        return True

    def get(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event; None if none came within ``timeout`` seconds (None: wait) or the
        watch was cancelled by the caller."""
        st = self._state
        deadline = None if timeout is None else time.monotonic() + timeout
        while not st.events:
            if st.finished or self._sock is None:
                return None
            try:
                if not self._read(deadline):
                    return None
            except (OSError, WireError) as e:
                self._close_sock()
                raise st.lost(self._where(), str(e)) from None
            except FastraftError:
                self._close_sock()
                raise
        return st.events.pop(0)

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        ev = self.get(None)
        if ev is None:
            raise StopIteration
        return ev

    def cancel(self, timeout: float = 1.0) -> None:
        """Cancel on the server (bounded wait for its answer) and close the connection."""
        st = self._state
        if self._sock is None:
            return
        if not st.finished:
            st.cancel_requested = True
            try:
                self._sock.sendall(frame(encode_request(next(self._ids), "watch_cancel",
                                                        {"watch_id": st.watch_id})))
                deadline = time.monotonic() + timeout
                while not st.finished and self._read(deadline):
                    pass
            except (OSError, WireError, FastraftError):
                pass  # closing the connection cancels it on the server anyway
        st.finished = True
        st.events.clear()
        self._close_sock()

    close = cancel

    def _close_sock(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _WatchConn(_FramedConn):
    """The connection of one AsyncWatch: frames go to a queue; None marks the end."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    def frame_received(self, body: bytes) -> None:
        self.queue.put_nowait(body)

    def broken(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(ConnectionResetError(f"{exc or 'connection closed by the server'}"))


class AsyncWatch:
    """The asyncio form of :class:`Watch`: ``async for ev in client.watch(...)``.

    It connects on first use (``async with`` or the first iteration); the same errors and
    ``next_revision`` rule as :class:`Watch`."""

    def __init__(self, endpoints: list[Endpoint], args: dict[str, Any], timeout: float) -> None:
        self._endpoints = endpoints
        self._args = args
        self._timeout = timeout
        self._state = _WatchState(1, args["start_revision"])
        self._conn: _WatchConn | None = None
        self.endpoint: Endpoint | None = None

    @property
    def watch_id(self) -> int:
        return self._state.watch_id

    @property
    def next_revision(self) -> int:
        return self._state.next_revision

    def _where(self) -> str:
        return _fmt(self.endpoint) if self.endpoint else "?"

    async def start(self) -> None:
        """Connect and create the watch (idempotent)."""
        if self._conn is not None or self._state.finished:
            return
        loop = asyncio.get_running_loop()
        at = _Attempts(self._endpoints, None, self._timeout, write=False)
        data = frame(encode_request(1, "watch", self._args))
        while True:
            ep, pause = at.next()
            if ep is None:
                raise at.exhausted()
            if pause:
                await asyncio.sleep(pause)
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(_WatchConn, ep[0], ep[1]),
                    max(min(at.connect_timeout, at.remaining()), 0.001))
            except asyncio.TimeoutError:
                at.connect_timed_out(ep)
                continue
            except OSError as e:
                at.connect_failed(ep, e)
                continue
            self._conn, self.endpoint = conn, ep
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                while not self._state.created:
                    await asyncio.wait_for(self._step(), max(at.remaining(), 0.001))
                return
            except (asyncio.TimeoutError, WatchLostError) as e:
                self._close()
                self._state = _WatchState(1, self._args["start_revision"])
                at.lost(ep, "timed out" if isinstance(e, asyncio.TimeoutError) else e.message)
            except FastraftError:
                self._close()
                raise

    async def _step(self) -> None:
        conn = self._conn
        assert conn is not None
        item = await conn.queue.get()
        if isinstance(item, BaseException) or item is None:
            self._close()
            raise self._state.lost(self._where(), str(item or "closed"))
        try:
            self._state.feed(*decode_response(item), self._where())
        except WireError as e:
            self._close()
            raise self._state.lost(self._where(), e.reason) from None

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        await self.start()
        st = self._state
        while not st.events:
            if st.finished or self._conn is None:
                raise StopAsyncIteration
            await self._step()
        return st.events.pop(0)

    async def cancel(self, timeout: float = 1.0) -> None:
        st = self._state
        conn = self._conn
        if conn is not None and not st.finished and conn.transport is not None:
            st.cancel_requested = True
            conn.transport.write(frame(encode_request(2, "watch_cancel",
                                                      {"watch_id": st.watch_id})))
            try:
                async with asyncio.timeout(timeout):
                    while not st.finished:
                        await self._step()
            except (asyncio.TimeoutError, FastraftError):
                pass  # closing the connection cancels it on the server anyway
        st.finished = True
        st.events.clear()
        self._close()

    def _close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

    async def __aenter__(self) -> AsyncWatch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()


# ------------------------------------------------------------------------------ snapshot save


@dataclass(frozen=True, slots=True)
class SnapshotSaved:
    """What ``Client.snapshot`` saved: where, from which member's state, how big."""

    path: str
    header: snapfile.SnapshotHeader
    size: int  # bytes of the file
    chunks: int
    chunk_bytes: int
    took: float  # seconds


def _save_snapshot(ep: Endpoint, path: str, timeout: float, connect_timeout: float,
                   progress: Callable[[int, int], None] | None) -> SnapshotSaved:
    """Stream the ``snapshot`` op's frames (server/backup.py) from ``ep`` into ``path``."""
    started = time.monotonic()
    where = _fmt(ep)
    at = _Attempts([ep], None, timeout, write=False, redirect=False,
                   connect_timeout=connect_timeout)
    try:
        _, sock = _dial_first([ep], at)
    except OSError as e:
        raise UnavailableError(f"cannot connect to {where}: {e}; nothing saved") from None
    decoder = FrameDecoder(MAX_RESPONSE_FRAME)
    ready: list[bytes] = []

    def next_frame() -> dict[str, Any]:
        # Each wait for the member is bounded by the call's timeout: a stalled member fails the
        # save, a big store does not.
        while not ready:
            sock.settimeout(timeout)
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError(f"snapshot from {where}: nothing received for "
                                   f"{timeout:g}s; nothing saved") from None
            if not data:
                raise UnavailableError(f"snapshot from {where}: the member closed the "
                                       f"connection before the end; nothing saved")
            ready.extend(decoder.feed(data))
        _, err, res = decode_response(ready.pop(0))
        if err is not None:
            code, message, extra = err
            raise error_from_code(code, f"snapshot from {where}: {message}", extra)
        return res

    try:
        sock.setblocking(True)
        sock.sendall(frame(encode_request(1, "snapshot", {})))
        first = next_frame()
        try:
            m = first["snapshot"]
            header = snapfile.SnapshotHeader(
                int(m["cluster_id"]), int(m["member_id"]), int(m["index"]), int(m["term"]),
                int(m["revision"]), int(m["compact_revision"]), time.time())
        except (KeyError, TypeError, ValueError) as e:
            raise _malformed("snapshot response", e) from None
        try:
            writer = snapfile.SnapshotWriter(path)
        except OSError as e:
            raise FastraftError(f"cannot write {path}{snapfile.PART_SUFFIX}: "
                                f"{e.strerror or e}; nothing saved") from None
        with writer as w:
            w.header(header)
            sha = hashlib.sha256()
            n = nbytes = 0
            while True:
                res = next_frame()
                chunk = res.get("chunk")
                if isinstance(chunk, bytes):
                    w.chunk(chunk)
                    sha.update(chunk)
                    n += 1
                    nbytes += len(chunk)
                    if progress is not None:
                        progress(n, nbytes)
                    continue
                end = res.get("end")
                if not isinstance(end, dict):
                    raise _malformed("snapshot response", ValueError("neither chunk nor end"))
                members = end.get("members")
                if (end.get("chunks"), end.get("bytes"), end.get("sha256")) != (
                        n, nbytes, sha.digest()) or not isinstance(members, dict):
                    raise FastraftError(f"snapshot from {where}: what arrived does not match "
                                        f"the member's checksum; nothing saved")
                w.end(n, nbytes, sha.digest(), members)
                w.commit()
                size = w.bytes_written
                break
    except (OSError, WireError) as e:
        raise UnavailableError(f"snapshot from {where} failed: {e}; nothing saved") from None
    finally:
        sock.close()
    return SnapshotSaved(path, header, size, n, nbytes, time.monotonic() - started)
