"""The peer codec: Raft messages, the peer hello and the join answer (bodies; see framing).

Layouts (msgpack arrays, chosen over maps because they are smaller and faster to build):

* peer message: ``[type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
  snapshot, context]``; an entry is ``[index, term, type, data]``; a snapshot is
  ``[index, term, voters, learners, data]`` or nil.
* peer hello (first frame of a peer connection): ``["fastraft-peer", 1, cluster_id, member_id]``.
  A hello with cluster_id 0 is a *join query* from a member starting with an empty data dir and
  ``--initial-cluster-state existing``: the receiver answers with one frame
  ``["fastraft-join", 1, cluster_id, members]`` (members: hex id -> {name, peer_urls,
  client_urls, is_learner}) and closes the connection.
"""

from __future__ import annotations

from typing import Any

from fastraft._core import Message
from fastraft.net.framing import (
    MAX_PEER_FRAME,
    WireError,
    bool_field,
    bytes_field,
    list_field,
    pack,
    str_map_field,
    u64_field,
    unpack,
)
from fastraft.raft.core import ENTRY_CONF_CHANGE, ENTRY_NORMAL, MsgType, Snapshot

__all__ = [
    "MAX_PEER_FRAME",
    "encode_message",
    "decode_message",
    "encode_hello",
    "decode_hello",
    "encode_join_answer",
    "decode_join_answer",
    "make_snapshot",
]

_MSG_TYPES = frozenset(t.value for t in MsgType)
_ENTRY_TYPES = frozenset((ENTRY_NORMAL, ENTRY_CONF_CHANGE))
_HELLO_MAGIC = "fastraft-peer"
_HELLO_VERSION = 1
_JOIN_MAGIC = "fastraft-join"


# -------------------------------------------------------------------------------- snapshots

def make_snapshot(index: int, term: int, voters: tuple, learners: tuple,
                  data: bytes | None) -> Snapshot:
    """Build the core's :class:`~fastraft.raft.Snapshot` from decoded fields."""
    return Snapshot(index, term, voters, learners, data)


def _snapshot_fields(s: Any) -> tuple:
    if isinstance(s, tuple):
        if len(s) != 5:
            raise WireError("snapshot tuple must have 5 fields")
        return s
    return (s.index, s.term, s.voters, s.learners, s.data)


def _decode_snapshot(v: Any) -> Any:
    if v is None:
        return None
    f = list_field(v, "snapshot", 5)
    voters = tuple(u64_field(x, "snapshot voter") for x in list_field(f[2], "snapshot voters"))
    learners = tuple(u64_field(x, "snapshot learner")
                     for x in list_field(f[3], "snapshot learners"))
    data = f[4]
    if data is not None:
        bytes_field(data, "snapshot data")
    return make_snapshot(u64_field(f[0], "snapshot index"), u64_field(f[1], "snapshot term"),
                         voters, learners, data)


# ---------------------------------------------------------------------------- peer messages


def encode_message(m: Message) -> bytes:
    """Encode one Raft message (body only; see :func:`frame`)."""
    snap = m.snapshot
    if snap is not None:
        idx, term, voters, learners, data = _snapshot_fields(snap)
        snap = [idx, term, list(voters), list(learners), data]
    return pack([
        m.type, m.to, m.frm, m.term, m.log_term, m.index,
        [list(e) for e in m.entries],
        m.commit, m.reject, m.reject_hint, snap, m.context,
    ])


def decode_message(body: bytes) -> Message:
    """Decode a peer message; raises :class:`WireError` on anything malformed."""
    f = list_field(unpack(body), "message", 12)
    mtype = u64_field(f[0], "message type")
    if mtype not in _MSG_TYPES:
        raise WireError(f"unknown message type {mtype}")
    entries = []
    for e in list_field(f[6], "entries"):
        e = list_field(e, "entry", 4)
        etype = u64_field(e[2], "entry type")
        if etype not in _ENTRY_TYPES:
            raise WireError(f"unknown entry type {etype}")
        entries.append((u64_field(e[0], "entry index"), u64_field(e[1], "entry term"), etype,
                        bytes_field(e[3], "entry data")))
    return Message(
        type=mtype,
        to=u64_field(f[1], "to"),
        frm=u64_field(f[2], "frm"),
        term=u64_field(f[3], "term"),
        log_term=u64_field(f[4], "log_term"),
        index=u64_field(f[5], "index"),
        entries=entries,
        commit=u64_field(f[7], "commit"),
        reject=bool_field(f[8], "reject"),
        reject_hint=u64_field(f[9], "reject_hint"),
        snapshot=_decode_snapshot(f[10]),
        context=bytes_field(f[11], "context"),
    )


def encode_hello(cluster_id: int, member_id: int) -> bytes:
    """The first frame a peer sends on a connection: who it is and which cluster it belongs to."""
    u64_field(cluster_id, "cluster_id")
    u64_field(member_id, "member_id")
    return pack([_HELLO_MAGIC, _HELLO_VERSION, cluster_id, member_id])


def decode_hello(body: bytes) -> tuple[int, int]:
    """Return ``(cluster_id, member_id)`` from a hello frame."""
    f = list_field(unpack(body), "hello", 4)
    if f[0] != _HELLO_MAGIC:
        raise WireError("not a fastraft peer hello")
    if f[1] != _HELLO_VERSION or type(f[1]) is not int:
        raise WireError(f"unsupported peer protocol version {f[1]!r}")
    return u64_field(f[2], "cluster_id"), u64_field(f[3], "member_id")


def encode_join_answer(cluster_id: int, members: dict[str, dict[str, Any]]) -> bytes:
    """The answer to a join query (a hello with cluster_id 0): the cluster id and members."""
    u64_field(cluster_id, "cluster_id")
    return pack([_JOIN_MAGIC, _HELLO_VERSION, cluster_id, members])


def decode_join_answer(body: bytes) -> tuple[int, dict[str, dict[str, Any]]]:
    """Return ``(cluster_id, members)``; members are checked for shape."""
    f = list_field(unpack(body), "join answer", 4)
    if f[0] != _JOIN_MAGIC:
        raise WireError("not a fastraft join answer")
    if f[1] != _HELLO_VERSION or type(f[1]) is not int:
        raise WireError(f"unsupported join protocol version {f[1]!r}")
    cid = u64_field(f[2], "cluster_id")
    members = str_map_field(f[3], "members")
    out: dict[str, dict[str, Any]] = {}
    for h, m in members.items():
        try:
            mid = int(h, 16)
        except ValueError:
            raise WireError(f"member id {h!r} is not hex") from None
        m = str_map_field(m, "member")
        urls = list_field(m.get("peer_urls", []), "peer_urls")
        curls = list_field(m.get("client_urls", []), "client_urls")
        if not all(type(u) is str for u in urls + curls) or type(m.get("name", "")) is not str:
            raise WireError("member names and URLs must be strings")
        out[format(mid, "x")] = {"name": m.get("name", ""), "peer_urls": list(urls),
                                 "client_urls": list(curls),
                                 "is_learner": bool_field(m.get("is_learner", False), "is_learner")}
    return cid, out


