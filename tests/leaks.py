"""What this test process has running now, and what is new since an earlier look.

Read from /proc (psutil is not a dependency): Python threads, native threads (RocksDB's, libuv's,
OpenBLAS's), descendant processes (a zombie counts: nobody reaped it), RocksDB databases still
open (their LOCK file is held open), event loops not closed, and which event loop policy is
installed. tests/conftest.py runs the check after every test and at session end.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from dataclasses import dataclass, field

# A thread that was told to stop (executor.shutdown(wait=False), loop.stop) or a child that was
# signalled may need a moment on a loaded 2-core machine before it is gone; only what outlives
# this is a leak. The wait costs nothing when nothing leaked.
GRACE_S = 5.0

# Process-wide pools that a library starts on first use and keeps (idle) until the process
# exits; no test owns them, so their first appearance is not a leak:
# - libuv's worker pool (uvloop: getaddrinfo, file operations), threads named "libuv-worker";
# - RocksDB's default Env background pools, "rocksdb:low" / "rocksdb:high" / "rocksdb:bottom"
#   (an unclosed database is caught by its LOCK file instead).
KNOWN_NATIVE_POOLS = ("libuv-worker", "rocksdb:")
# multiprocessing's resource tracker: one child started by the first spawn-context semaphore or
# queue (the load tool's worker processes), idle, kept until the process exits. Not a test's
# leak; the session end stops it and then requires it gone.
RESOURCE_TRACKER = "multiprocessing.resource_tracker"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process or thread ended meanwhile
        return b""


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, comm) of every process, from /proc/<pid>/stat."""
    table: dict[int, tuple[int, str, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        data = _read(f"/proc/{name}/stat")
        if not data:
            continue
        # comm may hold spaces and parentheses; it ends at the last ')'.
        end = data.rindex(b")")
        comm = data[data.index(b"(") + 1:end].decode(errors="replace")
        fields = data[end + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0].decode(), comm)
    return table


def descendants(*, tracker: bool = False) -> dict[int, str]:
    """Every live or unreaped descendant of this process: pid -> a description.
    multiprocessing's resource tracker only with ``tracker``."""
    root = os.getpid()
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for pid in kids.get(stack.pop(), []):
            if pid in found:
                continue
            ppid, state, comm = table[pid]
            cmd = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
            if not tracker and ppid == root and RESOURCE_TRACKER in cmd:
                continue
            what = "zombie (never reaped)" if state == "Z" else f"state {state}"
            found[pid] = f"pid {pid} ppid {ppid} {what} ({comm}) {cmd.strip()[:160]}"
            stack.append(pid)
    return found


def native_threads() -> dict[int, str]:
    """Threads of this process that Python did not start (tid -> name), known pools aside."""
    python_tids = {t.native_id for t in threading.enumerate()}
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid == threading.get_native_id() or tid in python_tids:
            continue
        comm = _read(f"/proc/self/task/{name}/comm").decode(errors="replace").strip()
        if comm and not comm.startswith(KNOWN_NATIVE_POOLS):
            out[tid] = comm
    return out


def open_databases() -> set[str]:
    """Data directories of RocksDB databases this process holds open (RocksDB keeps the
    directory's LOCK file open until the database is closed)."""
    out: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("/LOCK"):
            out.add(os.path.dirname(target))
    return out


def _loop_classes() -> set[type]:
    found: set[type] = set()
    todo = [asyncio.AbstractEventLoop]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def signal_state() -> tuple[frozenset[str], frozenset[str]]:
    """(ignored, blocked) signals of this process's main thread, from /proc: children inherit
    both, so a signal left ignored here (SIGINT, say) is one a child never gets."""
    fields = {}
    for line in _read("/proc/self/status").decode().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def names(mask: str) -> frozenset[str]:
        bits = int(mask or "0", 16)
        out = set()
        for n in range(1, 65):
            if bits >> (n - 1) & 1:
                try:
                    out.add(signal.Signals(n).name)
                except ValueError:  # a real-time signal without a name
                    out.add(f"signal {n}")
        return frozenset(out)

    return names(fields.get("SigIgn", "")), names(fields.get("SigBlk", ""))


def open_loops() -> list[asyncio.AbstractEventLoop]:
    """Event loops that are still referenced somewhere and not closed."""
    # An exact type lookup: isinstance() on each of ~100k objects costs tens of ms per test.
    classes = _loop_classes()
    return [o for o in gc.get_objects() if type(o) in classes and not o.is_closed()]


@dataclass
class Snapshot:
    threads: set[threading.Thread] = field(default_factory=set)
    natives: dict[int, str] = field(default_factory=dict)
    children: dict[int, str] = field(default_factory=dict)
    databases: set[str] = field(default_factory=set)
    loops: set[int] = field(default_factory=set)  # id()s: holding the loops would keep them
    policy: type | None = None
    signals: tuple[frozenset[str], frozenset[str]] | None = None

    @classmethod
    def take(cls, loops: set[int] | None = None) -> Snapshot:
        """What runs now; ``loops``: the open loops if already known (finding them walks every
        object: the slowest part by far)."""
        if loops is None:
            loops = {id(lp) for lp in open_loops()}
        return cls(set(threading.enumerate()), native_threads(), descendants(),
                   open_databases(), set(loops), type(asyncio.get_event_loop_policy()),
                   signal_state())

    def absorb(self, other: Snapshot) -> None:
        self.threads |= other.threads
        self.natives.update(other.natives)
        self.children.update(other.children)
        self.databases |= other.databases
        self.loops |= other.loops


@dataclass
class Leaks:
    threads: list[str] = field(default_factory=list)
    natives: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    policy: str = ""
    signals: str = ""

    def running(self) -> bool:
        """Something that may still go away by itself (a thread ending, a child exiting)."""
        return bool(self.threads or self.natives or self.children)

    def __bool__(self) -> bool:
        return self.running() or bool(self.databases or self.loops or self.policy
                                      or self.signals)

    def lines(self) -> list[str]:
        return ([f"thread {t}" for t in self.threads]
                + [f"native thread {t}" for t in self.natives]
                + [f"child process {c}" for c in self.children]
                + [f"RocksDB database still open: {d}" for d in self.databases]
                + [f"event loop not closed: {lp}" for lp in self.loops]
                + ([f"event loop policy changed: {self.policy}"] if self.policy else [])
                + ([f"signal dispositions changed: {self.signals}"] if self.signals else []))


def new_since(before: Snapshot, ignore: Snapshot | None = None, *, tracker: bool = False,
              loops: bool = True) -> Leaks:
    """What runs now that did not in ``before`` (nor in ``ignore``: already reported)."""
    ig = ignore or Snapshot()
    leaks = Leaks()
    leaks.threads = [f"{t.name!r} (daemon={t.daemon}, target={getattr(t, '_target', None)!r})"
                     for t in threading.enumerate()
                     if t not in before.threads and t not in ig.threads and t.is_alive()]
    leaks.natives = [f"{tid} {name!r}" for tid, name in native_threads().items()
                     if tid not in before.natives and tid not in ig.natives]
    leaks.children = [d for pid, d in descendants(tracker=tracker).items()
                      if pid not in before.children and pid not in ig.children]
    leaks.databases = sorted(open_databases() - before.databases - ig.databases)
    if loops:
        leaks.loops = [repr(lp) for lp in open_loops()
                       if id(lp) not in before.loops and id(lp) not in ig.loops]
    policy = type(asyncio.get_event_loop_policy())
    if before.policy is not None and policy is not before.policy:
        leaks.policy = (f"{before.policy.__module__}.{before.policy.__name__} -> "
                        f"{policy.__module__}.{policy.__name__}")
    if before.signals is not None:
        changes = []
        for what, was, now in zip(("ignored", "blocked"), before.signals, signal_state()):
            if now - was:
                changes.append(f"now {what}: {', '.join(sorted(now - was))}")
            if was - now:
                changes.append(f"no longer {what}: {', '.join(sorted(was - now))}")
        leaks.signals = "; ".join(changes)
    return leaks


def leaks_after_grace(before: Snapshot, ignore: Snapshot | None = None, *,
                      tracker: bool = False, grace: float = GRACE_S,
                      loops: bool = True) -> Leaks:
    """What is new since ``before`` and still there after up to ``grace`` seconds (event loops
    only with ``loops``)."""
    deadline = time.monotonic() + grace
    leaks = new_since(before, ignore, tracker=tracker, loops=False)
    while leaks.running() and time.monotonic() < deadline:
        time.sleep(0.05)
        leaks = new_since(before, ignore, tracker=tracker, loops=False)
    if leaks.databases:  # an unreferenced Rdict closes when collected
        gc.collect()
    full = new_since(before, ignore, tracker=tracker, loops=loops)
    if full.loops:  # an unreferenced loop is garbage, not something running: collect, look again
        gc.collect()
        full = new_since(before, ignore, tracker=tracker, loops=loops)
    full.threads, full.natives, full.children = leaks.threads, leaks.natives, leaks.children
    return full


def kill_children(pids: list[int]) -> None:
    """SIGKILL and reap leftover descendants by PID (only ours: they are in our process tree)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)  # reaps direct children; grandchildren are their parents' to reap
        except ChildProcessError:
            pass


def stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker if this process started one (it would otherwise
    live until the interpreter exits)."""
    import multiprocessing.resource_tracker as rt

    stop = getattr(rt._resource_tracker, "_stop", None)  # CPython 3.8+
    if stop is not None:
        stop()
