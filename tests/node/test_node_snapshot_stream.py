"""Snapshot streams into one in-process member (net/snapstream.py, storage staging, node install).

A "leader" here is this test: it builds chunks from a KV of its own and writes the stream (with
snapstream.send_snapshot, or frame by frame when the test needs a broken stream) to the member's
peer port. Checked: a checksum mismatch, a cut stream and a stalled stream are refused and leave
nothing behind (live state, generation, staging dir, column families unchanged); a complete one
after them installs the KV, applied index and member list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import rocksdict

from fastraft.client.api import Client
from fastraft.storage.mvcc import KV
from fastraft.net.snapstream import STALL_TIMEOUT, StreamHello, encode_end, send_snapshot
from fastraft.storage.logstore import Storage
from fastraft.raft.core import Message, MsgType, Snapshot
from fastraft.net.framing import FrameDecoder, frame
from fastraft.net.peercodec import encode_hello, encode_message
from inprocess_member import InProcessMember, free_port
from polling import wait_for

FAKE_LEADER = 0xFEED
SNAP_INDEX = 5000
KEYS = 600


@pytest.fixture
def source(tmp_path: Path) -> Any:
    """Chunks (32 KiB each) of a KV holding KEYS keys of 1 KiB (the install records the
    stream's index, SNAP_INDEX, as applied)."""
    st = Storage.open(str(tmp_path / "src"), cluster_id=1, member_id=2, name="src")
    kv = KV(st)
    entries = [(i + 1, 1, 0, kv.encode_command("put", {"key": b"snap/%05d" % i,
                                                         "value": b"%05d" % i * 205}))
               for i in range(KEYS)]
    kv.apply(entries)
    chunks = list(kv.snapshot_chunks(kv.snapshot_view(), chunk_bytes=32 * 1024))
    st.close()
    assert len(chunks) > 10
    return chunks


@pytest.fixture
def member(tmp_path: Path) -> Any:
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        wait_for(lambda: m.call(lambda: m.node.raft.leader) != 0, 10, "the member to lead")
        with Client(m.endpoint) as c:
            for i in range(20):
                c.put(b"old/%02d" % i, b"x")
        yield m
    finally:
        m.stop()


def _hello(m: InProcessMember, transfer: int) -> StreamHello:
    term = m.call(lambda: m.node.raft.term) + 5
    return StreamHello(m.node.cfg.cluster_id, FAKE_LEADER, m.node.id, transfer, term,
                       SNAP_INDEX, 3, (FAKE_LEADER, m.node.id), ())


def _members(m: InProcessMember) -> dict[str, dict]:
    return {format(FAKE_LEADER, "x"): {"name": "fake", "peer_urls": [
                f"http://127.0.0.1:{free_port()}"], "client_urls": [], "is_learner": False},
            m.node.hex_id: {"name": "solo", "peer_urls": [f"http://127.0.0.1:{m.ports[1]}"],
                            "client_urls": [], "is_learner": False}}


def _raw_stream(m: InProcessMember, frames: list[bytes], answer: bool) -> Any:
    """Write ``frames`` on a new peer connection; return the decoded answer (or None)."""
    with socket.create_connection(("127.0.0.1", m.ports[1]), timeout=10) as s:
        for f in frames:
            s.sendall(f)
        if not answer:
            return None
        dec = FrameDecoder(1 << 16)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                return None
            bodies = dec.feed(data)
            if bodies:
                return msgpack.unpackb(bodies[0], raw=False)
    raise AssertionError("no answer")


def _state(m: InProcessMember) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        node = m.node
        st = node.storage
        return {"gen": st.kv_gen, "applied": node.kv.applied,
                "keys": node.kv.range(b"\x00", b"\x00", count_only=True)["count"],
                "members": sorted(node.members.wire()),
                "snap": st.snapshot_meta(),
                "cfs": sorted(rocksdict.Rdict.list_cf(st.db.path(),
                                                      rocksdict.Options(raw_mode=True))),
                "staged": sorted(n for n in os.listdir(os.path.join(st.data_dir, "snap"))
                                 if n.startswith("stage-"))}
    return m.call(read)


def _chunk_frames(chunks: list[bytes]) -> list[bytes]:
    return [frame(b"C" + c) for c in chunks]


def _nothing_left(m: InProcessMember, before: dict[str, Any]) -> None:
    # Staging is discarded in the receiver's worker thread: poll briefly.
    wait_for(lambda: _state(m) == before, 10, "the member's state to be as before the stream")


def test_checksum_mismatch_is_refused_and_nothing_is_installed(member, source) -> None:
    before = _state(member)
    assert before["keys"] == 20 and before["gen"] == 0 and before["staged"] == []
    digest = bytearray(hashlib.sha256(b"".join(source)).digest())
    digest[0] ^= 1
    end = frame(encode_end(len(source), sum(map(len, source)), bytes(digest),
                           _members(member)))
    ans = _raw_stream(member, [frame(_hello(member, 1).encode()), *_chunk_frames(source), end],
                      answer=True)
    assert ans[0] == "fastraft-snap-ack" and ans[1] is False and "checksum" in ans[2]
    _nothing_left(member, before)
    # A chunk lost on the way (count and digest no longer match) is refused the same way.
    good = hashlib.sha256(b"".join(source)).digest()
    end = frame(encode_end(len(source), sum(map(len, source)), good, _members(member)))
    ans = _raw_stream(member, [frame(_hello(member, 2).encode()),
                               *_chunk_frames(source[:3] + source[4:]), end], answer=True)
    assert ans[1] is False and "checksum" in ans[2]
    _nothing_left(member, before)


def test_members_that_are_not_records_are_refused_and_nothing_is_installed(
        member, source) -> None:
    # A stream whose checksum is right but whose member map is not one (a bad hex id): it is
    # refused at the end frame, before the install writes it, and the member goes on serving.
    # (Before, the map was installed as it came and the member stopped when it loaded it.)
    before = _state(member)
    good = hashlib.sha256(b"".join(source)).digest()
    bad = {**_members(member), "zz": {"name": "x", "peer_urls": [], "client_urls": [],
                                      "is_learner": False}}
    end = frame(encode_end(len(source), sum(map(len, source)), good, bad))
    ans = _raw_stream(member, [frame(_hello(member, 1).encode()), *_chunk_frames(source), end],
                      answer=True)
    assert ans[1] is False and "malformed members" in ans[2]
    _nothing_left(member, before)
    with Client(member.endpoint, timeout=10.0) as c:
        c.put(b"still", b"serving")
        assert c.get(b"still").kvs[0].value == b"serving"


def test_cut_and_stalled_streams_leave_nothing_and_a_retry_from_scratch_installs(
        member, source, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastraft.node")
    before = _state(member)
    # Cut: half the chunks, then the connection closes.
    _raw_stream(member, [frame(_hello(member, 1).encode()),
                         *_chunk_frames(source[:len(source) // 2])], answer=False)
    wait_for(lambda: "refused: the stream was cut" in caplog.text, 10, "the cut noticed")
    _nothing_left(member, before)
    # Stalled: the sender stops writing; the member gives up after its stall timeout.
    member.call(lambda: setattr(member.node.snapshots, "stall_timeout", 0.5))
    ans = _raw_stream(member, [frame(_hello(member, 2).encode()), *_chunk_frames(source[:3])],
                      answer=True)
    assert ans[1] is False and "no progress" in ans[2]
    _nothing_left(member, before)
    # The retry, from scratch, with the real sender (and the default stall timeout again).
    member.call(lambda: setattr(member.node.snapshots, "stall_timeout", STALL_TIMEOUT))
    members = _members(member)

    async def send() -> tuple[int, int]:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return await send_snapshot(("127.0.0.1", member.ports[1]), _hello(member, 3),
                                       iter(source), members, ex)
    n, nbytes = asyncio.run(send())
    assert n == len(source) and nbytes == sum(map(len, source))
    wait_for(lambda: _state(member)["applied"] == SNAP_INDEX, 10, "the snapshot to install")
    after = _state(member)
    assert after["keys"] == KEYS  # the snapshot's keys, none of the old ones
    assert after["gen"] == 3 and after["snap"][0] == SNAP_INDEX
    assert after["members"] == sorted(members)
    assert after["staged"] == [] and "kv" not in after["cfs"] and "kv.3" in after["cfs"]
    res = member.call(lambda: member.node.kv.range(b"snap/00007"))
    assert res["kvs"][0]["value"] == b"00007" * 205
    assert member.call(lambda: member.node.storage.get_meta("members")).keys() == members.keys()


@pytest.mark.parametrize("data", [b"FRSTAGED" + bytes(16),
                                  b"FRSNAP01" + bytes(8) + b"\x92\x80\xc4\x00"],
                         ids=["staged-marker", "in-frame-data"])
def test_a_snapshot_sent_as_a_message_is_ignored_and_the_member_keeps_serving(
        member, data: bytes) -> None:
    before = _state(member)
    term = member.call(lambda: member.node.raft.term) + 5
    msg = Message(MsgType.MsgSnap.value, member.node.id, FAKE_LEADER, term, snapshot=Snapshot(
        SNAP_INDEX, 3, (FAKE_LEADER, member.node.id), (), data))
    with socket.create_connection(("127.0.0.1", member.ports[1]), timeout=10) as s:
        s.sendall(frame(encode_hello(member.node.cfg.cluster_id, FAKE_LEADER))
                  + frame(encode_message(msg)))
        time.sleep(0.3)  # let the member read both frames
    time.sleep(0.2)
    assert member.call(lambda: member.node.exit_code) == 0
    assert member.call(lambda: member.node.raft.term) == term - 5  # the core never saw it
    assert _state(member) == before
    with Client(member.endpoint) as c:
        c.put(b"after", b"1")


def test_the_sender_gives_up_on_a_follower_that_stops_reading() -> None:
    """A follower that accepts the stream but reads nothing (frozen): once the socket buffers
    are full the sender makes no progress and fails after its stall timeout, having built only
    the chunks that fit in those buffers (never the whole store)."""
    pulled: list[int] = []

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(10_000):  # 10 GiB if it were all built
            pulled.append(i)
            yield bytes(1 << 20)

    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        hello = StreamHello(1, 2, 3, 1, 1, 10, 1, (2, 3), ())
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                with pytest.raises(asyncio.TimeoutError):
                    await send_snapshot(("127.0.0.1", port), hello, chunks(), {}, ex,
                                        stall_timeout=0.5)
        finally:
            server.close()
    asyncio.run(run())
    assert 0 < len(pulled) < 200


def test_a_stream_in_progress_is_reported(member, source, caplog, monkeypatch) -> None:
    """The sender reports each chunk written (the host logs from it now and then) and the
    receiver logs how far it got while a stream goes on (every PROGRESS_LOG_SECONDS; 0 here)."""
    import fastraft.server.snapshotter as snapshotter

    caplog.set_level(logging.INFO, logger="fastraft.node")
    monkeypatch.setattr(snapshotter, "PROGRESS_LOG_SECONDS", 0.0)
    seen: list[tuple[int, int]] = []

    async def send() -> tuple[int, int]:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return await send_snapshot(("127.0.0.1", member.ports[1]), _hello(member, 1),
                                       iter(source), _members(member), ex,
                                       progress=lambda n, b: seen.append((n, b)))
    n, nbytes = asyncio.run(send())
    assert seen == [(i + 1, sum(map(len, source[:i + 1]))) for i in range(len(source))]
    assert (n, nbytes) == seen[-1]
    wait_for(lambda: _state(member)["applied"] == SNAP_INDEX, 10, "the snapshot to install")
    staged = [r.getMessage() for r in caplog.records if "receiving snapshot [index" in
              r.getMessage() and "staged" in r.getMessage()]
    assert len(staged) >= len(source) - 1 and f"{len(source)} chunks" in staged[-1]
