"""A big range on a real member, at test size (``--max-response-bytes`` lowered): the client
gets a clear RESPONSE_TOO_LARGE or the data, a long range is read off the member's loop (which
keeps serving meanwhile), and a compaction's records are dropped after its apply."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fastraft
from fastraft.errors import ResponseTooLargeError
from fastraft.server import kvservice
from tests.inprocess_member import InProcessMember

N = 5000
VALUE = b"v" * 200


def fill(c: fastraft.Client) -> None:
    for start in range(0, N, 125):  # 125 puts a txn: 40 writes, not 5000
        c.txn([], [fastraft.Op.put(b"k/%05d" % i, VALUE) for i in range(start, start + 125)],
              [])


@pytest.fixture
def member(tmp_path: Path) -> Any:
    # 1 MiB: keys-only of all 5000 keys fits (~550 KB estimated), with values it does not.
    m = InProcessMember(tmp_path / "m", max_response_bytes=1 << 20)
    m.start()
    try:
        with fastraft.Client([m.endpoint], timeout=10.0) as c:
            fill(c)
        yield m
    finally:
        m.stop()


def test_a_range_past_the_limit_gets_a_clear_error_and_what_fits_is_answered(member: Any) -> None:
    assert N > kvservice.RANGE_INLINE_KEYS  # these answers come from the worker thread
    with fastraft.Client([member.endpoint], timeout=10.0) as c:
        term = c.status(member.endpoint)["raft_term"]
        with pytest.raises(ResponseTooLargeError) as ei:
            c.get("k/", prefix=True)
        assert "1,048,576 bytes" in str(ei.value) and "--limit" in str(ei.value)
        r = c.get("k/", prefix=True, keys_only=True)
        assert [kv.key for kv in r.kvs] == [b"k/%05d" % i for i in range(N)]
        assert all(kv.value == b"" for kv in r.kvs)
        assert c.get("k/", prefix=True, count_only=True).count == N
        page = c.get("k/", prefix=True, limit=10)
        assert len(page.kvs) == 10 and page.count == N and page.more
        # The member still serves writes after all that.
        c.put("after", "ok")
        assert c.get("after").kvs[0].value == b"ok"
    assert member.call(lambda: member.node.raft.role) == "leader"
    assert member.call(lambda: member.node.raft.term) == term


def test_a_long_range_is_read_off_the_loop(member: Any) -> None:
    """The scan is held in the middle: the member's loop must keep answering meanwhile (a range
    read on the loop would hold it, and with it ticks and heartbeats, for the whole scan)."""
    node = member.node
    release = threading.Event()
    held = threading.Event()
    real = node.kv.range_scan

    class Held:
        def __init__(self, scan: Any) -> None:
            self.scan, self.calls = scan, 0

        def run(self, budget: int = 0) -> Any:
            self.calls += 1
            if self.calls > 1 or not budget:  # past the first (bounded) step: wait
                held.set()
                release.wait(20.0)
            return self.scan.run(budget)

    member.call(lambda: setattr(node.kv, "range_scan", lambda args: Held(real(args))))
    out: dict[str, Any] = {}

    def read() -> None:
        try:
            with fastraft.Client([member.endpoint], timeout=30.0) as c:
                out["r"] = c.get("k/", prefix=True, keys_only=True)
        except Exception as e:  # handed to the test's thread
            out["e"] = e

    t = threading.Thread(target=read)
    t.start()
    try:
        assert held.wait(10.0), "the range never reached its second step"
        # The loop answers while the scan waits (bounded: 3 s against a 20 s hold).
        started = time.monotonic()
        assert member.call(lambda: node.raft.role, timeout=3.0) == "leader"
        assert time.monotonic() - started < 3.0
    finally:
        release.set()
        t.join(30.0)
        member.call(lambda: setattr(node.kv, "range_scan", real))
    assert "e" not in out, out.get("e")
    assert len(out["r"].kvs) == N


def test_compaction_records_are_dropped_after_the_apply(member: Any) -> None:
    node = member.node
    with fastraft.Client([member.endpoint], timeout=10.0) as c:
        for i in range(0, N, 125):  # a second version of 40 keys
            c.put(b"k/%05d" % i, b"w")
        rev = c.get("k/00000").header.revision
        c.compact(rev)
        assert c.get("k/", prefix=True, count_only=True).count == N

    def changes() -> int:
        it = node.kv._cf.iter()
        it.seek(b"r")
        n = 0
        while it.valid() and it.key()[:1] == b"r":
            n += 1
            it.next()
        return n

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if not member.call(lambda: node.kv.compaction_pending) and member.call(changes) == 0:
            break
        time.sleep(0.05)
    assert member.call(changes) == 0
    assert member.call(lambda: node.kv.compact_revision) == rev


def test_fastractl_prints_a_range_too_big_for_one_answer_page_by_page(member: Any) -> None:
    from click.testing import CliRunner

    from fastraft.ctl import cli

    r = CliRunner().invoke(cli, ["--endpoints", member.endpoint, "get", "k/", "--prefix"])
    assert r.exit_code == 0, r.output
    want = [x for i in range(N) for x in (b"k/%05d" % i, VALUE)]
    assert r.stdout_bytes.split(b"\n") == [*want, b""]
    # One JSON document cannot come in pages: a clear error, exit status 1.
    r = CliRunner().invoke(cli, ["--endpoints", member.endpoint, "-w", "json", "get", "k/",
                                 "--prefix"])
    assert r.exit_code == 1 and "larger than 1,048,576 bytes" in r.output
