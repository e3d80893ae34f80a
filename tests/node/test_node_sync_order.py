"""When a ready pass applies committed entries relative to its own sync, and the sync thread.

Committed entries handed out by the core are durable already, so the host applies them (and
answers their clients) before a small ready's sync, or while a big ready syncs in the sync
thread. These tests pin that down on one in-process member, and check the sync thread's
contract (error handed back, start returns once the sync runs, stop after pending syncs).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inprocess_member import InProcessMember  # tests/ is on pytest's pythonpath

from fastraft import Client
from fastraft._core import ProposalBatch
from fastraft.server.syncer import Syncer as _Syncer
from fastraft.net.framing import FrameDecoder, frame
from fastraft.client.codec import decode_response, encode_request


def _pipelined_puts(endpoint: str, n: int, chunk: int = 0, gap: float = 0.0) -> list[bool]:
    """Send n puts without waiting for answers (in chunks ``gap`` s apart); return ok per
    answer (bounded wait)."""
    host, port = endpoint.rsplit(":", 1)
    reqs = [frame(encode_request(i + 1, "put", {"key": b"k%d" % (i % 50), "value": b"v" * 100}))
            for i in range(n)]
    chunk = chunk or n
    oks: list[bool] = []
    dec = FrameDecoder(1 << 24)
    with socket.create_connection((host, int(port)), timeout=10.0) as s:
        for i in range(0, n, chunk):
            s.sendall(b"".join(reqs[i:i + chunk]))
            if gap:
                time.sleep(gap)  # spreads the load over several readies; waits for nothing
        deadline = time.monotonic() + 20.0
        while len(oks) < n and time.monotonic() < deadline:
            data = s.recv(1 << 20)
            if not data:
                break
            for body in dec.feed(data):
                _, err, _ = decode_response(body)
                oks.append(err is None)
    return oks


@pytest.fixture
def member(tmp_path: Path) -> Iterator[InProcessMember]:
    """One in-process member that has elected itself and applied a first put."""
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        with Client(m.endpoint, timeout=10.0) as c:  # waits out the first election
            c.put(b"warm", b"up")
        yield m
    finally:
        m.stop()


def test_committed_entries_are_applied_while_the_ready_syncs(
        member: InProcessMember) -> None:
    node = member.node
    st, kv = node.storage, node.kv
    assert st is not None and kv is not None
    # (first index being synced, applied when the sync began, applied before it ended)
    seen: list[tuple[int, int, int]] = []
    real_save, real_sync = st.save, st.sync
    first = [0]

    def save(hs, entries, snap=None):  # type: ignore[no-untyped-def]
        if entries:
            first[0] = entries[0][0]
        return real_save(hs, entries, snap)

    def sync() -> None:  # in the sync thread
        fi, first[0] = first[0], 0
        if fi:
            at_start = kv.applied
            # Everything before this ready's entries is committed (one member) and durable:
            # it must be applied before this sync ends. Bounded poll; the loop applies.
            deadline = time.monotonic() + 5.0
            while kv.applied < fi - 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append((fi, at_start, kv.applied))
            time.sleep(0.005)  # a slow disk: later puts pile up behind this sync
        real_sync()

    def patch() -> None:
        node.inline_sync_max_entries = 0  # every ready with entries syncs in the thread
        st.save = save  # type: ignore[method-assign]
        st.sync = sync  # type: ignore[method-assign]

    member.call(patch)
    oks = _pipelined_puts(member.endpoint, 200, chunk=10, gap=0.002)
    assert oks == [True] * 200
    assert len(seen) >= 2, seen
    assert all(applied_end == fi - 1 for fi, _, applied_end in seen), seen
    # Not vacuous: some ready carried committed entries and applied them during its sync.
    assert any(at_start < fi - 1 for fi, at_start, _ in seen), seen


def test_big_readies_sync_in_the_sync_thread_and_every_put_is_applied(
        member: InProcessMember) -> None:
    node = member.node
    st, kv = node.storage, node.kv
    assert st is not None and kv is not None
    threads: set[str] = set()
    real_sync = st.sync

    def sync() -> None:
        threads.add(threading.current_thread().name)
        real_sync()

    def patch() -> None:
        node.inline_sync_max_entries = 0  # every ready with entries goes to the thread
        st.sync = sync  # type: ignore[method-assign]

    member.call(patch)
    assert _pipelined_puts(member.endpoint, 300) == [True] * 300
    assert threads == {"sync-solo"}, threads
    applied = member.call(lambda: kv.applied)
    assert applied == member.call(lambda: node.raft.commit)  # type: ignore[union-attr]
    assert member.call(lambda: kv.revision) >= 301


def test_syncer_reports_errors_runs_before_start_returns_and_stops() -> None:
    entered = threading.Event()
    release = threading.Event()
    fail = [False]

    def sync() -> None:
        entered.set()
        assert release.wait(10.0)
        if fail[0]:
            raise OSError(5, "disk on fire")

    async def body() -> list[BaseException | None]:
        loop = asyncio.get_running_loop()
        s = _Syncer(sync, "sync-test")
        got: list[BaseException | None] = []
        try:
            for f in (False, True):
                fail[0] = f
                entered.clear()
                release.clear()
                done = loop.create_future()
                s.start(loop, lambda err: (got.append(err), done.set_result(None)))
                # start() returns only once the thread is running the sync
                assert entered.wait(5.0)
                assert not done.done()
                release.set()
                await asyncio.wait_for(done, 10.0)
        finally:
            release.set()
            s.stop()
        assert not s._thread.is_alive()
        return got

    got = asyncio.run(body())
    assert got[0] is None
    assert isinstance(got[1], OSError) and "disk on fire" in str(got[1])


def test_a_full_proposal_batch_is_proposed_at_once_and_every_put_applies(
        member: InProcessMember) -> None:
    # The KV service batches a loop iteration's proposals in _core.ProposalBatch; one that fills up
    # (here: 3 entries) is proposed at once and the rest of the burst starts a new batch.
    # Each put is answered ok exactly once and the store holds them all.
    sizes: list[int] = []

    def small_batches() -> None:
        node = member.node
        node.service._proposals = ProposalBatch(max_entries=3)
        propose = node.raft.propose_batch

        def counting(datas: list[bytes]) -> int:
            sizes.append(len(datas))
            return propose(datas)
        node.raft.propose_batch = counting

    member.call(small_batches)
    with Client(member.endpoint, timeout=10.0) as c:
        before = c.get(b"warm").header.revision
    oks = _pipelined_puts(member.endpoint, 20)
    assert oks == [True] * 20
    assert max(sizes) == 3 and sum(sizes) == 20, sizes
    with Client(member.endpoint, timeout=10.0) as c:
        assert c.get(b"warm").header.revision == before + 20


def test_a_sync_that_fails_in_the_sync_thread_stops_the_member(member: InProcessMember) -> None:
    """An fsync error in the sync thread reaches the loop: the member acknowledges none of the
    writes of that ready, stops (``stopped`` is set, so the process exits) with exit status 1,
    instead of waiting forever on a sync that ended or dying silently."""
    node = member.node
    st = node.storage
    assert st is not None
    failed_in: list[str] = []

    def sync() -> None:
        failed_in.append(threading.current_thread().name)
        raise OSError(28, "No space left on device")

    def patch() -> None:
        node.inline_sync_max_entries = 0  # every ready with entries syncs in the thread
        st.sync = sync  # type: ignore[method-assign]

    member.call(patch)
    oks = _pipelined_puts(member.endpoint, 50)
    assert True not in oks, oks  # nothing that failed to sync was acknowledged
    assert failed_in and failed_in[0] == "sync-solo", failed_in
    deadline = time.monotonic() + 10.0
    while not node.stopped.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.stopped.is_set(), "the member did not stop after its sync failed"
    assert node.exit_code == 1
    assert node.closed
