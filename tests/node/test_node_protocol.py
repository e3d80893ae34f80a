"""The client-facing server against a live member: bad input gets an error, never a crash."""

from __future__ import annotations

import socket
import struct
import time

import msgpack
import pytest

from fastraft.tools.localcluster import LocalCluster, request
from fastraft.net.framing import FrameDecoder, frame
from fastraft.client.codec import decode_response, encode_request


def _connect(lc: LocalCluster) -> socket.socket:
    host, _, port = lc.members[0].endpoint.rpartition(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_responses(s: socket.socket, n: int, timeout: float = 5.0) -> list[tuple]:
    """Read n responses (bounded by `timeout`); returns [(req_id, error, result)]."""
    dec = FrameDecoder(64 * 1024 * 1024)
    out: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} responses within {timeout}s: {out}"
        s.settimeout(left)
        data = s.recv(65536)
        if not data:
            break
        out.extend(decode_response(b) for b in dec.feed(data))
    return out


def _closed_by_server(s: socket.socket, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
    return False


@pytest.fixture
def member(make_cluster) -> LocalCluster:
    return make_cluster(1)


def test_malformed_requests_get_errors_and_the_server_keeps_serving(member: LocalCluster) -> None:
    s = _connect(member)
    bad = [
        (b"\xc1\xc1\xc1", None),  # not msgpack at all
        (msgpack.packb({"not": "a list"}), None),  # wrong envelope shape
        (msgpack.packb([7, 42, {}]), 7),  # op is not a string
        (msgpack.packb([8, "put", ["key", "value"]]), 8),  # args not a map
        (msgpack.packb([9, "put", {"key": "text-not-bytes", "value": b"v"}]), 9),
        (msgpack.packb([10, "put", {"key": b"k"}]), 10),  # value missing
        (msgpack.packb([11, "range", {"key": b"k", "serializable": "yes"}]), 11),
        (msgpack.packb([12, "range", {"key": b"k", "limit": -1}]), 12),
    ]
    unknown = msgpack.packb([13, "frobnicate", {}])
    # All in one write: the replies come back together, each for its own request id.
    s.sendall(b"".join(frame(body) for body, _ in bad) + frame(unknown))
    got = _read_responses(s, len(bad) + 1)
    assert len(got) == len(bad) + 1
    for (body, rid), (got_id, err, _res) in zip(bad, got):
        assert err is not None and err[0] == "BAD_REQUEST", (body, err)
        assert got_id == (rid or 0)
    assert got[-1][0] == 13 and got[-1][1][0] == "UNKNOWN_OP"
    # The same connection still works after all that.
    s.sendall(frame(encode_request(14, "put", {"key": b"k", "value": b"v"})))
    (rid, err, res), = _read_responses(s, 1)
    assert rid == 14 and err is None and res["header"]["revision"] >= 2
    s.close()


def test_oversized_frame_is_refused_and_the_connection_closed(member: LocalCluster) -> None:
    s = _connect(member)
    ok = frame(encode_request(1, "status", {}))
    # A valid request, then a length prefix far over --max-request-bytes: the first is still
    # answered, the second gets REQUEST_TOO_LARGE and the stream (unsplittable now) is closed.
    s.sendall(ok + struct.pack(">I", 64 * 1024 * 1024) + b"x" * 100)
    got = _read_responses(s, 2)
    assert got[0][0] == 1 and got[0][1] is None
    assert got[1][1] is not None and got[1][1][0] == "REQUEST_TOO_LARGE"
    assert _closed_by_server(s)
    s.close()
    # A value just over --max-request-bytes in a frame under the frame limit (which allows
    # 1 KiB of envelope) is a per-request error, and the connection stays usable.
    err, _ = request(member.members[0].endpoint, "put",
                     {"key": b"big", "value": b"v" * (1_572_864 + 100)})
    assert err is not None and err[0] == "VALUE_TOO_LARGE"
    # And the member serves other connections throughout.
    err, res = request(member.members[0].endpoint, "range", {"key": b"big"})
    assert err is None and res["count"] == 0


def test_garbage_stream_then_disconnect_does_not_hurt_the_member(member: LocalCluster) -> None:
    for chunk in (b"\x00", b"\x00\x00\x00\x05abc", b"\xff" * 3):  # partial frames, then hang up
        s = _connect(member)
        s.sendall(chunk)
        s.close()
    err, res = request(member.members[0].endpoint, "put", {"key": b"a", "value": b"1"})
    assert err is None
    err, res = request(member.members[0].endpoint, "range", {"key": b"a"})
    assert err is None and res["kvs"][0]["value"] == b"1"


def test_pipelined_requests_are_answered_by_id(member: LocalCluster) -> None:
    s = _connect(member)
    n = 200
    reqs = [frame(encode_request(i, "put", {"key": b"p%d" % (i % 7), "value": b"%d" % i}))
            for i in range(1, n + 1)]
    s.sendall(b"".join(reqs))
    got = _read_responses(s, n)
    assert sorted(r[0] for r in got) == list(range(1, n + 1))
    assert all(r[1] is None for r in got)
    revs = [r[2]["header"]["revision"] for r in sorted(got)]
    # Applied in the order sent on the connection: one revision each, increasing.
    assert revs == sorted(revs) and len(set(revs)) == n
    # A linearizable read sees the last write to each key.
    err, res = request(member.members[0].endpoint, "range", {"key": b"p3"})
    last3 = max(i for i in range(1, n + 1) if i % 7 == 3)
    assert err is None and res["kvs"][0]["value"] == b"%d" % last3
    s.close()


def test_status_member_list_and_health(member: LocalCluster) -> None:
    ep = member.members[0].endpoint
    err, st = request(ep, "status")
    assert err is None
    assert st["leader"] == st["member_id"] != 0 and st["errors"] == []
    assert st["raft_applied_index"] <= st["raft_index"] and st["raft_term"] >= 1
    err, ml = request(ep, "member_list")
    assert err is None and [m["name"] for m in ml["members"]] == ["n1"]
    assert ml["members"][0]["client_urls"] == [f"http://{ep}"]
    err, h = request(ep, "health")
    assert err is None and h["health"] is True
