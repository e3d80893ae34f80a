"""Client and AsyncClient against the fake server (tests/wire/fakeserver.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from fakeserver import FakeCluster
from fastraft.client.api import (
    AsyncClient,
    Client,
    Compare,
    DeleteResult,
    GetResult,
    KeyValue,
    Op,
    PutResult,
    parse_endpoint,
    prefix_range_end,
)
from fastraft.errors import (
    BadRequestError,
    CompactedError,
    FutureRevisionError,
    LeaseUnavailableError,
    NoLeaderError,
    TimeoutError,
    UnavailableError,
)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(3) as c:
        yield c


def dead_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


# ------------------------------------------------------------------------- pure helpers


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:2379") == ("127.0.0.1", 2379)
    assert parse_endpoint("http://h:1/") == ("h", 1)
    assert parse_endpoint("[::1]:5") == ("::1", 5)
    for bad in ("h", "h:0", "h:x", "https://h:1", ":1", "[::1]", "h:70000"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"a") == b"b"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


def test_constructor_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        Client([])
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError):
        AsyncClient(["nope"])


# ------------------------------------------------------------------------- blocking client


def test_put_get_delete(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=2) as c:
        r = c.put("k1", "v1")
        assert isinstance(r, PutResult) and r.prev_kv is None and r.header.revision == 2
        r = c.put(b"k1", b"v2", prev_kv=True)
        assert r.prev_kv is not None and r.prev_kv.value == b"v1"
        g = c.get("k1")
        assert isinstance(g, GetResult) and g.count == 1 and not g.more
        kv = g.kvs[0]
        assert kv == KeyValue(b"k1", b"v2", 2, 3, 2, 0)
        assert c.get("missing").kvs == []
        d = c.delete("k1", prev_kv=True)
        assert isinstance(d, DeleteResult) and d.deleted == 1 and d.prev_kvs[0].value == b"v2"
        assert c.get("k1").count == 0


def test_ranges_and_prefix(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=2) as c:
        for k in ("a/1", "a/2", "a/3", "b/1"):
            c.put(k, k.upper())
        assert [kv.key for kv in c.get("a/", prefix=True).kvs] == [b"a/1", b"a/2", b"a/3"]
        assert [kv.key for kv in c.get("a/2", "b").kvs] == [b"a/2", b"a/3"]
        g = c.get("a/", prefix=True, limit=2)
        assert len(g.kvs) == 2 and g.count == 3 and g.more
        assert all(kv.value == b"" for kv in c.get("a/", prefix=True, keys_only=True).kvs)
        g = c.get("a/", prefix=True, count_only=True)
        assert g.count == 3 and g.kvs == []
        assert c.get("", prefix=True).count == 4
        assert c.delete("a/", prefix=True).deleted == 3
        assert c.get("", prefix=True, consistency="serializable").count == 1


def test_bad_input_is_rejected_before_sending(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=2) as c:
        with pytest.raises(BadRequestError):
            c.put("", "v")
        with pytest.raises(TypeError):
            c.put(1, "v")  # type: ignore[arg-type]
        with pytest.raises(BadRequestError):
            c.get("k", consistency="eventual")  # type: ignore[arg-type]
        with pytest.raises(BadRequestError):
            c.get("k", "z", prefix=True)
        with pytest.raises(BadRequestError):
            c.get("k", limit=-1)
        with pytest.raises(BadRequestError):
            c.compact(-3)
        with pytest.raises(BadRequestError):
            Compare.value("k", "~", "v")
        with pytest.raises(TypeError):
            c.txn(["nope"], [], [])  # type: ignore[list-item]
    assert sum(sum(s.calls.values()) for s in cluster.servers) == 0


def test_redirect_to_leader_hint(cluster: FakeCluster) -> None:
    cluster.set_leader(0)
    f1, f2, lead = cluster.servers[1], cluster.servers[2], cluster.servers[0]
    # The leader is not even among the endpoints given: the hint alone finds it.
    with Client([f1.endpoint, f2.endpoint], timeout=2) as c:
        c.put("k", "v")
        assert f1.calls["put"] == 1 and lead.calls["put"] == 1 and f2.calls["put"] == 0
        c.put("k", "v2")  # remembered: straight to the leader
        assert f1.calls["put"] == 1 and lead.calls["put"] == 2
        assert c.get("k").kvs[0].value == b"v2"


def test_connection_refused_tries_next_endpoint(cluster: FakeCluster) -> None:
    with Client([dead_endpoint(), cluster.servers[0].endpoint], timeout=2) as c:
        c.put("k", "v")
        assert cluster.servers[0].calls["put"] == 1


def test_a_hint_naming_an_endpoint_that_refused_is_not_chased(cluster: FakeCluster) -> None:
    """The leader crashed: its port refuses, the followers still name it until their election
    timeout. The call must keep its paced rounds instead of bouncing between the follower and
    the dead leader with a fresh connection each time, without pause."""
    dead = dead_endpoint()
    f1, f2, _ = cluster.servers
    for f in (f1, f2):
        f.role, f.leader_id, f.leader_url = "follower", 0x99, f"http://{dead}"
    with Client([dead, f1.endpoint, f2.endpoint], timeout=0.5) as c:
        with pytest.raises((UnavailableError, TimeoutError)):
            c.put("k", "v")
    # Rounds of one attempt per member, 25-50 ms apart, for 0.5 s: ~10-20 each (chasing the
    # hint made it thousands); the bound leaves room for a slow machine either way.
    assert 1 <= f1.calls["put"] + f2.calls["put"] <= 60, (f1.calls, f2.calls)


def test_all_endpoints_unreachable(cluster: FakeCluster) -> None:
    t0 = time.monotonic()
    with Client([dead_endpoint(), dead_endpoint()], timeout=0.4) as c:
        with pytest.raises(UnavailableError, match="no endpoint reachable"):
            c.get("k")
    assert time.monotonic() - t0 < 3.0  # its 0.4 s, well below the 5 s default; load slack


def test_no_leader_fails_within_timeout(cluster: FakeCluster) -> None:
    cluster.store.put({"key": b"k", "value": b"v"})
    cluster.set_leader(None)
    with Client(cluster.endpoints, timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(NoLeaderError, match="no leader"):
            c.get("k")
        assert 0.4 < time.monotonic() - t0 < 3.0  # retried until its 0.5 s; below the 5 s default
        with pytest.raises(NoLeaderError):
            c.put("k", "v")
        # Serializable reads need no leader.
        assert c.get("k", consistency="serializable").kvs[0].value == b"v"
    # It kept trying every member until the deadline, at a bounded pace.
    assert all(2 <= s.calls["put"] <= 40 for s in cluster.servers)


def test_no_leader_then_leader_elected(cluster: FakeCluster) -> None:
    cluster.set_leader(None)
    cluster.loop.call_soon_threadsafe(
        lambda: cluster.loop.call_later(0.2, cluster.set_leader, 2))
    with Client(cluster.endpoints, timeout=3) as c:
        c.put("k", "v")
    assert cluster.store.revision == 2  # applied exactly once
    assert cluster.servers[2].role == "leader"


def test_write_timeout_is_not_retried_and_says_unknown(cluster: FakeCluster) -> None:
    cluster.servers[0].delays["put"] = 2.0
    with Client(cluster.endpoints, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="unknown"):
            c.put("k", "v")
        # Gave up at its own 0.3 s: the answer (due at 2 s) would have made the put succeed.
        assert time.monotonic() - t0 < 2.0
    assert sum(s.calls["put"] for s in cluster.servers) == 1


def test_lost_connection_write_unknown_read_retried(cluster: FakeCluster) -> None:
    cluster.servers[0].drop_ops = {"put", "range"}
    with Client(cluster.endpoints, timeout=2) as c:
        with pytest.raises(TimeoutError, match="unknown"):
            c.put("k", "v")
        assert sum(s.calls["put"] for s in cluster.servers) == 1
        cluster.store.put({"key": b"k", "value": b"v"})
        # servers 1 and 2 are followers, so this linearizable read is redirected to 0, which
        # drops it; a serializable one succeeds on the next member.
        assert c.get("k", consistency="serializable").kvs[0].value == b"v"
        assert cluster.servers[0].calls["range"] == 1


def test_not_committed_write_is_retried(cluster: FakeCluster) -> None:
    cluster.servers[0].script = [("NOT_COMMITTED", "overwritten by a new leader")]
    with Client(cluster.endpoints, timeout=2) as c:
        c.put("k", "v")
    assert cluster.servers[0].calls["put"] == 2
    assert cluster.store.kvs[b"k"]["value"] == b"v"


def test_a_lease_refusal_that_passes_is_asked_again_after_the_pause_it_names(
        cluster: FakeCluster) -> None:
    """A new leader before its first acknowledged heartbeat round refuses a lease read with
    retry_ms: the client asks the same member again after that pause, within the call's time;
    an expired lease (no retry_ms: a cut-off leader) is raised at once."""
    cluster.store.put({"key": b"k", "value": b"v"})
    leader = cluster.servers[0]
    leader.script = [("LEASE_UNAVAILABLE", "no heartbeat round acknowledged", {"retry_ms": 50})
                     ] * 2
    with Client(cluster.endpoints, timeout=2) as c:
        t0 = time.monotonic()
        assert c.get("k", consistency="lease").kvs[0].value == b"v"
        assert time.monotonic() - t0 >= 0.1  # two pauses of 50 ms, not a busy loop
        assert leader.calls["range"] == 3
        leader.script = [("LEASE_UNAVAILABLE", "lease expired")]
        with pytest.raises(LeaseUnavailableError, match="lease expired"):
            c.get("k", consistency="lease")
        assert leader.calls["range"] == 4
    # Still refused when the call's time runs out: the leader's reason, not a bare timeout.
    leader.script = [("LEASE_UNAVAILABLE", "transfer in progress", {"retry_ms": 100})] * 100
    with Client(cluster.endpoints, timeout=0.5) as c:
        with pytest.raises(LeaseUnavailableError, match="transfer in progress"):
            c.get("k", consistency="lease")
    assert 4 + 3 <= leader.calls["range"] <= 4 + 6

    async def main() -> None:
        leader.script = [("LEASE_UNAVAILABLE", "no heartbeat round", {"retry_ms": 20})]
        async with AsyncClient(cluster.endpoints, timeout=2) as c:
            assert (await c.get("k", consistency="lease")).kvs[0].value == b"v"

    before = leader.calls["range"]
    asyncio.run(main())
    assert leader.calls["range"] == before + 2


def test_a_write_refused_by_a_stopping_member_is_sent_again(cluster: FakeCluster) -> None:
    """STOPPING means the write was never proposed (a stopping member answers TIMEOUT for one it
    had), so the client sends it again, here to the leader a follower names."""
    cluster.servers[0].script = [("STOPPING", "the member is stopping")]
    with Client(cluster.endpoints, timeout=2) as c:
        c.put("k", "v")
    assert cluster.servers[0].calls["put"] == 2
    assert cluster.store.kvs[b"k"]["value"] == b"v"


def test_server_errors_map_to_exceptions(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=2) as c:
        c.put("k", "v")
        with pytest.raises(FutureRevisionError):
            c.compact(1000)
        c.put("k", "v2")
        c.compact(3)
        with pytest.raises(CompactedError):
            c.get("k", revision=2)
        cluster.servers[0].script = [("KEY_TOO_LARGE", "key is too large")]
        from fastraft.errors import KeyTooLargeError

        with pytest.raises(KeyTooLargeError, match="too large"):
            c.put("k", "v")
        assert cluster.servers[0].calls["put"] == 3  # not retried


def test_txn(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=2) as c:
        c.put("k", "v1")
        r = c.txn([Compare.value("k", "=", "v1")], [Op.put("k", "v2"), Op.get("k")],
                  [Op.delete("k")])
        assert r.succeeded and len(r.responses) == 2
        assert isinstance(r.responses[0], PutResult)
        got = r.responses[1]
        assert isinstance(got, GetResult) and got.kvs[0].value == b"v2"
        r = c.txn([Compare.version("k", ">", 5)], [Op.put("k", "x")], [Op.delete("k")])
        assert not r.succeeded and isinstance(r.responses[0], DeleteResult)
        assert r.responses[0].deleted == 1
        assert c.get("k").count == 0
        assert Compare.mod("k", "<", 3).to_wire() == ["mod", "<", b"k", b"", 3]


def test_status_is_for_one_endpoint(cluster: FakeCluster) -> None:
    cluster.set_leader(1)
    with Client(cluster.endpoints, timeout=1) as c:
        st = c.status()  # the first endpoint, a follower: not redirected
        assert st["member_id"] == cluster.servers[0].member_id
        assert st["leader"] == cluster.servers[1].member_id
        st = c.status(cluster.servers[2].endpoint)
        assert st["member_id"] == cluster.servers[2].member_id
        with pytest.raises(UnavailableError):
            c.status(dead_endpoint())
        assert c.health()["health"] is True
        members = c.member_list()
        assert [m.id for m in members] == [s.member_id for s in cluster.servers]
        assert members[0].client_urls == [cluster.servers[0].url]


def test_idle_connection_closed_by_server_is_replaced(cluster: FakeCluster) -> None:
    with Client([cluster.servers[0].endpoint], timeout=2) as c:
        c.put("k", "v")
        conn = c._conns[parse_endpoint(cluster.servers[0].endpoint)]
        conn.sock.shutdown(socket.SHUT_WR)  # make the server close its side
        deadline = time.monotonic() + 2
        while conn.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not conn.alive()
        c.put("k", "v2")  # a fresh connection, not an "outcome unknown"
        assert cluster.servers[0].connections == 2


# ------------------------------------------------------------------------- async client


def test_async_basic_and_pipelined(cluster: FakeCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, timeout=2) as c:
            await c.put("k", "v")
            assert (await c.get("k")).kvs[0].value == b"v"
            results = await asyncio.gather(*(c.put(f"p/{i}", str(i)) for i in range(200)))
            assert len({r.header.revision for r in results}) == 200
            gets = await asyncio.gather(*(c.get(f"p/{i}") for i in range(200)))
            assert [g.kvs[0].value for g in gets] == [str(i).encode() for i in range(200)]
            assert (await c.delete("p/", prefix=True)).deleted == 200
            r = await c.txn([Compare.value("k", "=", "v")], [Op.put("k", "w")], [])
            assert r.succeeded
            assert (await c.status())["member_id"] == cluster.servers[0].member_id
            assert len(await c.member_list()) == 3
            assert (await c.health())["health"]

    asyncio.run(main())
    # Every concurrent call shared one connection to the leader.
    assert cluster.servers[0].connections == 1


def test_async_redirect_noleader_and_timeouts(cluster: FakeCluster) -> None:
    async def main() -> None:
        cluster.set_leader(2)
        async with AsyncClient([dead_endpoint(), cluster.servers[0].endpoint], timeout=2) as c:
            await c.put("k", "v")
            assert cluster.servers[2].calls["put"] == 1
        cluster.set_leader(None)
        async with AsyncClient(cluster.endpoints, timeout=0.4) as c:
            t0 = time.monotonic()
            with pytest.raises(NoLeaderError):
                await c.get("k")
            assert time.monotonic() - t0 < 3.0  # its 0.4 s, below the 5 s default; load slack
        cluster.set_leader(0)
        cluster.servers[0].delays["put"] = 2.0
        before = cluster.servers[0].calls["put"]
        async with AsyncClient(cluster.endpoints, timeout=0.3) as c:
            with pytest.raises(TimeoutError, match="unknown"):
                await c.put("k", "late")
            assert cluster.servers[0].calls["put"] == before + 1
            # The connection is still usable after a timed-out call; and the "unknown" write was in
            # fact applied (the fake applies first, then delays the answer).
            assert (await c.get("k")).kvs[0].value == b"late"
        cluster.servers[0].drop_ops = {"delete"}
        async with AsyncClient(cluster.endpoints, timeout=1) as c:
            with pytest.raises(TimeoutError, match="unknown"):
                await c.delete("k")

    asyncio.run(main())


# ------------------------------------------------- endpoints that never answer (partitions)
#
# A partition drops packets: a connect to a cut-off member is neither accepted nor refused. On
# loopback the same is had from a listening socket whose accept queue is full (backlog 0 plus
# one connection never accepted): the kernel drops every further SYN, so a connect hangs.


class Blackhole:
    def __init__(self, port: int = 0) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(0)
        self.filler = socket.create_connection(self.listener.getsockname(), timeout=2)
        self.endpoint = "127.0.0.1:%d" % self.listener.getsockname()[1]

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


@pytest.fixture
def blackholes() -> Iterator[Callable[..., Blackhole]]:
    made: list[Blackhole] = []

    def make(port: int = 0) -> Blackhole:
        made.append(Blackhole(port))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_blackhole_helper_really_hangs(blackholes: Callable[..., Blackhole]) -> None:
    b = blackholes()
    with pytest.raises(socket.timeout):
        socket.create_connection(parse_endpoint(b.endpoint), timeout=0.2)


def _cut_off_leader(cluster: FakeCluster, blackholes: Callable[..., Blackhole]) -> None:
    """Server 0 (the leader the client knows) is cut off: what was sent to it on the open
    connection gets no answer, new connects hang; server 1 is the new leader and server 2
    still names the old one (it has not noticed yet)."""
    old = cluster.servers[0]
    old.delays = {op: 60.0 for op in ("put", "range", "delete", "txn")}
    cluster.stop_server(0)
    blackholes(old.port)
    cluster.set_leader(1)
    cluster.servers[2].leader_id, cluster.servers[2].leader_url = old.member_id, old.url


def test_client_leaves_a_cut_off_leader_for_the_new_one(
        cluster: FakeCluster, blackholes: Callable[..., Blackhole]) -> None:
    with Client(cluster.endpoints, timeout=1.0) as c:
        c.put("k", "v0")  # the client now knows server 0 as the leader
        _cut_off_leader(cluster, blackholes)
        # Sent into the cut-off connection: its outcome is unknown, and it is not re-sent.
        with pytest.raises(TimeoutError, match="unknown"):
            c.put("k", "lost?")
        assert cluster.servers[1].calls["put"] == 0
        # The next writes must not wait on the cut-off leader (which used to eat the whole
        # budget: "no endpoint reachable within 1s: cannot connect to ...: timed out").
        for i in range(5):
            c.put("k", f"v{i + 1}")
        assert cluster.servers[1].calls["put"] == 5
        assert c._slow.slow(parse_endpoint(cluster.servers[0].endpoint))
        assert c.get("k").kvs[0].value == b"v5"


def test_async_client_leaves_a_cut_off_leader_for_the_new_one(
        cluster: FakeCluster, blackholes: Callable[..., Blackhole]) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints, timeout=1.0) as c:
            await c.put("k", "v0")
            _cut_off_leader(cluster, blackholes)
            with pytest.raises(TimeoutError, match="unknown"):
                await c.put("k", "lost?")
            assert cluster.servers[1].calls["put"] == 0
            results = await asyncio.gather(*(c.put("k", f"v{i + 1}") for i in range(5)))
            assert len(results) == 5
            for i in range(5):
                await c.put("k", f"w{i}")
            assert cluster.servers[1].calls["put"] == 10
            assert (await c.get("k")).kvs[0].value == b"w4"

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unanswered_connect_does_not_hold_the_call(
        cluster: FakeCluster, blackholes: Callable[..., Blackhole], kind: str) -> None:
    """The next endpoint is dialled beside one that has not answered after a short stagger,
    long before that one's connect timeout; a write whose connect never completed was never
    sent, so it is sent elsewhere (exactly once)."""
    eps = [blackholes().endpoint, cluster.servers[0].endpoint]
    t0 = time.monotonic()
    if kind == "sync":
        with Client(eps, timeout=6.0, connect_timeout=3.0) as c:
            c.put("k", "v")
    else:
        async def main() -> None:
            async with AsyncClient(eps, timeout=6.0, connect_timeout=3.0) as c:
                await c.put("k", "v")
        asyncio.run(main())
    # Generous: the stagger is 0.1 s; without it the call waits the 2 s connect bound.
    assert time.monotonic() - t0 < 1.5
    assert cluster.servers[0].calls["put"] == 1 and cluster.store.revision == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_only_unanswering_endpoints_fail_clearly_within_the_timeout(
        blackholes: Callable[..., Blackhole], kind: str) -> None:
    eps = [blackholes().endpoint, blackholes().endpoint]
    t0 = time.monotonic()
    with pytest.raises(UnavailableError, match="no endpoint reachable within 0.6s.*timed out"):
        if kind == "sync":
            with Client(eps, timeout=0.6) as c:
                c.put("k", "v")
        else:
            async def main() -> None:
                async with AsyncClient(eps, timeout=0.6) as c:
                    await c.put("k", "v")
            asyncio.run(main())
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_read_without_answer_is_asked_elsewhere(cluster: FakeCluster, kind: str) -> None:
    """One read attempt waits request_timeout, not the whole budget, then another member."""
    cluster.store.put({"key": b"k", "value": b"v"})
    cluster.servers[0].delays["range"] = 60.0
    if kind == "sync":
        with Client(cluster.endpoints, timeout=3.0, request_timeout=0.3) as c:
            g = c.get("k", consistency="serializable")
    else:
        async def main() -> GetResult:
            async with AsyncClient(cluster.endpoints, timeout=3.0, request_timeout=0.3) as c:
                return await c.get("k", consistency="serializable")
        g = asyncio.run(main())
    assert g.kvs[0].value == b"v"
    assert cluster.servers[0].calls["range"] == 1
    assert cluster.servers[1].calls["range"] + cluster.servers[2].calls["range"] == 1


def test_client_rejects_bad_timeouts() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        Client("127.0.0.1:1", connect_timeout=0)
    with pytest.raises(ValueError, match="request_timeout"):
        AsyncClient("127.0.0.1:1", request_timeout=-1)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_write_request_timeout_gives_up_sooner_and_never_resends(cluster: FakeCluster,
                                                                    kind: str) -> None:
    """With request_timeout a sent write that gets no answer ends early, as outcome unknown
    (the fake applied it: unknown is the truth), and is not sent to anyone else."""
    cluster.servers[0].delays["put"] = 60.0
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="unknown"):
        if kind == "sync":
            with Client(cluster.endpoints, timeout=5.0, request_timeout=0.3) as c:
                c.put("k", "v")
        else:
            async def main() -> None:
                async with AsyncClient(cluster.endpoints, timeout=5.0, request_timeout=0.3) as c:
                    await c.put("k", "v")
            asyncio.run(main())
    assert time.monotonic() - t0 < 3.0  # not the 5 s budget
    assert sum(s.calls["put"] for s in cluster.servers) == 1


def test_async_client_fails_clearly_on_a_malformed_response() -> None:
    """A reply that is a valid frame but not a response (another service on the port, a bug)
    fails the call at once and the watch after retries, instead of hanging or being misread."""
    from fastraft.errors import FastraftError
    from fastraft.net.framing import frame

    connections = 0

    async def main() -> None:
        async def answer_garbage(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.read(65536)
            writer.write(frame(b"\xc1 not msgpack"))
            await writer.drain()
            await reader.read(65536)  # keep it open: the client must close it
            writer.close()

        server = await asyncio.start_server(answer_garbage, "127.0.0.1", 0)
        ep = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        try:
            async with AsyncClient([ep], timeout=1.0) as c:
                with pytest.raises(Exception, match="bad response"):
                    await c.status()
                # Creating a watch is retried within the call's time, on a new connection
                # each time the answer is garbage, then fails (the last attempt's reason: the
                # garbage, or the deadline if it came mid-attempt).
                before = connections
                with pytest.raises(FastraftError, match="invalid msgpack|timed out"):
                    async with c.watch("k") as w:
                        async for _ in w:
                            break
                assert connections - before >= 2  # the garbage was seen, not waited on
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
