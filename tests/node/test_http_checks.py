"""server/health.py's decisions against a stand-in node (no processes): what makes /readyz and
/health answer 503, and the read index hook of server/reads.py they rely on."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fastraft.errors import FastraftError, NoLeaderError
from fastraft.raft.core import ReadState
from fastraft.server.health import MemberHttp
from fastraft.server.reads import LinearizableReads
from fastraft.server.stats import NodeStats


class _Reads:
    """reads.read as the checks call it; the test says when the index and the answer come."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def read(self, loop: Any, cb: Any, timeout: float | None = None,
             on_index: Any = None) -> None:
        self.calls.append((cb, on_index))


def _node(*, leader: int = 1, learner: bool = False, applied: int = 10) -> Any:
    raft = SimpleNamespace(leader=leader, role="follower", learners=(2,) if learner else (),
                           commit=applied, last_index=applied, term=3)
    return SimpleNamespace(
        raft=raft, kv=SimpleNamespace(applied=applied, revision=5), storage=None,
        reads=_Reads(), stats=NodeStats(), read_timeout=3.0, serving=True, closed=False,
        service=SimpleNamespace(check_timeout=0.5),
        cfg=SimpleNamespace(election_timeout=500, name="n2", cluster_id=7), id=2, hex_id="2",
        status=lambda: {"leader": leader, "is_learner": learner})


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 5))


async def _asked(node: Any, check: Any) -> tuple[asyncio.Future[Any], Any, Any]:
    """Start ``check``; return it with the (cb, on_index) of the read it asked for."""
    task = asyncio.ensure_future(check)
    await asyncio.sleep(0)
    cb, on_index = node.reads.calls[-1]
    return task, cb, on_index


def test_readyz_far_behind_the_read_index_is_503_without_waiting_for_the_apply() -> None:
    node = _node(applied=10)
    http = MemberHttp(node, max_lag=100)

    async def t() -> Any:
        task, _, on_index = await _asked(node, http.readyz(""))
        on_index(500)  # the leader had committed 500; we applied 10
        return await task

    res = _run(t())
    assert res.status == 503 and b"490 entries behind" in res.body


def test_readyz_a_little_behind_waits_for_the_apply_then_is_ready() -> None:
    node = _node(applied=10)
    http = MemberHttp(node, max_lag=100)

    async def t() -> Any:
        task, cb, on_index = await _asked(node, http.readyz(""))
        on_index(60)
        await asyncio.sleep(0.01)
        assert not task.done()  # 50 behind: within the lag, waits for the apply
        cb(None)  # applied reached the read index
        return await task

    res = _run(t())
    assert (res.status, res.body) == (200, b"ok\n")


def test_readyz_learner_no_leader_and_read_failure_are_503() -> None:
    res = _run(MemberHttp(_node(learner=True), 100).readyz(""))
    assert res.status == 503 and b"learner" in res.body
    res = _run(MemberHttp(_node(leader=0), 100).readyz(""))
    assert res.status == 503 and b"no leader" in res.body
    node = _node()
    http = MemberHttp(node, 100)

    async def t() -> Any:
        task, cb, _ = await _asked(node, http.readyz(""))
        cb(NoLeaderError("the read could not be confirmed"))
        return await task

    res = _run(t())
    assert res.status == 503 and b"could not be confirmed" in res.body


def test_health_is_etcds_json_and_is_counted() -> None:
    node = _node()
    http = MemberHttp(node, 100)

    async def t(err: FastraftError | None) -> Any:
        task, cb, _ = await _asked(node, http.health(""))
        cb(err)
        return await task

    ok = _run(t(None))
    assert ok.status == 200 and json.loads(ok.body) == {"health": "true", "reason": ""}
    bad = _run(t(NoLeaderError("no quorum")))
    assert bad.status == 503 and json.loads(bad.body) == {"health": "false",
                                                          "reason": "no quorum"}
    # serializable=true: the local view only, no read asked.
    calls = len(node.reads.calls)
    assert _run(http.health("serializable=true")).status == 200
    assert len(node.reads.calls) == calls
    nl = _run(MemberHttp(_node(leader=0), 100).health(""))
    assert json.loads(nl.body) == {"health": "false", "reason": "RAFT NO LEADER"}
    text = http.metrics("").body.decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {s.labels["result"]: s.value for s in fams["fastraft_health_checks"].samples}
    assert counts == {"ok": 2.0, "failed": 1.0}


def test_the_read_index_reaches_on_index_before_the_apply_and_the_round_is_timed() -> None:
    applied = [5]
    asked: list[bytes] = []
    raft = SimpleNamespace(leader=1, read_index=asked.append)
    stats = NodeStats()
    reads = LinearizableReads("n1", 3.0, raft=lambda: raft, closed=lambda: False,
                              applied=lambda: applied[0], schedule_ready=lambda: None,
                              latency=stats.read_index_seconds)
    seen: list[Any] = []

    async def t() -> None:
        loop = asyncio.get_running_loop()
        reads.read(loop, lambda err: seen.append(("done", err)), timeout=1.0,
                   on_index=lambda i: seen.append(("index", i)))
        await asyncio.sleep(0)  # the round is asked on the next loop turn
        assert len(asked) == 1
        reads.on_read_states([ReadState(asked[0], 7, True)])
        assert seen == [("index", 7)]  # told the index; not servable yet (applied 5)
        applied[0] = 7
        reads.on_applied()
        assert seen == [("index", 7), ("done", None)]

    _run(t())
    assert sum(stats.read_index_seconds.counts) == 1
