"""Runtime membership: the member records a node keeps, and the checks of
``member_add/remove/promote`` requests (pure, no I/O).

A member is a ``Member``; the node's members are a ``Membership`` (id -> Member) that changes as
conf-change and publish entries apply. Between modules members travel as ``Member`` records
(lists of them: a join's answer, a snapshot's members). On disk (storage meta "members", a
snapshot install), in snapshot data and on the wire (join answer, snapshot stream end) they are
the map hex id -> {name, peer_urls, client_urls, is_learner}: ``members_to_wire`` /
``members_from_wire`` convert, where those bytes are written and read, nothing else does.

The KV service (server/kvservice.py) proposes the conf change the check functions approve;
keeping them here lets them be unit-tested without a cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgpack

from fastraft.config import _canonical, member_id, parse_url
from fastraft.errors import BadRequestError

__all__ = [
    "Member",
    "Membership",
    "members_from_wire",
    "members_to_wire",
    "LEARNER_READY_FRACTION",
    "parse_member_add",
    "parse_member_id",
    "check_promote",
    "encode_member_context",
    "new_member_id",
]

# etcd promotes a learner only when its match index is at least 90% of the leader's
# (server.isLearnerReady): a learner far behind would stall the quorum as a voter.
LEARNER_READY_FRACTION = 0.9

_BAD_NAME_CHARS = ",=/ \t"


@dataclasses.dataclass
class Member:
    """One member of the cluster as this node knows it."""

    id: int
    name: str = ""
    peer_urls: list[str] = dataclasses.field(default_factory=list)
    client_urls: list[str] = dataclasses.field(default_factory=list)
    is_learner: bool = False

    @classmethod
    def from_wire(cls, hex_id: str, d: Mapping[str, Any]) -> Member:
        """Raises ValueError for a record that is not one (bytes from a peer or a disk)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"member {hex_id!r}: not a record")
        peer_urls, client_urls = d.get("peer_urls") or [], d.get("client_urls") or []
        if not isinstance(peer_urls, list) or not isinstance(client_urls, list):
            raise ValueError(f"member {hex_id!r}: URLs must be lists")
        return cls(int(hex_id, 16), str(d.get("name", "")), [str(u) for u in peer_urls],
                   [str(u) for u in client_urls], bool(d.get("is_learner", False)))

    def copy(self) -> Member:
        return dataclasses.replace(self, peer_urls=list(self.peer_urls),
                                   client_urls=list(self.client_urls))

    def wire(self) -> dict[str, Any]:
        """The record as stored and sent (keyed by the hex id outside it)."""
        return {"name": self.name, "peer_urls": list(self.peer_urls),
                "client_urls": list(self.client_urls), "is_learner": self.is_learner}

    def info(self) -> dict[str, Any]:
        """The record as clients get it (member_list, member_add/remove/promote answers)."""
        return {"id": self.id, **self.wire()}


class Membership:
    """The members of the cluster as of this node's applied index: id -> Member.

    ``own_client_urls`` are this member's own client URLs, the local truth whatever an entry or
    a snapshot says (they are published through raft for the others)."""

    def __init__(self, own_id: int, own_client_urls: list[str]) -> None:
        self.own_id = own_id
        self._own_client_urls = list(own_client_urls)
        self._by_id: dict[int, Member] = {}

    def __contains__(self, mid: object) -> bool:
        return mid in self._by_id

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, mid: int) -> Member | None:
        return self._by_id.get(mid)

    def load(self, members: Iterable[Member]) -> None:
        """Replace every record with (copies of) ``members``."""
        self._by_id = {m.id: m.copy() for m in members}
        me = self._by_id.get(self.own_id)
        if me is not None:
            me.client_urls = list(self._own_client_urls)

    def copy(self) -> list[Member]:
        """The members as of now, apart from later changes (e.g. a snapshot's)."""
        return [m.copy() for m in self._by_id.values()]

    def wire(self) -> dict[str, dict[str, Any]]:
        """hex id -> record: for storage and join answers (a copy)."""
        return members_to_wire(self._by_id.values())

    def listing(self) -> list[dict[str, Any]]:
        """The members as clients see them, ordered by name."""
        return [m.info() for m in sorted(self._by_id.values(), key=lambda m: m.name)]

    def peer_addrs(self) -> dict[int, tuple[str, int]]:
        """Where to reach the other members (their first peer URL); bad URLs are skipped."""
        out: dict[int, tuple[str, int]] = {}
        for mid, m in self._by_id.items():
            if mid != self.own_id and m.peer_urls:
                try:
                    out[mid] = parse_url(m.peer_urls[0])
                except ValueError:
                    pass
        return out

    # --------------------------------------------------------------- changes applied
    def add(self, mid: int, attrs: Mapping[str, Any], learner: bool) -> Member:
        """A conf change added ``mid`` (its context carries ``attrs``); an existing record
        keeps what ``attrs`` does not say."""
        m = self._by_id.setdefault(mid, Member(mid))
        m.name = str(attrs.get("name", m.name))
        m.peer_urls = [str(u) for u in attrs.get("peer_urls", m.peer_urls)]
        m.client_urls = [str(u) for u in attrs.get("client_urls", m.client_urls)]
        m.is_learner = learner
        return m

    def promote(self, mid: int) -> None:
        m = self._by_id.get(mid)
        if m is not None:
            m.is_learner = False

    def remove(self, mid: int) -> None:
        self._by_id.pop(mid, None)

    def set_client_urls(self, mid: int, urls: list[str]) -> bool:
        """A published entry's client URLs; False when ``mid`` is not a member."""
        m = self._by_id.get(mid)
        if m is None:
            return False
        m.client_urls = list(self._own_client_urls) if mid == self.own_id else list(urls)
        return True


def members_to_wire(members: Iterable[Member]) -> dict[str, dict[str, Any]]:
    """hex id -> record, as stored and sent."""
    return {format(m.id, "x"): m.wire() for m in members}


def members_from_wire(wire: Mapping[str, Any]) -> list[Member]:
    """The members of a stored or received map; raises ValueError for one that is not."""
    if not isinstance(wire, Mapping):
        raise ValueError("members: not a map")
    return [Member.from_wire(str(h), d) for h, d in wire.items()]


def parse_member_add(args: dict[str, Any]) -> tuple[str, list[str], bool]:
    """``{name, peer_urls, learner}`` -> (name, canonical peer URLs, learner).

    Raises BadRequestError saying what is wrong."""
    name = args.get("name")
    if type(name) is not str or not name or len(name) > 128 or any(
            c in name for c in _BAD_NAME_CHARS):
        raise BadRequestError(f"member_add: name {name!r} is not valid (a non-empty string "
                              "without ',', '=', '/' or spaces)")
    urls = args.get("peer_urls")
    if not isinstance(urls, (list, tuple)) or not urls:
        raise BadRequestError("member_add: peer_urls must be a non-empty list of URLs")
    out: list[str] = []
    for u in urls:
        if type(u) is not str:
            raise BadRequestError(f"member_add: peer URL {u!r} is not a string")
        try:
            c = _canonical(u)
        except ValueError as e:
            raise BadRequestError(f"member_add: bad peer URL: {e}") from None
        if c not in out:
            out.append(c)
    learner = args.get("learner", False)
    if type(learner) is not bool:
        raise BadRequestError("member_add: learner must be a bool")
    return name, out, learner


def new_member_id(name: str, peer_urls: list[str], token: str, members: Membership) -> int:
    """The id the new member will have, after checking it clashes with no current member."""
    for m in members:
        h = format(m.id, "x")
        if m.name == name:
            raise BadRequestError(f"member_add: the name {name!r} is already used by member {h}")
        used = set(m.peer_urls)
        for u in peer_urls:
            if u in used:
                raise BadRequestError(f"member_add: peer URL {u} is already used by member "
                                      f"{m.name or h} ({h})")
    mid = member_id(name, peer_urls, token)
    if mid in members:
        raise BadRequestError(f"member_add: member {mid:x} already exists")
    return mid


def parse_member_id(op: str, args: dict[str, Any], members: Membership) -> int:
    """The ``id`` argument of member_remove/promote, which must name a current member."""
    mid = args.get("id")
    if type(mid) is not int or not 0 < mid < 1 << 64:
        raise BadRequestError(f"{op}: id must be a member id (a positive 64-bit integer)")
    if mid not in members:
        raise BadRequestError(f"{op}: member {mid:x} not found in the cluster")
    return mid


def check_promote(mid: int, members: Membership, learner_match: int | None,
                  leader_match: int) -> None:
    """Refuse promoting a voter, or a learner too far behind the leader (as etcd)."""
    m = members.get(mid)
    if m is None or not m.is_learner:
        raise BadRequestError(f"member_promote: member {mid:x} is not a learner (already a voter)")
    if learner_match is None or learner_match < leader_match * LEARNER_READY_FRACTION:
        raise BadRequestError(
            f"member_promote: can only promote a learner member which is in sync with leader "
            f"(member {mid:x} has {learner_match or 0} of the leader's {leader_match} entries)")


def encode_member_context(name: str, peer_urls: list[str]) -> bytes:
    """The conf change's context: the attributes server/node.py's apply reads back."""
    return msgpack.packb({"name": name, "peer_urls": list(peer_urls), "client_urls": []},
                         use_bin_type=True)
