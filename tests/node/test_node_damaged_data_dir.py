"""`fastraft serve` on a damaged, foreign or read-only data dir: one line, exit 1, nothing changed.

A real member writes a data dir once (module fixture: 200 puts, then SIGTERM); each case copies
it, damages the copy as a disk fault or an operator mistake would, and starts a member on it.
RocksDB itself would "recover" some of these by changing the files (a truncated MANIFEST: it
forgets the tables and deletes them; CURRENT missing: it creates a new empty database beside the
old files), so the member must refuse before its read-write open.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fastraft
from fastraft.tools.localcluster import free_ports


def _serve_args(data_dir: Path, ports: list[int]) -> list[str]:
    peer = f"http://127.0.0.1:{ports[1]}"
    return [sys.executable, "-m", "fastraft", "serve", "--name", "n1", "--data-dir", str(data_dir),
            "--listen-client-urls", f"http://127.0.0.1:{ports[0]}", "--listen-peer-urls", peer,
            "--initial-cluster", f"n1={peer}", "--heartbeat-interval", "50",
            "--election-timeout", "500"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}


class Member:
    """One member process on ``data_dir`` (stopped by PID)."""

    def __init__(self, data_dir: Path, ports: list[int] | None = None) -> None:
        self.ports = ports or free_ports(2)
        self.endpoint = f"127.0.0.1:{self.ports[0]}"
        self.proc = subprocess.Popen(_serve_args(data_dir, self.ports), env=_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


# The member's identity derives from its peer URL: every start on the golden dir uses its ports.
PORTS: list[int] = []


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data dir of a member that applied 200 puts and stopped cleanly."""
    d = tmp_path_factory.mktemp("golden") / "n1.fastraft"
    PORTS[:] = free_ports(2)
    m = Member(d, PORTS)
    try:
        with fastraft.Client(m.endpoint, timeout=15.0) as c:
            for i in range(200):
                c.put(b"k%03d" % i, b"v" * 1000)
    finally:
        m.stop()
    assert m.proc.returncode == 0
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fingerprint(path: Path) -> list[tuple[str, str]]:
    """Names and contents of every file under ``path`` (rocksdict rewrites its config file
    with the same bytes even when it opens read-only, so mtimes are not compared)."""
    out = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out.append((os.path.relpath(p, path), hashlib.sha256(fh.read()).hexdigest()))
    return sorted(out)


def _one(d: Path, pattern: str) -> Path:
    found = sorted((d / "db").glob(pattern), key=lambda p: p.stat().st_size)
    assert found, pattern
    return found[-1]  # the biggest: the one with the most data


def _truncate(pattern: str, size: int | None = None) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = _one(d, pattern)
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 2 if size is None else size)
    return damage


def _overwrite_tail(pattern: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = _one(d, pattern)
        n = min(4096, p.stat().st_size)
        with open(p, "r+b") as f:
            f.seek(-n, os.SEEK_END)
            f.write(b"\xa5" * n)
    return damage


def _delete(pattern: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        _one(d, pattern).unlink()
    return damage


@pytest.mark.parametrize("damage, words", [
    (_truncate("MANIFEST-*"), "truncated or replaced"),
    (_delete("CURRENT"), "CURRENT is missing"),
    (_truncate("*.sst"), "Sst file size mismatch"),
    (_overwrite_tail("*.sst"), "Corruption"),
    (_overwrite_tail("MANIFEST-*"), "Corruption"),
    (_truncate("CURRENT", 0), "CURRENT"),
    (_delete("*.sst"), "No such file"),
], ids=["truncated-manifest", "no-current", "truncated-sst", "garbage-sst", "garbage-manifest",
        "empty-current", "missing-sst"])
def test_a_damaged_database_is_refused_in_one_line_and_left_untouched(
        golden: Path, tmp_path: Path, damage: Callable[[Path], None], words: str) -> None:
    d = tmp_path / "n1.fastraft"
    shutil.copytree(golden, d)
    damage(d)
    before = fingerprint(d)
    p = subprocess.run(_serve_args(d, PORTS), env=_env(), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith(f"fastraft: error: data dir {str(d)!r} is damaged: "), lines[0]
    assert words in lines[0] and "restore the data dir from a backup" in lines[0], lines[0]
    assert fingerprint(d) == before
    # Refused again, the same way: the first attempt did not "repair" it into something else.
    p2 = subprocess.run(_serve_args(d, PORTS), env=_env(), capture_output=True,
                        text=True, timeout=30)
    assert p2.returncode == 1 and p2.stderr.strip().splitlines() == lines


def test_a_corrupt_table_block_gives_errors_never_an_empty_answer(
        golden: Path, tmp_path: Path) -> None:
    """Garbage inside a table (not its footer) passes RocksDB's open: reads that reach it
    must fail (INTERNAL), not look like missing keys."""
    d = tmp_path / "n1.fastraft"
    shutil.copytree(golden, d)
    # The KV holds the 200 values: its table is the biggest. Its first block is data.
    p = _one(d, "*.sst")
    with open(p, "r+b") as f:
        f.write(b"\x5a" * 512)
    m = Member(d, PORTS)
    try:
        with fastraft.Client(m.endpoint, timeout=10.0) as c:
            deadline = time.monotonic() + 15.0
            got: object = None
            while time.monotonic() < deadline:  # bounded: until the member answers at all
                try:
                    got = c.get(b"k", prefix=True, consistency="serializable")
                    break
                except fastraft.UnavailableError:
                    time.sleep(0.1)
                except fastraft.FastraftError as e:
                    got = e
                    break
            assert isinstance(got, fastraft.FastraftError), got
            assert "Corruption" in str(got)
    finally:
        m.stop()


def test_an_etcd_data_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("etcd is not installed")
    d = tmp_path / "etcd-data"
    cport, pport = free_ports(2)
    e = subprocess.Popen([etcd, "--data-dir", str(d),
                          "--listen-client-urls", f"http://127.0.0.1:{cport}",
                          "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                          "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                          "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                          "--initial-cluster", f"default=http://127.0.0.1:{pport}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15.0
        while not list((d / "member" / "wal").glob("*.wal")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        e.terminate()
        e.wait(timeout=10)
    assert (d / "member" / "wal").is_dir()
    before = fingerprint(d)
    p = subprocess.run(_serve_args(d, free_ports(2)), env=_env(), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "looks like an etcd data dir" in lines[0], p.stderr
    assert "point --data-dir at" in lines[0]
    assert fingerprint(d) == before


def test_a_read_only_data_dir_is_refused_at_start(golden: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        d = mnt / "n1.fastraft"
        shutil.copytree(golden, d)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True,
                       timeout=10)
        before = fingerprint(d)
        p = subprocess.run(_serve_args(d, PORTS), env=_env(), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert "is not writable" in lines[0] and "read-only file system" in lines[0], lines[0]
        assert fingerprint(d) == before
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)
