"""Suite-wide guard: no test leaves a thread, a child process, an open database or event loop, a
changed loop policy or signal disposition behind (what runs is read by tests/leaks.py).

What one test leaves running costs the next ones CPU on this shared 2-core machine (and counts in
the process CPU clock some tests read), so a leak turns into a flaky failure far from its cause.
After each test's teardown, what is new since before its setup and still there after a bounded
grace moment fails that test's teardown, naming it. What a wider-scoped project fixture of the test
holds (a module fixture's member, say) is checked once that fixture is torn down. At session end
anything beyond what ran at session start fails the run; leftover children are killed and reaped
by PID first, so even a failing run leaves none behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator

import pytest

import leaks as L

# numpy (imported by matplotlib for the load tool's plots) starts an OpenBLAS thread pool at
# import that nothing in this suite needs (its threads may busy-wait after work, on the cores the
# members under test share). Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_SESSION_START: L.Snapshot | None = None
_BEFORE = pytest.StashKey[L.Snapshot]()
# Leftovers that a wider-scoped fixture may still own: (test that started them, snapshot before).
_PENDING: list[tuple[str, L.Snapshot]] = []
# Reported once already (a thread cannot be killed): not blamed on every later test again.
_REPORTED = L.Snapshot()
# The open event loops at the last look. Finding them walks every object (tens of ms), so it is
# done once per test, after its teardown, and that result serves as the next test's "before".
_LOOPS_SEEN: set[int] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    global _SESSION_START
    # Started in the background of a script (`cmd &`) or under nohup, this process ignores
    # SIGINT, and so would every child it starts: a test that stops a child with Ctrl-C (as a
    # user does `fastractl watch`) would wait for it forever. Python's own handling back.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _SESSION_START = L.Snapshot.take()
    _LOOPS_SEEN.update(_SESSION_START.loops)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_BEFORE] = L.Snapshot.take(loops=_LOOPS_SEEN)
    return (yield)


def _holds_wider_fixture(item: pytest.Item) -> bool:
    """Whether a project fixture wider than one test is still set up after ``item``'s teardown:
    what it started may rightly outlive the test."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        for d in defs:
            # Builtin and plugin fixtures (tmp_path_factory...) have an empty baseid.
            if d.baseid and d.scope != "function" and d.cached_result is not None:
                return True
    return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield  # now every fixture whose scope ends with this test is torn down
    before = item.stash.get(_BEFORE, None)
    if before is None:  # its setup never ran
        return result
    if _holds_wider_fixture(item):
        _PENDING.append((item.nodeid, before))
        _look_at_loops()
        return result
    problems = []
    found = L.leaks_after_grace(before, _REPORTED, loops=False)
    found.loops = _look_at_loops(before)
    if found:
        problems.append(f"{item.nodeid} left behind:\n  " + "\n  ".join(found.lines()))
    # Earlier tests' leftovers that a module fixture may have owned: due once it is gone.
    still = []
    for nodeid, snap in _PENDING:
        if nextitem is not None and nextitem.module is item.module:
            still.append((nodeid, snap))
            continue
        found = L.leaks_after_grace(snap, _REPORTED, loops=False)
        found.loops = _look_at_loops(snap)
        if found:
            problems.append(f"{nodeid} (with its module's fixtures) left behind:\n  "
                            + "\n  ".join(found.lines()))
    _PENDING[:] = still
    if problems:
        now = L.Snapshot.take()
        _REPORTED.absorb(now)
        # Killed here so that the next tests do not run beside it.
        L.kill_children([pid for pid in now.children if pid not in before.children])
        pytest.fail("\n".join(problems), pytrace=False)
    return result


def _look_at_loops(before: L.Snapshot | None = None) -> list[str]:
    """Open loops that are new since ``before`` (and not reported yet); remembers what is open."""
    def look() -> tuple[list[asyncio.AbstractEventLoop], list[str]]:
        now = L.open_loops()
        return now, [repr(lp) for lp in now if before is not None
                     and id(lp) not in before.loops and id(lp) not in _REPORTED.loops]

    now, fresh = look()
    if fresh:  # an unreferenced loop is garbage, not a leak: collect, then look again
        del now
        gc.collect()
        now, fresh = look()
    _LOOPS_SEEN.clear()
    _LOOPS_SEEN.update(id(lp) for lp in now)
    return fresh


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SESSION_START is None:
        return
    L.stop_resource_tracker()
    found = L.leaks_after_grace(_SESSION_START, _REPORTED, tracker=True)
    leftover = L.descendants(tracker=True)
    L.kill_children([pid for pid in leftover if pid not in _SESSION_START.children])
    if not found:
        return
    msg = "the test session left behind:\n  " + "\n  ".join(found.lines())
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line("")
        tr.write_line(msg, red=True, bold=True)
    else:
        print(msg)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
