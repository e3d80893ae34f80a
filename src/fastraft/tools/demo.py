"""`fastraft demo`: the walkthrough, step by step, on a real 3-member cluster.

Every step states what it expects, checks it, and the demo stops at the first surprise (exit 1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from fastraft.tools.localcluster import LocalCluster

__all__ = ["run_demo"]


class StepFailed(Exception):
    pass



_ELECTION = re.compile(r"lost leader|is starting a new election|became pre-candidate|"
                       r"received MsgPreVoteResp|became candidate|received MsgVoteResp|"
                       r"has received \d+ Msg(Pre)?VoteResp votes|became leader")


def _election_lines(log: str) -> list[str]:
    """The log lines of the last election this member won: from its last `is starting a new
    election` before its last `became leader`, through that line."""
    lines = [ln for ln in log.splitlines() if _ELECTION.search(ln)]
    won = max((i for i, ln in enumerate(lines) if "became leader" in ln), default=None)
    if won is None:
        return []
    start = won
    while start > 0 and "became leader" not in lines[start - 1]:
        start -= 1
        if "is starting a new election" in lines[start]:
            break
    return lines[start:won + 1]

def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="green", bold=True) + click.style(text, bold=True))


def _note(text: str) -> None:
    click.echo("    " + text)


def _ctl(endpoints: str, *args: str, command_timeout: str | None = None,
         show: bool = True) -> tuple[int, str, str]:
    """Run fastractl as the seed runs etcdctl: endpoints from ETCDCTL_ENDPOINTS, the command
    typed as a user types it (printed first when ``show``)."""
    if show:
        _note("$ fastractl " + " ".join(args))
    env = dict(os.environ, ETCDCTL_ENDPOINTS=endpoints)
    env.pop("FASTRAFT_ENDPOINTS", None)
    extra = [f"--command-timeout={command_timeout}"] if command_timeout else []
    p = subprocess.run([sys.executable, "-m", "fastraft.ctl", *args, *extra],
                       capture_output=True, text=True, timeout=30, env=env)
    return p.returncode, p.stdout, p.stderr


def _urls(endpoints: str) -> str:
    return ",".join(f"http://{e}" for e in endpoints.split(","))


def _status_table(lc: LocalCluster, names: list[str] | None = None) -> None:
    eps = ",".join(m.endpoint for m in lc.members if names is None or m.name in names)
    rc, out, err = _ctl(_urls(eps), "endpoint", "status", "--write-out=table")
    click.echo(out.rstrip())
    # As etcdctl: a member that does not answer is named on stderr and the status is 1.
    everyone = all(m.alive for m in lc.members if names is None or m.name in names)
    _expect("ENDPOINT" in out and (rc == 0 or not everyone),
            f"endpoint status failed with status {rc}")
    for line in err.strip().splitlines():
        _note(f"(stderr) {line}")


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise StepFailed(what)


def run_demo(data_dir: str) -> bool:
    lc = LocalCluster(3, data_dir, token="fastraft-demo", heartbeat_ms=100, election_ms=1000)
    steps: list[tuple[str, Callable[[], None]]] = []
    state: dict[str, Any] = {}
    t0 = time.monotonic()

    def start() -> None:
        _note("members: " + ", ".join(f"{m.name} (clients {m.endpoint})" for m in lc.members))
        lc.start()
        for m in lc.members:
            lc.wait_ready(m.name)
        state["leader"] = lc.wait_leader(timeout=15)
        _note(f"{state['leader']} was elected leader")
        _note(f'$ export ETCDCTL_ENDPOINTS="{_urls(lc.endpoints)}"')
        _status_table(lc)

    def put() -> None:
        rc, out, err = _ctl(_urls(lc.endpoints), "put", "aaa", "bbb")
        _expect(rc == 0 and out.strip() == "OK", f"put printed {out!r} {err!r} (status {rc})")
        click.echo("    " + out.strip())

    def get1() -> None:
        rc, out, err = _ctl(_urls(lc.endpoints), "get", "aaa")
        _expect(rc == 0 and out.split() == ["aaa", "bbb"], f"get printed {out!r} {err!r}")
        for line in out.strip().splitlines():
            click.echo("    " + line)

    def kill_leader() -> None:
        old = state["leader"]
        old_st = lc.status(old)
        if old_st is None:
            raise StepFailed(f"{old}, the leader, does not answer status")
        old_term = old_st["raft_term"]
        m = lc.member(old)
        pid = m.proc.pid if m.proc is not None else "?"
        _note(f"kill -9 {pid}   ({old}, the leader, at term {old_term})")
        t = time.monotonic()
        lc.kill(old)
        rest = [x.name for x in lc.members if x.alive]
        new = lc.wait_leader(timeout=15, among=rest)
        st = lc.status(new)
        if st is None or st["raft_term"] <= old_term:
            raise StepFailed("the term did not advance")
        _note(f"{new} is the new leader at term {st['raft_term']} after "
              f"{time.monotonic() - t:.2f} s; from its log:")
        lines = _election_lines(lc.member(new).log_text())
        _expect(any("became leader" in ln for ln in lines),
                f"{new}'s log does not show it becoming leader")
        _expect(any("MsgPreVoteResp" in ln for ln in lines),
                f"{new}'s log does not show a pre-vote round")
        for ln in lines:
            click.echo("      " + ln)
        state["leader"] = new
        state["dead"] = old

    def get2() -> None:
        # The same endpoints as before, the dead leader's included, as the seed types it.
        _status_table(lc)
        rc, out, err = _ctl(_urls(lc.endpoints), "get", "aaa")
        _expect(rc == 0 and out.split() == ["aaa", "bbb"],
                f"get aaa after the failover printed {out!r} {err!r} (status {rc})")
        for line in out.strip().splitlines():
            click.echo("    " + line)
        _note("(the acknowledged write survived the leader's death)")

    def lose_quorum() -> None:
        alive = [x.name for x in lc.members if x.alive]
        keep = state["leader"]
        for n in alive:
            if n != keep:
                _note(f"stopping {n}")
                lc.stop(n)
        _note(f"only {keep} is left: 1 of 3 is not a majority")
        deadline = time.monotonic() + 10
        st = None
        while time.monotonic() < deadline:
            st = lc.status(keep)
            if st is not None and st["leader"] == 0:
                break
            time.sleep(0.1)
        _expect(st is not None and st["leader"] == 0 and "no leader" in st["errors"],
                f"{keep} still reports a leader: {st}")
        _status_table(lc, [keep])
        t = time.monotonic()
        rc, out, err = _ctl(_urls(lc.member(keep).endpoint), "get", "aaa",
                            command_timeout="1s", show=False)
        took = time.monotonic() - t
        _expect(rc != 0 and "leader" in err.lower(), f"get without a majority gave {out!r}")
        _note(f"$ fastractl get aaa --command-timeout=1s  -> {err.strip()}  "
              f"({took:.2f} s, status {rc})")
        _expect(took < 2.5, f"the failing read took {took:.2f} s: not fast")
        state["alone"] = keep

    def regain() -> None:
        back = state["dead"]
        _note(f"starting {back} again (it rejoins with its data dir)")
        lc.start(back)
        lc.wait_ready(back)
        pair = [state["alone"], back]
        state["leader"] = lc.wait_leader(timeout=15, among=pair)
        _note(f"{state['leader']} leads again with 2 of 3")
        _status_table(lc, pair)
        rc, out, err = _ctl(_urls(lc.endpoints), "get", "aaa")
        _expect(rc == 0 and out.split() == ["aaa", "bbb"],
                f"get aaa printed {out!r} {err!r} (status {rc})")
        for line in out.strip().splitlines():
            click.echo("    " + line)

    steps = [
        ("start a 3-member cluster", start),
        ("write a key", put),
        ("read it back (linearizable)", get1),
        ("kill the leader with SIGKILL", kill_leader),
        ("read the key from the new leader", get2),
        ("stop all but one member: no majority", lose_quorum),
        ("start a second member: a majority again", regain),
    ]
    ok = True
    try:
        for i, (title, fn) in enumerate(steps, 1):
            _say(f"step {i}: {title}")
            try:
                fn()
            except StepFailed as e:
                click.echo(click.style(f"step {i} FAILED: {e}", fg="red"), err=True)
                ok = False
                break
            except Exception as e:  # a crash in a step is a failed step, not a traceback
                click.echo(click.style(f"step {i} FAILED: {type(e).__name__}: {e}", fg="red"),
                           err=True)
                ok = False
                break
    finally:
        lc.close()
    if ok:
        _say(f"done in {time.monotonic() - t0:.1f} s")
        _note("What this showed: fastraft is CP. While a majority lives it keeps serving, even")
        _note("right after its leader dies; with no majority it refuses at once with a clear")
        _note("error instead of answering with data that might be stale; once a majority is back,")
        _note("every acknowledged write is still there.")
    return ok
