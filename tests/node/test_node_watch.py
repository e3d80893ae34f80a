"""Watch end to end on a real 3-member cluster (child processes on 127.0.0.1, stopped by PID)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from fastraft import Client
from fastraft import Op, Watch, WatchCanceledError, WatchEvent, WatchLostError
from polling import wait_for


def _collect(w: Watch, n: int, timeout: float) -> list[WatchEvent]:
    """n events from a Watch within timeout (bounded in count and time)."""
    out: list[WatchEvent] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(out)} of {n} events in {timeout}s"
        ev = w.get(left)
        if ev is not None:
            out.append(ev)
    return out


def test_watch_from_follower_history_live_cancel_kill_and_ctl(make_cluster: Any) -> None:
    lc = make_cluster(3)
    leader = lc.wait_leader()
    f1, f2 = [m for m in lc.members if m.name != leader]
    writer = Client(lc.member(leader).endpoint)
    try:
        # ---- history written before the watch, then more while it catches up and goes live
        first = writer.put(b"e/0", b"h0").header.revision
        expected = [(first, "PUT", b"e/0")]
        for i in range(1, 150):
            r = writer.put(b"e/%d" % (i % 40), b"h%d" % i).header.revision
            expected.append((r, "PUT", b"e/%d" % (i % 40)))
        writer.put(b"not-e", b"x")  # outside the range: never seen

        done = threading.Event()
        errors: list[BaseException] = []

        def write_more() -> None:
            try:
                for i in range(150):
                    if i % 50 == 25:
                        r = writer.delete(b"e/%d" % (i % 40)).header.revision
                        expected.append((r, "DELETE", b"e/%d" % (i % 40)))
                    elif i % 50 == 40:
                        t = writer.txn([], [Op.put(b"e/t1", b"a"), Op.put(b"e/t2", b"b")], [])
                        r = t.header.revision
                        expected.extend([(r, "PUT", b"e/t1"), (r, "PUT", b"e/t2")])
                    else:
                        r = writer.put(b"e/%d" % (i % 40), b"l%d" % i).header.revision
                        expected.append((r, "PUT", b"e/%d" % (i % 40)))
            except BaseException as e:  # reported by the main thread
                errors.append(e)
            finally:
                done.set()

        with Client(f1.endpoint) as fc, fc.watch(b"e/", prefix=True, start_revision=first,
                                                 prev_kv=True) as w:
            t = threading.Thread(target=write_more)
            t.start()
            got = _collect(w, 150, 20)
            t.join(30)
            assert done.is_set() and not errors, errors
            got += _collect(w, len(expected) - 150, 20)
            assert w.get(timeout=0.3) is None  # nothing more, and nothing twice
            # Served by the follower itself, from its applied state.
            assert w.endpoint is not None and f"{w.endpoint[1]}" in f1.endpoint
        assert [(e.revision, e.type, e.kv.key) for e in got] == sorted(expected)
        # prev_kv: the value each key had before.
        last: dict[bytes, bytes] = {}
        for e in got:
            if e.kv.key in last:
                assert e.prev_kv is not None and e.prev_kv.value == last[e.kv.key]
            if e.type == "PUT":
                last[e.kv.key] = e.kv.value
            else:
                last.pop(e.kv.key, None)

        # ---- cancel: the iteration ends, the member drops the watcher
        w2 = Client(f2.endpoint).watch(b"e/", prefix=True)
        w2.cancel()
        assert w2.get(timeout=1) is None
        assert list(w2) == []

        # ---- fastractl watch as a subprocess: history, then exits after --max-events
        base = writer.put(b"ctl/a", b"1").header.revision
        writer.put(b"ctl/b", b"2")
        writer.delete(b"ctl/a")
        ctl = subprocess.run(
            [sys.executable, "-m", "fastraft.ctl", f"--endpoints={f1.endpoint}", "watch", "ctl/",
             "--prefix", "--rev", str(base), "--max-events", "3", "--timeout", "20s"],
            capture_output=True, text=True, timeout=30)
        assert ctl.returncode == 0, ctl.stderr
        assert ctl.stdout.splitlines() == ["PUT", "ctl/a", "1", "PUT", "ctl/b", "2",
                                           "DELETE", "ctl/a"]
        # Live, json: it waits for a revision that does not exist yet.
        nxt = writer.get(b"ctl/b").header.revision + 1
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastraft.ctl", f"--endpoints={f2.endpoint}", "-w", "json",
             "watch", "ctl/b", "--rev", str(nxt), "--max-events", "1", "--timeout", "20s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            writer.put(b"ctl/b", b"live")
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, err
        doc = json.loads(out)
        assert doc["type"] == "PUT" and doc["kv"]["mod_revision"] == nxt
        # Ctrl-C (SIGINT, by PID) once it is watching: exit 0, no traceback.
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastraft.ctl", f"--endpoints={f1.endpoint}", "watch",
             "ctl/b", "--rev", str(base)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready and proc.stdout is not None and proc.stdout.readline() == "PUT\n"
            os.kill(proc.pid, signal.SIGINT)
            _out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0 and "Traceback" not in err, err
        # --timeout alone: exits 0 with nothing printed when nothing happens.
        quiet = subprocess.run(
            [sys.executable, "-m", "fastraft.ctl", f"--endpoints={f1.endpoint}", "watch",
             "quiet-key", "--timeout", "300ms"], capture_output=True, text=True, timeout=30)
        assert (quiet.returncode, quiet.stdout) == (0, "")

        # ---- a watched member that dies: a clear error and where to resume
        w3 = Client(f2.endpoint).watch(b"e/", prefix=True)
        r1 = writer.put(b"e/k1", b"before").header.revision
        assert _collect(w3, 1, 10)[0].revision == r1
        lc.kill(f2.name)
        with pytest.raises((WatchLostError, WatchCanceledError)) as ei:
            w3.get(timeout=10)
        assert ei.value.resume_revision == r1 + 1
        assert "watch again from revision" in ei.value.message
        r2 = writer.put(b"e/k1", b"after").header.revision
        # Resuming elsewhere from the revision the error named loses nothing.
        with Client(f1.endpoint).watch(b"e/", prefix=True,
                                       start_revision=ei.value.resume_revision) as w4:
            ev = _collect(w4, 1, 10)[0]
            assert (ev.revision, ev.kv.value) == (r2, b"after")
        w3.close()
        wait_for(lambda: lc.status(f1.name) is not None, 5, "f1 to still serve")
    finally:
        writer.close()
