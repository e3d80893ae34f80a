"""A network lab made of Linux network namespaces (root only): the PACELC lab's and the partition
tests' hosts, links and fault rules.

Layout: one namespace per host (member or client), each with one veth link named ``lab0``
whose other end sits on a bridge in a namespace of its own (the hub). Nothing is added to the
host's own namespace (no interface, route or rule), and the lab namespaces have no route out:
their addresses (``SUBNET``, a private range used only inside the lab) reach each other and
nothing else. :meth:`Lab.check_route` says so before a test sends anything to a lab address.

Faults are nftables rules inside the hosts' own namespaces (table ``inet fastraft_lab``), one
:class:`Faults` per host, rewritten whole (atomically, one ``nft -f``) at each change:
:meth:`Lab.partition` drops every packet between two groups of hosts, in both directions,
without telling anyone (a cut cable, not a refused connection); :meth:`Lab.cut` drops one
direction only; :meth:`Lab.loss` drops a random share (``numgen random``) of what a host sends
to some others; :meth:`Lab.queue` hands what a host sends to some others to an NFQUEUE, where a
userspace delayer (delayer.py) holds each packet for the one-way delay (this kernel has no
``tc netem``); :meth:`Lab.heal` removes every rule.

Cleanup: :meth:`Lab.close` kills the processes it started (by PID) and deletes every namespace
(which takes its links and rules with it, and kills whatever still runs inside); it runs from a
``finally`` or a fixture teardown. Names carry a fixed prefix and the owner's PID
(``frlab<pid>-n1``), so :func:`sweep` can delete what a killed run left behind (namespaces
whose PID is no longer alive, and the processes still inside them) first.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Faults", "Lab", "LabError", "Host", "available", "kill_all", "scratch_dir", "sweep",
           "PREFIX", "SUBNET"]

PREFIX = "frlab"
SUBNET = ipaddress.ip_network("10.213.0.0/24")
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\S+)$")
_TABLE = "fastraft_lab"


class LabError(RuntimeError):
    pass


def available() -> str | None:
    """None if a lab can be built here, else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "the network-namespace lab needs root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("nft") is None:
        return "`nft` is not installed (apt-get install -y nftables; .ci/run installs it)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`ip netns` does not work here: {e}"
    return None


def _run(*args: str, input: str | None = None, timeout: float = 10.0) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=timeout)
    if p.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """Kill what still runs in ``ns`` (by PID, SIGKILL), then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=10).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def kill_all(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each process still running (by PID), reap them all (bounded), empty the list."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    procs.clear()


def scratch_dir(run_id: str) -> str:
    """A scratch directory named after the run (data dirs, logs): :func:`sweep` removes it
    once the run's process is gone."""
    return tempfile.mkdtemp(prefix=f"{run_id}-")


def sweep() -> list[str]:
    """Delete the lab namespaces (and what still runs in them) and scratch directories of runs
    whose process is gone (a crash, a kill -9). Returns what was removed."""
    removed = []
    for ns in _namespaces():
        m = _NAME.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _kill_namespace(ns)
            removed.append(ns)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        m = _NAME.match(name)
        path = os.path.join(tmp, name)
        if m and os.path.isdir(path) and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@dataclass
class Faults:
    """The fault rules of one host, by peer address (what it sends / what it receives)."""

    drop_out: set[str] = field(default_factory=set)   # sent to these: dropped
    drop_in: set[str] = field(default_factory=set)    # received from these: dropped
    loss_pct: float = 0.0                             # of what is sent to loss_to
    loss_to: set[str] = field(default_factory=set)
    queue_num: int | None = None                      # NFQUEUE of what is sent to queue_to
    queue_to: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.drop_out or self.drop_in or (self.loss_pct and self.loss_to)
                    or (self.queue_num is not None and self.queue_to))

    def queue_args(self) -> list[list[str]]:
        """iptables commands that set the host's NFQUEUE rule. iptables (its xt NFQUEUE target),
        not nft: this kernel lacks nft's own queue expression (CONFIG_NFT_QUEUE) but has the
        xtables target. It runs after the lab table (priority 0 > -10): drops and loss first.
        No ``--queue-bypass``: if the delayer is gone, packets are dropped (a visible failure),
        never silently sent undelayed."""
        cmds = [["iptables", "-w", "-F", "OUTPUT"]]
        if self.queue_num is not None:
            for addr in sorted(self.queue_to):
                cmds.append(["iptables", "-w", "-A", "OUTPUT", "-d", addr, "-j", "NFQUEUE",
                             "--queue-num", str(self.queue_num)])
        return cmds

    def script(self) -> str:
        """The nft script that replaces the host's lab table with these rules (all but the
        queue: see :meth:`queue_args`)."""
        out, inp = [], []
        if self.drop_out:
            out.append(f"ip daddr {{ {', '.join(sorted(self.drop_out))} }} drop")
        if self.drop_in:
            inp.append(f"ip saddr {{ {', '.join(sorted(self.drop_in))} }} drop")
        if self.loss_pct > 0 and self.loss_to:
            # numgen random mod 10000 < pct*100: loss in steps of 0.01 %.
            out.append(f"ip daddr {{ {', '.join(sorted(self.loss_to))} }} "
                       f"numgen random mod 10000 < {int(round(self.loss_pct * 100))} drop")
        body = [f"table inet {_TABLE} {{}}", f"delete table inet {_TABLE}"]
        if out or inp:
            body += [f"table inet {_TABLE} {{",
                     "    chain input {",
                     "        type filter hook input priority -10; policy accept;",
                     *(f"        {r}" for r in inp),
                     "    }",
                     "    chain output {",
                     "        type filter hook output priority -10; policy accept;",
                     *(f"        {r}" for r in out),
                     "    }",
                     "}"]
        return "\n".join(body) + "\n"


@dataclass
class Host:
    name: str
    ns: str
    addr: str
    procs: list[subprocess.Popen] = field(default_factory=list)


class Lab:
    """Hosts on one bridge. Use as a context manager (or call close() in a finally)."""

    def __init__(self, names: Sequence[str], *, tag: str | None = None) -> None:
        if len(names) > 200:
            raise ValueError("at most 200 hosts")
        self.run_id = f"{PREFIX}{os.getpid()}" + (f"-{tag}" if tag else "")
        self.hub = f"{self.run_id}-hub"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        self._faults: dict[str, Faults] = {}
        self._queued: set[str] = set()  # hosts that have (had) an iptables queue rule
        hosts = list(SUBNET.hosts())
        try:
            self._add_ns(self.hub)
            _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, name in enumerate(names):
                ns = f"{self.run_id}-{name}"
                addr = str(hosts[10 + i])
                self._add_ns(ns)
                # Created in the hub, one end moved into the host (no name in the host's
                # own namespace is ever used, so parallel runs cannot clash).
                _run("ip", "-n", self.hub, "link", "add", f"p{i}", "type", "veth", "peer",
                     "name", "lab0", "netns", ns)
                _run("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0", "up")
                _run("ip", "-n", ns, "addr", "add", f"{addr}/{SUBNET.prefixlen}", "dev", "lab0")
                _run("ip", "-n", ns, "link", "set", "lab0", "up")
                self.hosts[name] = Host(name, ns, addr)
        except BaseException:
            self.close()
            raise

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._made.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------- processes

    def exec_args(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def popen(self, host: str, argv: Sequence[str], **kw: object) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace; close() kills it by PID if still alive.
        (``ip netns exec`` execs the command in place: the PID is the command's.)"""
        p = subprocess.Popen(self.exec_args(host, argv), **kw)  # type: ignore[call-overload]
        self.hosts[host].procs.append(p)
        return p

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0,
            **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.exec_args(host, argv), timeout=timeout,  # type: ignore
                              capture_output=True, text=True, **kw)

    # ------------------------------------------------------------------------ routing

    def check_route(self, host: str, addr: str) -> None:
        """Refuse unless ``addr`` is a lab address that ``host`` reaches over the lab link,
        directly (no gateway): the guard against sending anywhere else."""
        if ipaddress.ip_address(addr) not in SUBNET:
            raise LabError(f"{addr} is not a lab address ({SUBNET})")
        out = _run("ip", "-n", self.hosts[host].ns, "route", "get", addr)
        if " via " in out or not re.search(r"\bdev (lab0|lo)\b", out):
            raise LabError(f"{addr} does not route into the lab from {host}: {out.strip()}")

    # ------------------------------------------------------------------------- faults

    def faults(self, host: str) -> Faults:
        """The host's current fault rules (change them, then :meth:`apply`)."""
        return self._faults.setdefault(host, Faults())

    def apply(self, hosts: Iterable[str] | None = None) -> None:
        """Write the fault rules of ``hosts`` (default: all) into their namespaces."""
        for h in (self.hosts if hosts is None else hosts):
            f = self.faults(h)
            self._nft(h, f.script())
            if f.queue_num is not None or h in self._queued:
                for cmd in f.queue_args():
                    _run(*self.exec_args(h, cmd))
                self._queued.add(h)

    def partition(self, *groups: Iterable[str]) -> None:
        """Drop every packet between hosts of different groups, both ways (silently)."""
        sets = [list(g) for g in groups]
        for i, group in enumerate(sets):
            others = [self.hosts[h].addr for j, g in enumerate(sets) if j != i for h in g]
            for h in group:
                f = self.faults(h)
                f.drop_out.update(others)
                f.drop_in.update(others)
        self.apply([h for g in sets for h in g])

    def cut(self, senders: Iterable[str], receivers: Iterable[str]) -> None:
        """Drop what ``senders`` send to ``receivers``, one way only (the other way flows)."""
        senders = list(senders)
        to = {self.hosts[h].addr for h in receivers}
        for h in senders:
            self.faults(h).drop_out.update(to)
        self.apply(senders)

    def loss(self, hosts: Iterable[str], to: Iterable[str], pct: float) -> None:
        """Drop ``pct`` % (at random) of what each of ``hosts`` sends to ``to``."""
        if not 0 <= pct <= 100:
            raise ValueError(f"loss must be within 0..100 %, not {pct}")
        hosts = list(hosts)
        addrs = {self.hosts[h].addr for h in to}
        for h in hosts:
            f = self.faults(h)
            f.loss_pct, f.loss_to = pct, addrs - {self.hosts[h].addr}
        self.apply(hosts)

    def queue(self, host: str, to: Iterable[str], num: int) -> None:
        """Hand what ``host`` sends to ``to`` to NFQUEUE ``num`` (a delayer must read it)."""
        f = self.faults(host)
        f.queue_num, f.queue_to = num, {self.hosts[h].addr for h in to} - {self.hosts[host].addr}
        self.apply([host])

    def heal(self) -> None:
        """Remove every fault rule (drops, loss, queues) of every host."""
        self._faults.clear()
        self.apply()

    def unpartition(self) -> None:
        """Remove drops only (partitions and cuts); delay and loss stay."""
        for f in self._faults.values():
            f.drop_out.clear()
            f.drop_in.clear()
        self.apply()

    def rules(self, host: str) -> str:
        return _run("ip", "netns", "exec", self.hosts[host].ns, "nft", "list", "ruleset")

    def _nft(self, host: str, script: str) -> None:
        if shutil.which("nft") is None:
            raise LabError("`nft` is not installed (apt-get install -y nftables)")
        _run("ip", "netns", "exec", self.hosts[host].ns, "nft", "-f", "-", input=script)

    # ------------------------------------------------------------------------ cleanup

    def close(self) -> None:
        """Kill our processes (by PID), then delete every namespace we made. Idempotent."""
        for host in self.hosts.values():
            kill_all(host.procs)
        for ns in reversed(self._made):
            _kill_namespace(ns)
        self._made.clear()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                ns.startswith(self.run_id + "-") for ns in _namespaces()):
            time.sleep(0.05)
