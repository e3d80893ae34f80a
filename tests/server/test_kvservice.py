"""The KV service (server/kvservice.py) called directly, as a door other than the msgpack listener
would call it: its awaitable form and its callback form, against real in-process members."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fastraft.errors import (
    BadRequestError,
    FastraftError,
    NotLeaderError,
    StoppingError,
    UnknownOperationError,
)
from fastraft.raft.core import LEADER
from inprocess_member import InProcessMember, free_port  # tests/ is on pytest's pythonpath
from polling import wait_for

T = TypeVar("T")


def run(m: InProcessMember, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Await ``coro`` on the member's loop thread."""
    return asyncio.run_coroutine_threadsafe(coro, m.loop).result(timeout)


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[InProcessMember]:
    m = InProcessMember(tmp_path / "solo")
    m.start()
    try:
        wait_for(lambda: m.call(lambda: m.node.raft.role) == LEADER, 10, "the member to lead")
        yield m
    finally:
        m.stop()


def test_call_answers_a_put_and_a_range(solo: InProcessMember) -> None:
    svc = solo.node.service
    put = run(solo, svc.call("put", {"key": b"k", "value": b"v1"}))
    rev = put["header"]["revision"]
    assert rev >= 2 and put["header"]["member_id"] == solo.node.id
    got = run(solo, svc.call("range", {"key": b"k"}))  # linearizable: a ReadIndex round
    assert [(kv["key"], kv["value"]) for kv in got["kvs"]] == [(b"k", b"v1")]
    assert got["header"]["revision"] == rev
    ser = run(solo, svc.call("range", {"key": b"k", "serializable": True}))
    assert [kv["value"] for kv in ser["kvs"]] == [b"v1"]


def test_submit_answers_once_and_flushes_front_ends_after_the_apply(
        solo: InProcessMember) -> None:
    # A front end that buffers its replies is told, once the apply answered its write, to
    # write them out (the msgpack listener's "one write per batch of late replies").
    svc = solo.node.service
    events: list[Any] = []

    def submit() -> None:
        svc.add_flush_hook(lambda: events.append("flush"))
        svc.submit("put", {"key": b"a", "value": b"1"},
                   lambda err, res: events.append((err, res)))
        events.append("submitted")  # a write is answered after it applies, never inline

    solo.call(submit)
    wait_for(lambda: "flush" in solo.call(lambda: list(events)), 10, "the write to apply")
    got = solo.call(lambda: list(events))
    assert got[0] == "submitted"
    answers = [e for e in got if isinstance(e, tuple)]
    assert len(answers) == 1 and answers[0][0] is None
    assert answers[0][1]["header"]["revision"] >= 2
    assert got.index(answers[0]) < got.index("flush")


def test_bad_requests_are_answered_with_their_error_type(solo: InProcessMember) -> None:
    svc = solo.node.service
    with pytest.raises(UnknownOperationError) as e:
        run(solo, svc.call("frobnicate", {}))
    assert e.value.code == "UNKNOWN_OP" and "frobnicate" in e.value.message
    with pytest.raises(BadRequestError):
        run(solo, svc.call("put", {"key": "not bytes", "value": b"v"}))
    # A stream needs a sink: the request/answer doors refuse it instead of hanging.
    with pytest.raises(BadRequestError, match="stream"):
        run(solo, svc.call("watch", {"key": b"k"}))
    # Nothing was written by any of them.
    assert run(solo, svc.call("range", {"key": b"k"}))["kvs"] == []


def test_status_member_list_and_health_through_the_service(solo: InProcessMember) -> None:
    svc = solo.node.service
    st = run(solo, svc.call("status", {}))
    assert st["leader"] == solo.node.id == st["member_id"]
    assert st == {**solo.call(solo.node.status), "db_size": st["db_size"]}
    ml = run(solo, svc.call("member_list", {}))
    assert [m["name"] for m in ml["members"]] == ["solo"] == [
        m["name"] for m in solo.call(solo.node.member_list)]
    h = run(solo, svc.call("health", {}))
    assert h["health"] is True and "read index confirmed" in h["reason"]


def test_a_stopping_member_answers_stopping(tmp_path: Path) -> None:
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        wait_for(lambda: m.call(lambda: m.node.raft.role) == LEADER, 10, "the member to lead")
        svc = m.node.service
        run(m, svc.call("put", {"key": b"k", "value": b"v"}))
        run(m, m.node.stop())  # the loop keeps running: the service is still callable
        for op, args in (("put", {"key": b"k", "value": b"w"}), ("range", {"key": b"k"}),
                         ("status", {})):
            with pytest.raises(StoppingError):
                run(m, svc.call(op, args))
    finally:
        m.stop()


def test_a_write_on_a_follower_names_the_leader_and_its_urls(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p[1]}" for i, p in enumerate(ports))
    members = [InProcessMember(tmp_path / f"m{i}", ports=p, name=f"m{i}",
                               initial_cluster=cluster) for i, p in enumerate(ports)]
    started: list[InProcessMember] = []
    try:
        for m in members:
            m.start()
            started.append(m)

        def leader() -> InProcessMember | None:
            for m in members:
                if m.call(lambda m=m: m.node.raft.role) == LEADER:
                    return m
            return None

        wait_for(lambda: leader() is not None, 15, "a leader")
        lead = leader()
        assert lead is not None
        follower = next(m for m in members if m is not lead)
        want = [f"http://127.0.0.1:{lead.ports[0]}"]

        def refusal() -> FastraftError:
            try:
                run(follower, follower.node.service.call("put", {"key": b"k", "value": b"v"}))
            except FastraftError as e:
                return e
            raise AssertionError("a follower accepted a write")

        # The leader publishes its client URLs through raft: the follower knows them once
        # that entry applied there.
        wait_for(lambda: refusal().extra.get("leader_urls") == want, 15,
                 "the follower to learn the leader's client URLs")
        err = refusal()
        assert isinstance(err, NotLeaderError)
        assert err.leader == format(lead.node.id, "x")
        # Nothing was written through the follower; the leader itself accepts the write.
        assert run(lead, lead.node.service.call("range", {"key": b"k"}))["kvs"] == []
        run(lead, lead.node.service.call("put", {"key": b"k", "value": b"v"}))
    finally:
        for m in reversed(started):
            m.stop()
