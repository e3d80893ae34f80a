"""The PACELC lab leaves nothing behind when its owner is stopped: on SIGTERM it takes the lab
down itself (namespaces, members, delayers, scratch); killed outright (SIGKILL), what it left is
removed by the next run's sweep (netns.sweep), processes inside the namespaces included."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from test_pacelc_lab import _ours, require_lab

from fastraft.tools.pacelc import netns

pytestmark = pytest.mark.slow


def _start_lab(tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastraft", "pacelc", "--out",
                             str(tmp_path / "r"), "--systems", "fastraft", "--delays", "0,5",
                             "--partitions", "none", "--seconds", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_running(p: subprocess.Popen) -> tuple[list[str], list[int]]:
    """Wait until the lab has members running in its namespaces: (namespaces, their PIDs)."""
    prefix = f"{netns.PREFIX}{p.pid}-"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        names = _ours(prefix)
        pids = [int(x) for ns in names for x in subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()]
        if len(names) == 7 and len(pids) >= 4:  # hub + 6 hosts; 3 members and a worker
            return names, pids
        time.sleep(0.2)
    raise AssertionError("the lab did not come up")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_takes_the_lab_down(tmp_path) -> None:
    require_lab()
    p = _start_lab(tmp_path)
    try:
        names, pids = _wait_running(p)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err
    assert "interrupted; the lab was taken down" in err
    assert not _ours(f"{netns.PREFIX}{p.pid}-")
    assert not [pid for pid in pids if _alive(pid)]
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"{netns.PREFIX}{p.pid}-*"))


def test_a_killed_owner_is_swept_up(tmp_path) -> None:
    require_lab()
    p = _start_lab(tmp_path)
    try:
        names, pids = _wait_running(p)
        p.kill()
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    prefix = f"{netns.PREFIX}{p.pid}-"
    assert _ours(prefix), "the kill left nothing to sweep: the test proves nothing"
    removed = netns.sweep()
    assert set(names) <= set(removed)
    assert any(r.startswith(tempfile.gettempdir()) and prefix in r for r in removed)
    assert not _ours(prefix)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)], "processes survived the sweep"


def test_the_lab_adds_nothing_to_the_root_namespace_and_checks_routes() -> None:
    why = netns.available()
    if why is not None:
        pytest.skip(why)
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    with netns.Lab(["a", "b"], tag="rt") as lab:
        lab.check_route("a", lab.hosts["b"].addr)
        for addr in ("127.0.0.1", "192.0.2.1"):  # not lab addresses: refused before any send
            with pytest.raises(netns.LabError, match="not a lab address"):
                lab.check_route("a", addr)
        # The root namespace gained no link and no route into the lab's subnet.
        assert subprocess.run(["ip", "-o", "link"], capture_output=True,
                              text=True).stdout == before
        assert not subprocess.run(["ip", "route", "show", str(netns.SUBNET)],
                                  capture_output=True, text=True).stdout.strip()
