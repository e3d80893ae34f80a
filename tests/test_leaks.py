"""The leak guard of tests/conftest.py sees each kind of leftover, and lets it go once it ends."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import uvloop
from rocksdict import Rdict

import leaks as L


def test_a_running_thread_is_seen_until_joined() -> None:
    before = L.Snapshot.take()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="left-running", daemon=True)
    t.start()
    try:
        assert any("left-running" in x for x in L.new_since(before).threads)
    finally:
        stop.set()
        t.join(10)
    assert not L.leaks_after_grace(before, grace=0.1)


def test_a_child_is_seen_alive_and_as_a_zombie_until_reaped() -> None:
    before = L.Snapshot.take()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         stdin=subprocess.DEVNULL)
    try:
        found = L.new_since(before).children
        assert len(found) == 1 and f"pid {p.pid} " in found[0]
        p.kill()
        # Dead but not waited for: still in the table, as a zombie.
        L_found: list[str] = []
        for _ in range(200):
            L_found = L.new_since(before).children
            if L_found and "zombie" in L_found[0]:
                break
            threading.Event().wait(0.01)
        assert L_found and "zombie (never reaped)" in L_found[0], L_found
    finally:
        p.kill()
        p.wait(10)
    assert not L.leaks_after_grace(before, grace=0.1)


def test_grandchildren_are_seen() -> None:
    before = L.Snapshot.take()
    p = subprocess.Popen([sys.executable, "-c",
                          "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', "
                          "'import time; time.sleep(60)']); print(c.pid, flush=True); c.wait()"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout is not None
        grandchild = int(p.stdout.readline())
        found = L.new_since(before).children
        assert any(f"pid {grandchild} ppid {p.pid} " in x for x in found), found
        L.kill_children([grandchild])  # not ours to reap: its parent does
        p.wait(10)
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()  # type: ignore[union-attr]
    assert not L.leaks_after_grace(before, grace=1.0)


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_an_open_loop_is_seen_until_closed(factory) -> None:
    before = L.Snapshot.take()
    loop = factory()
    try:
        assert len(L.new_since(before).loops) == 1
    finally:
        loop.close()
    assert not L.leaks_after_grace(before, grace=0.1)


def test_a_changed_loop_policy_is_seen() -> None:
    before = L.Snapshot.take()
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        assert "uvloop.EventLoopPolicy" in L.new_since(before).policy
    finally:
        asyncio.set_event_loop_policy(old)
    assert not L.leaks_after_grace(before, grace=0.1)


def test_an_open_database_is_seen_until_closed(tmp_path: Path) -> None:
    before = L.Snapshot.take()
    db = Rdict(str(tmp_path / "db"))
    try:
        assert L.new_since(before).databases == [str(tmp_path / "db")]
    finally:
        db.close()
    assert not L.leaks_after_grace(before, grace=0.1)


def test_a_signal_left_ignored_is_seen() -> None:
    # Children inherit an ignored signal: a child that should stop on Ctrl-C then never does.
    old = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        before = L.Snapshot.take()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        assert L.new_since(before).signals == "now ignored: SIGUSR1"
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert not L.leaks_after_grace(before, grace=0.1)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_the_suite_runs_with_sigint_handled() -> None:
    # tests/conftest.py restores it when the suite was started with SIGINT ignored.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    child = subprocess.run([sys.executable, "-c", "import signal; "
                            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "True", child
