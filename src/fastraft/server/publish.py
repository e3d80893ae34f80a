"""A member's client URLs in the replicated member list (etcd's "publish" of attributes).

``--initial-cluster`` and ``member add`` name peer URLs only, so each member records its own
client URLs in the log, as a ``PUBLISH_OP`` entry, for ``member list`` and the leader hints of
NOT_LEADER answers. A leader proposes its own when elected. A follower or learner cannot propose
(the core has no proposal forwarding), so it asks the leader with the client request
``member_publish`` {id, client_urls}, on the leader's client URL, until it sees its entry
applied. The request carries no proof of who sends it: like every membership request it trusts
its client (fastraft has no authentication yet).
"""

from __future__ import annotations

from typing import Any

import msgpack

from fastraft.client.codec import decode_response, encode_request
from fastraft.config import parse_url
from fastraft.errors import BadRequestError, error_from_code
from fastraft.net.framing import ask_one_frame, frame
from fastraft.server.membership import Membership

__all__ = ["PUBLISH_OP", "PUBLISH_PREFIX", "publish_entry", "parse_publish", "ask_leader"]

# Internal command with a member's client URLs. kv.validate refuses ops it does not know, so a
# client can never propose one as a write; the node recognises it by its msgpack prefix
# without decoding.
PUBLISH_OP = "_member_attrs"
PUBLISH_PREFIX = b"\x92" + msgpack.packb(PUBLISH_OP)
MAX_URLS = 16
_MAX_ANSWER = 1 << 20  # the answer is a header


def publish_entry(mid: int, client_urls: list[str]) -> bytes:
    """The log entry that records ``mid``'s client URLs."""
    return msgpack.packb([PUBLISH_OP, {"id": mid, "client_urls": list(client_urls)}],
                         use_bin_type=True)


def parse_publish(args: dict[str, Any], members: Membership) -> tuple[int, list[str]]:
    """The ``member_publish`` request's (id, client URLs); raises BadRequestError saying why."""
    for name in args:
        if name not in ("id", "client_urls"):
            raise BadRequestError(f"member_publish: unknown argument {name!r}")
    mid, urls = args.get("id"), args.get("client_urls")
    if type(mid) is not int or not 0 < mid < 1 << 64:
        raise BadRequestError("member_publish: id must be a member id (a positive 64-bit "
                              "integer)")
    if mid not in members:
        raise BadRequestError(f"member_publish: member {mid:x} not found in the cluster")
    if (not isinstance(urls, list) or not 0 < len(urls) <= MAX_URLS
            or not all(isinstance(u, str) and len(u) <= 512 for u in urls)):
        raise BadRequestError(f"member_publish: client_urls must be a list of 1 to {MAX_URLS} "
                              f"URLs")
    for u in urls:
        try:
            parse_url(u)
        except ValueError as e:
            raise BadRequestError(f"member_publish: bad client URL {u!r}: {e}") from None
    return mid, list(urls)


async def ask_leader(leader_url: str, mid: int, client_urls: list[str], timeout: float) -> bool:
    """Send ``member_publish`` to the leader at ``leader_url`` (its client URL) and wait for its
    answer: True if the URLs were recorded already, False if the leader proposed them now.
    Raises the leader's FastraftError, OSError or asyncio.TimeoutError."""
    body = await ask_one_frame(parse_url(leader_url), frame(encode_request(
        1, "member_publish", {"id": mid, "client_urls": client_urls})), _MAX_ANSWER, timeout)
    _, err, res = decode_response(body)
    if err is not None:
        raise error_from_code(*err)
    return res.get("recorded") is True
