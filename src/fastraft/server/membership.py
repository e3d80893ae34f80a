"""Runtime membership: validating ``member_add/remove/promote`` requests (pure, no I/O).

The node (server/node.py) proposes the conf change these functions approve; keeping the checks here
lets them be unit-tested without a cluster. ``members`` is the node's members map: hex id ->
{name, peer_urls, client_urls, is_learner}.
"""

from __future__ import annotations

from typing import Any

import msgpack

from fastraft.config import _canonical, member_id
from fastraft.errors import BadRequestError

__all__ = [
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


def new_member_id(name: str, peer_urls: list[str], token: str,
                  members: dict[str, dict[str, Any]]) -> int:
    """The id the new member will have, after checking it clashes with no current member."""
    for h, m in members.items():
        if m.get("name") == name:
            raise BadRequestError(f"member_add: the name {name!r} is already used by member {h}")
        used = set(m.get("peer_urls") or [])
        for u in peer_urls:
            if u in used:
                raise BadRequestError(f"member_add: peer URL {u} is already used by member "
                                      f"{m.get('name') or h} ({h})")
    mid = member_id(name, peer_urls, token)
    if format(mid, "x") in members:
        raise BadRequestError(f"member_add: member {mid:x} already exists")
    return mid


def parse_member_id(op: str, args: dict[str, Any], members: dict[str, dict[str, Any]]) -> int:
    """The ``id`` argument of member_remove/promote, which must name a current member."""
    mid = args.get("id")
    if type(mid) is not int or not 0 < mid < 1 << 64:
        raise BadRequestError(f"{op}: id must be a member id (a positive 64-bit integer)")
    if format(mid, "x") not in members:
        raise BadRequestError(f"{op}: member {mid:x} not found in the cluster")
    return mid


def check_promote(mid: int, members: dict[str, dict[str, Any]], learner_match: int | None,
                  leader_match: int) -> None:
    """Refuse promoting a voter, or a learner too far behind the leader (as etcd)."""
    if not members[format(mid, "x")].get("is_learner"):
        raise BadRequestError(f"member_promote: member {mid:x} is not a learner (already a voter)")
    if learner_match is None or learner_match < leader_match * LEARNER_READY_FRACTION:
        raise BadRequestError(
            f"member_promote: can only promote a learner member which is in sync with leader "
            f"(member {mid:x} has {learner_match or 0} of the leader's {leader_match} entries)")


def encode_member_context(name: str, peer_urls: list[str]) -> bytes:
    """The conf change's context: the attributes server/node.py's apply reads back."""
    return msgpack.packb({"name": name, "peer_urls": list(peer_urls), "client_urls": []},
                         use_bin_type=True)
