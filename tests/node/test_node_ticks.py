"""The node's ticker: Raft's clock. An election timeout is a number of ticks, so ticks that drift
late on a busy loop stretch the time to replace a crashed leader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastraft.config import build_config
from fastraft.raft.core import Config, Raft
from fastraft.server.node import Node


class _Loop:
    """Just enough of an event loop to see when the node asks for its next tick."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.asked: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Any, *args: Any) -> None:
        self.asked.append(when)

    def call_later(self, delay: float, cb: Any, *args: Any) -> None:
        self.asked.append(self.now + delay)

    def call_soon(self, cb: Any, *args: Any) -> None:
        pass


def _raft() -> Raft:
    """A real core (the tick handler also feeds read levels and the KV service from it): one of
    three voters, so it only counts ticks here (its election timeout is not reached)."""
    return Raft(Config(1, (1, 2, 3), election_tick=100))


def test_ticks_keep_a_fixed_schedule_when_the_loop_runs_them_late(tmp_path: Path) -> None:
    peer = "http://127.0.0.1:1"
    cfg = build_config({"name": "n1", "data-dir": str(tmp_path / "n1"),
                        "listen-client-urls": "http://127.0.0.1:2",
                        "listen-peer-urls": peer, "initial-advertise-peer-urls": peer,
                        "initial-cluster": f"n1={peer}", "heartbeat-interval": "100",
                        "election-timeout": "1000"}, env={})
    node = Node(cfg)
    loop, raft = _Loop(100.0), _raft()
    node._loop, node.raft = loop, raft  # type: ignore[assignment]
    node._next_tick = 100.1  # as start() schedules the first tick
    loop.now = 100.13  # the first tick runs 30 ms late
    node._tick()
    assert abs(loop.asked[-1] - 100.2) < 1e-9, loop.asked  # not 100.23: lateness does not add up
    loop.now = 100.45  # blocked past a whole tick: that one is dropped, no burst to catch up
    node._tick()
    assert abs(loop.asked[-1] - 100.55) < 1e-9, loop.asked
    assert raft.ticks == 2
