"""Joining a running cluster (``--initial-cluster-state existing`` with an empty data dir).

The new member's cluster id cannot be computed from ``--initial-cluster`` (the cluster id comes
from the INITIAL members, and the list now names the new member too), so it asks the other
members listed there, on their peer port: a hello with cluster id 0 is a join query, answered
with the cluster id and the current member list (net/peercodec.py). The member must already be
in that
list (``fastractl member add`` first): its id is the one member_add assigned, since both hash
the same name, peer URLs and token.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastraft.config import ServerConfig, parse_url
from fastraft.errors import ConfigError
from fastraft.net.framing import WireError, ask_one_frame, frame
from fastraft.net.peercodec import decode_join_answer, encode_hello
from fastraft.server.membership import Member, members_from_wire

__all__ = ["discover_cluster", "query_member"]

log = logging.getLogger("fastraft.join")

# The answer is one small frame; anything bigger is not a fastraft member.
_MAX_ANSWER = 16 * 1024 * 1024
# A member that answers without listing us may lag the leader by a moment: ask again for this
# long before concluding that `member add` was not run.
NOT_LISTED_GRACE = 1.0


async def query_member(addr: tuple[str, int], member_id: int, timeout: float
                       ) -> tuple[int, list[Member]]:
    """Ask one member at ``addr`` (its peer port) for (cluster id, members).

    Raises OSError, asyncio.TimeoutError or WireError."""
    body = await ask_one_frame(addr, frame(encode_hello(0, member_id)), _MAX_ANSWER, timeout,
                               closed="closed without answering (an older fastraft, or "
                                      "another cluster's member?)")
    cid, wire = decode_join_answer(body)  # checked for shape there
    return cid, members_from_wire(wire)


async def discover_cluster(cfg: ServerConfig, timeout: float = 5.0
                           ) -> tuple[int, list[Member]]:
    """(cluster id, members) of the running cluster this member joins.

    Asks the other members of --initial-cluster in turn until one lists this member, for at
    most ``timeout`` seconds. Raises ConfigError saying what went wrong."""
    others = [(name, url) for name, urls in cfg.initial_cluster if name != cfg.name
              for url in urls]
    if not others:
        raise ConfigError("--initial-cluster-state existing: --initial-cluster lists no other "
                          "member to join through", flag="initial-cluster")
    me = format(cfg.member_id, "x")  # as log lines and messages name it
    problems: dict[str, str] = {}
    not_listed: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    first_answer = time.monotonic()
    for _round in range(1000):  # bounded in count and (below) in time
        for name, url in others:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                cid, members = await query_member(parse_url(url), cfg.member_id, min(1.0, left))
            except (OSError, asyncio.TimeoutError, WireError, ValueError) as e:
                problems[f"{name} ({url})"] = (str(e) or type(e).__name__)
                continue
            if any(m.id == cfg.member_id for m in members):
                log.info("%s: joining cluster %x (answered by %s)", cfg.name, cid, name)
                return cid, members
            if not not_listed:
                first_answer = time.monotonic()
            not_listed[f"{name} ({url})"] = cid
        if time.monotonic() >= deadline:
            break
        if not_listed and time.monotonic() >= first_answer + NOT_LISTED_GRACE:
            break
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if not_listed:
        asked = ", ".join(not_listed)
        raise ConfigError(
            f"this member ({cfg.name}, {me}) is not in the cluster's member list (asked "
            f"{asked}); run `fastractl member add {cfg.name} "
            f"--peer-urls={','.join(cfg.initial_advertise_peer_urls)}` first, with the same "
            f"--initial-cluster-token", flag="initial-cluster")
    detail = "; ".join(f"{k}: {v}" for k, v in problems.items())
    raise ConfigError(f"cannot join: no member of --initial-cluster answered within "
                      f"{timeout:g}s ({detail})", flag="initial-cluster")
