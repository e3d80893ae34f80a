"""`fastraft` command line: flags, env vars, config file, refused data dirs, `cluster`."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from fastraft.config import build_config, cluster_id, member_id, parse_url
from fastraft.tools.localcluster import _ephemeral_range, free_ports, request
from fastraft.storage.logstore import Storage


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    env.update(extra)
    return env


def _fastraft(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastraft", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or _env(), cwd=cwd,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, flag, words", [
    (["--election-timeout", "300"], "--election-timeout", "5x"),
    (["--heartbeat-interval", "fast"], "--heartbeat-interval", "not an integer"),
    (["--listen-client-urls", "https://127.0.0.1:2379"], "--listen-client-urls",
     "TLS not supported yet"),
    (["--listen-peer-urls", "http://127.0.0.1:99999"], "--listen-peer-urls", "port"),
    (["--initial-cluster", "a=http://127.0.0.1:1"], "--initial-cluster", "not listed"),
    (["--initial-cluster-state", "maybe"], "--initial-cluster-state", "maybe"),
    (["--snapshot-count", "0"], "--snapshot-count", "at least 1"),
    (["--log-level", "loud"], "--log-level", "loud"),
    (["--max-request-bytes", "-5"], "--max-request-bytes", "at least"),
    (["--listen-metrics-urls", "http://127.0.0.1:2379"], "--listen-metrics-urls",
     "port of their own"),
    (["--listen-metrics-urls", "ftp://127.0.0.1:2381"], "--listen-metrics-urls", "scheme"),
    (["--readyz-max-lag", "-1"], "--readyz-max-lag", "at least 0"),
    (["--lease-clock-drift", "900"], "--lease-clock-drift", "leaves no lease"),
    (["--lease-clock-drift", "-1"], "--lease-clock-drift", "at least 0"),
])
def test_bad_flag_exits_2_with_one_line(tmp_path, args: list[str], flag: str,
                                        words: str) -> None:
    p = _fastraft("serve", "--data-dir", str(tmp_path / "d"), *args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"fastraft: error: {flag}: ") and words in lines[0], lines[0]
    assert not (tmp_path / "d").exists()  # nothing was created


def test_unknown_flag_and_bad_env_var_are_one_line_too(tmp_path) -> None:
    p = _fastraft("serve", "--bogus", "1")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.startswith("fastraft: error:") and "--bogus" in p.stderr
    p = _fastraft("serve", env=_env(FASTRAFT_HEARTBEAT_INTERVAL="soon"))
    assert p.returncode == 2
    assert p.stderr.strip() == ("fastraft: error: --heartbeat-interval: 'soon' is not an integer "
                                "(set by FASTRAFT_HEARTBEAT_INTERVAL)")


def test_foreign_data_dir_is_refused_and_left_alone(tmp_path) -> None:
    d = tmp_path / "notours"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    p = _fastraft("serve", "--data-dir", str(d), "--listen-client-urls", "127.0.0.1:1",
                  "--listen-peer-urls", "127.0.0.1:2")
    assert p.returncode == 1
    assert "not a fastraft data dir" in p.stderr and "refusing" in p.stderr
    assert sorted(os.listdir(d)) == ["precious.txt"]
    assert (d / "precious.txt").read_text() == "keep me"


def test_data_dir_of_another_member_is_refused(tmp_path) -> None:
    d = str(tmp_path / "n1.fastraft")
    ic = "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2390"
    cfg = build_config({"name": "n1", "data-dir": d, "initial-cluster": ic}, env={})
    Storage.open(d, cluster_id=cfg.cluster_id, member_id=cfg.member_id, name="n1").close()
    before = sorted(os.listdir(d))
    # Same cluster, wrong member (n2 pointed at n1's dir): refused.
    p = _fastraft("serve", "--name", "n2", "--data-dir", d, "--initial-cluster", ic,
                  "--listen-peer-urls", "http://127.0.0.1:2390")
    assert p.returncode == 1 and "belongs to member 'n1'" in p.stderr, p.stderr
    # Same name, another cluster (a different token): refused too.
    p = _fastraft("serve", "--name", "n1", "--data-dir", d, "--initial-cluster", ic,
                  "--initial-cluster-token", "other")
    assert p.returncode == 1 and "belongs to cluster" in p.stderr, p.stderr
    assert sorted(os.listdir(d)) == before


def test_identifiers_follow_the_architecture_document() -> None:
    urls = ["http://127.0.0.1:2390", "http://127.0.0.1:2380"]
    raw = hashlib.sha256(b"tok/n1/http://127.0.0.1:2380,http://127.0.0.1:2390").digest()
    assert member_id("n1", urls, "tok") == int.from_bytes(raw[:8], "big")
    ids = [0xABC, 0x12]
    raw = hashlib.sha256(b"tok/12,abc").digest()
    assert cluster_id("tok", ids) == int.from_bytes(raw[:8], "big")
    cfg = build_config({"name": "n2", "initial-cluster":
                        "n1=http://127.0.0.1:2380,n2=127.0.0.1:2390",
                        "listen-peer-urls": "127.0.0.1:2390"}, env={})
    assert cfg.member_id == member_id("n2", ["http://127.0.0.1:2390"], "fastraft-cluster")
    assert cfg.cluster_id == cluster_id("fastraft-cluster", list(cfg.initial_members()))
    assert parse_url("127.0.0.1:5") == parse_url("http://127.0.0.1:5/") == ("127.0.0.1", 5)


def test_precedence_flag_over_env_over_config_file(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('name = "fromfile"\nheartbeat-interval = 20\nelection_timeout = 200\n'
                 'log-level = "warn"\n')
    cfg = build_config({"config-file": str(f), "log-level": "error"},
                       env={"FASTRAFT_HEARTBEAT_INTERVAL": "30"})
    assert (cfg.name, cfg.heartbeat_interval, cfg.election_timeout, cfg.log_level) == (
        "fromfile", 30, 200, "error")
    assert cfg.data_dir == "fromfile.fastraft"
    f.write_text('nmae = "typo"\n')
    with pytest.raises(Exception, match="unknown key 'nmae'"):
        build_config({"config-file": str(f)}, env={})


def test_metrics_urls_from_the_environment_and_off_by_default() -> None:
    base = {"name": "n1", "data-dir": "d"}
    assert build_config(base, env={}).listen_metrics_urls == ()
    cfg = build_config(base, env={"FASTRAFT_LISTEN_METRICS_URLS":
                                  "http://127.0.0.1:2381, 127.0.0.1:2382"})
    assert cfg.listen_metrics_urls == ("http://127.0.0.1:2381", "http://127.0.0.1:2382")
    assert cfg.metrics_addrs() == [("127.0.0.1", 2381), ("127.0.0.1", 2382)]
    assert cfg.readyz_max_lag == 10000


def test_a_metrics_port_in_use_stops_the_start_with_one_line(tmp_path) -> None:
    cport, pport, mport = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", mport))
        taken.listen()
        p = _fastraft("serve", "--name", "m1", "--data-dir", str(tmp_path / "d"),
                      "--listen-client-urls", f"http://127.0.0.1:{cport}",
                      "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                      "--listen-metrics-urls", f"http://127.0.0.1:{mport}")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith("fastraft: error: cannot start:"), p.stderr


def test_serve_from_a_config_file(tmp_path) -> None:
    cport, pport = free_ports(2)
    f = tmp_path / "m.toml"
    f.write_text(f'name = "cf"\ndata-dir = "{tmp_path / "cf.data"}"\n'
                 f'listen-client-urls = "http://127.0.0.1:{cport}"\n'
                 f'listen-peer-urls = "http://127.0.0.1:{pport}"\n'
                 'heartbeat-interval = 20\nelection-timeout = 200\n')
    proc = subprocess.Popen([sys.executable, "-m", "fastraft", "serve", "--config-file", str(f)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                            stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 15
        res = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _, st = request(f"127.0.0.1:{cport}", "status", timeout=1)
                if st.get("leader"):
                    err, res = request(f"127.0.0.1:{cport}", "member_list", timeout=1)
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert res is not None, "the member never answered"
        assert [m["name"] for m in res["members"]] == ["cf"]
        assert os.path.exists(tmp_path / "cf.data" / "fastraft.id")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # Log lines name the member, and the core's lines are visible at info.
    assert " I | cf | raft: " in stderr and "became leader at term 1" in stderr


def _free_base_port() -> int:
    """A base B with B+10i, B+10i+1 and B+10i+2 (i < 3) all free on 127.0.0.1 right now.

    Searched below the kernel's ephemeral range, as localcluster.free_ports does: a port in that
    range can be taken as some outgoing connection's source port between this check and the
    member's bind."""
    lo, _ = _ephemeral_range()
    start = 10000 if lo > 12000 else 1024
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(start, lo - 40)
        ports = [base + 10 * i + j for i in range(3) for j in range(3)]
        socks = []
        try:
            for p in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def test_cluster_command_runs_three_members_and_stops_them_cleanly(tmp_path) -> None:
    base = _free_base_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastraft", "cluster", "--size", "3",
                             "--base-port", str(base), "--data-dir", str(tmp_path / "cl")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "try:" in line:
                break
        assert any("fastractl --endpoints=" in ln and "endpoint status -w table" in ln
                   for ln in lines), lines
        eps = [f"127.0.0.1:{base + 10 * i}" for i in range(3)]
        deadline = time.monotonic() + 15
        leaders: set = set()
        while time.monotonic() < deadline:
            try:
                leaders = {request(ep, "status", timeout=1)[1].get("leader") for ep in eps}
            except OSError:
                leaders = set()
            if len(leaders) == 1 and 0 not in leaders:
                break
            time.sleep(0.1)
        assert len(leaders) == 1 and 0 not in leaders, leaders
        ctl = subprocess.run([sys.executable, "-m", "fastraft.ctl", f"--endpoints={','.join(eps)}",
                              "-w", "table", "endpoint", "status"], capture_output=True,
                             text=True, timeout=30, env=_env())
        assert ctl.returncode == 0 and ctl.stdout.count("127.0.0.1:") == 3, ctl.stdout
        # Every member's metrics port (base + 10i + 2), as the help's curl line reads it.
        for i in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{base + 10 * i + 2}/metrics",
                                        timeout=5) as r:
                assert "\netcd_server_has_leader 1.0\n" in r.read().decode()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    # Prefixed member logs were shown, and every member stopped.
    assert " n1 | " in out and " n3 | " in out and "n1 stopped" in out and "n3 stopped" in out
    for i in range(3):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", base + 10 * i), timeout=1).close()


@pytest.mark.parametrize("cmd", [[], ["serve"], ["cluster"], ["demo"]])
def test_help_teaches_with_an_example(cmd: list[str]) -> None:
    p = _fastraft(*cmd, "--help")
    assert p.returncode == 0 and "Usage: " in p.stdout
    assert "fastraft " in p.stdout and ("Example" in p.stdout or not cmd)


def test_version_flags() -> None:
    import fastraft

    assert _fastraft("--version").stdout == f"fastraft {fastraft.__version__}\n"
    assert _fastraft("serve", "--version").stdout == f"fastraft version: {fastraft.__version__}\n"


def test_fastractl_typed_as_the_seed_types_etcdctl(make_cluster) -> None:
    """`export ETCDCTL_ENDPOINTS=http://...; etcdctl endpoint status --write-out=table`, then
    put and get, against real members: the global option after the command, the endpoints
    from etcdctl's variable, the table drawn as etcdctl draws it."""
    lc = make_cluster(3)
    env = {k: v for k, v in _env().items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_ENDPOINTS"] = ",".join(f"http://{m.endpoint}" for m in lc.members)

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastraft.ctl", *args], env=env,
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    p = ctl("endpoint", "status", "--write-out=table")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 7 and lines[0] == lines[2] == lines[6], p.stdout
    cells = [[c.strip() for c in ln.split("|")[1:-1]] for ln in lines[3:6]]
    assert [c[0] for c in cells] == [f"http://{m.endpoint}" for m in lc.members]
    assert sorted(c[4] for c in cells) == ["false", "false", "true"]  # IS LEADER
    width = len(lines[0].split("+")[1]) - 2
    gap = width - len("ENDPOINT")
    assert lines[1].startswith(f"| {' ' * (gap // 2)}ENDPOINT{' ' * (gap - gap // 2)} |")
    assert lines[3].startswith(f"| http://{lc.members[0].endpoint} |")
    assert ctl("put", "aaa", "bbb").stdout == "OK\n"
    assert ctl("get", "aaa").stdout == "aaa\nbbb\n"
    p = ctl("member", "list", "-w", "table")
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 7 and lines[0] == lines[2] == lines[6], p.stdout
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == [
        "ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"]
