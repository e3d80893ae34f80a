"""fastractl through click's CliRunner, and once as a real subprocess, against the fake server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from fakeserver import FakeCluster
from fastraft.ctl import cli, humanize_bytes, parse_compare, parse_duration, parse_op, parse_txn



@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(3) as c:
        yield c


def ctl(cluster: FakeCluster | None, *args: str, input: str | None = None,
        endpoints: str | None = None):  # type: ignore[no-untyped-def]
    eps = endpoints if endpoints is not None else ",".join(cluster.endpoints)  # type: ignore
    return CliRunner().invoke(cli, ["--endpoints", eps, *args], input=input)


def test_parse_duration() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5s") == 5.0
    assert parse_duration("1m") == 60.0
    assert parse_duration("1.5s") == 1.5
    for bad in ("5", "s", "-1s", "0s", "5 sec", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_humanize_bytes_like_etcd() -> None:
    assert humanize_bytes(24_576) == "25 kB"
    assert humanize_bytes(1_234) == "1.2 kB"
    assert humanize_bytes(999) == "999 B"
    assert humanize_bytes(5) == "5 B"
    assert humanize_bytes(20_000_000) == "20 MB"


def test_put_get_del_simple(cluster: FakeCluster) -> None:
    r = ctl(cluster, "put", "foo", "bar")
    assert r.exit_code == 0 and r.stdout == "OK\n"
    r = ctl(cluster, "put", "foo", "baz", "--prev-kv")
    assert r.stdout == "OK\nfoo\nbar\n"
    ctl(cluster, "put", "foo2", "v2")
    r = ctl(cluster, "get", "foo")
    assert r.exit_code == 0 and r.stdout == "foo\nbaz\n"
    r = ctl(cluster, "get", "foo", "--prefix")
    assert r.stdout == "foo\nbaz\nfoo2\nv2\n"
    assert ctl(cluster, "get", "foo", "--prefix", "--print-value-only").stdout == "baz\nv2\n"
    assert ctl(cluster, "get", "foo", "--prefix", "--keys-only").stdout == "foo\nfoo2\n"
    assert ctl(cluster, "get", "foo", "--prefix", "--count-only").stdout == "2\n"
    assert ctl(cluster, "get", "foo", "--prefix", "--limit", "1").stdout == "foo\nbaz\n"
    assert ctl(cluster, "get", "foo", "foo3").stdout == "foo\nbaz\nfoo2\nv2\n"
    assert ctl(cluster, "get", "foo", "--consistency", "s").stdout == "foo\nbaz\n"
    r = ctl(cluster, "del", "foo", "--prefix")
    assert r.exit_code == 0 and r.stdout == "2\n"
    assert ctl(cluster, "get", "foo").stdout == ""


def test_json_output(cluster: FakeCluster) -> None:
    ctl(cluster, "put", "k", "v")
    r = ctl(cluster, "-w", "json", "get", "k")
    doc = json.loads(r.stdout)
    assert doc["count"] == 1
    assert base64.b64decode(doc["kvs"][0]["key"]) == b"k"
    assert base64.b64decode(doc["kvs"][0]["value"]) == b"v"
    assert doc["header"]["revision"] == 2


def test_errors_one_line_exit_1(cluster: FakeCluster) -> None:
    r = ctl(cluster, "compaction", "99")
    assert r.exit_code == 1
    assert r.stderr == "Error: required revision is a future revision\n"
    assert r.stdout == ""


def test_bad_usage_exit_2(cluster: FakeCluster) -> None:
    assert ctl(cluster, "put", "onlykey").exit_code == 2
    assert ctl(cluster, "--command-timeout", "5", "get", "k").exit_code == 2
    assert ctl(cluster, "get", "k", "--consistency", "x").exit_code == 2
    assert ctl(None, "get", "k", endpoints="nohostport").exit_code == 2
    assert ctl(cluster, "get", "k", "--limit", "-1").exit_code == 2
    assert sum(sum(s.calls.values()) for s in cluster.servers) == 0


def test_no_leader_linearizable_get_fails_within_timeout(cluster: FakeCluster) -> None:
    cluster.set_leader(None)
    t0 = time.monotonic()
    r = ctl(cluster, "--command-timeout", "500ms", "get", "k")
    elapsed = time.monotonic() - t0
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: no leader") and r.stderr.count("\n") == 1
    assert elapsed < 3.0  # 500 ms honoured, well below the 5 s default; slack for load


def test_redirect_through_follower(cluster: FakeCluster) -> None:
    cluster.set_leader(2)
    r = ctl(cluster, "put", "a", "1", endpoints=cluster.servers[0].endpoint)
    assert r.exit_code == 0 and cluster.servers[2].calls["put"] == 1


def test_endpoint_status_table(cluster: FakeCluster) -> None:
    cluster.set_leader(1)
    dead = "127.0.0.1:1"
    eps = ",".join([*cluster.endpoints, dead])
    r = ctl(None, "-w", "table", "--command-timeout", "1s", "endpoint", "status", endpoints=eps)
    assert r.exit_code == 1  # one endpoint failed, after the others printed
    assert f"Failed to get the status of endpoint {dead}" in r.stderr
    lines = r.stdout.splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
                      "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[3:-1]]
    assert len(rows) == 3
    assert [row[4] for row in rows] == ["false", "true", "false"]
    assert rows[0][1] == format(cluster.servers[0].member_id, "x")
    assert rows[0][3] == "25 kB"


def test_endpoint_status_no_leader(cluster: FakeCluster) -> None:
    cluster.set_leader(None)
    r = ctl(cluster, "endpoint", "status")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(ln.endswith(", no leader") for ln in lines)
    assert lines[0].startswith(f"{cluster.servers[0].endpoint}, 100, 0.1.0, 25 kB, false, false")


def test_endpoint_health(cluster: FakeCluster) -> None:
    r = ctl(cluster, "endpoint", "health")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert all(" is healthy: successfully committed proposal: took = " in ln for ln in lines)
    cluster.servers[1].role = "noleader"
    r = ctl(cluster, "endpoint", "health")
    assert r.exit_code == 1
    assert f"{cluster.servers[1].endpoint} is unhealthy: failed to commit proposal: no leader" \
        in r.stderr
    assert r.stdout.count("is healthy") == 2


def test_member_list(cluster: FakeCluster) -> None:
    r = ctl(cluster, "member", "list")
    assert r.exit_code == 0
    first = r.stdout.splitlines()[0].split(", ")
    assert first[0] == "100" and first[1] == "started" and first[4] == cluster.servers[0].url
    r = ctl(cluster, "-w", "table", "member", "list")
    assert "PEER ADDRS" in r.stdout and "101" in r.stdout


def test_txn_from_stdin(cluster: FakeCluster) -> None:
    ctl(cluster, "put", "k", "v1")
    script = 'value("k") = "v1"\n\nput k v2\nget k\n\ndel k\n'
    r = ctl(cluster, "txn", input=script)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "SUCCESS\n\nOK\n\nk\nv2\n"
    r = ctl(cluster, "txn", input=script)  # now k = v2: the failure branch runs
    assert r.stdout == "FAILURE\n\n1\n"
    r = ctl(cluster, "txn", input='valu("k") = "x"\n')
    assert r.exit_code == 1 and r.stderr.startswith("Error: bad compare")


def test_txn_parsers() -> None:
    assert parse_compare('mod("a b") > "7"').to_wire() == ["mod", ">", b"a b", b"", 7]
    assert parse_compare('value(k) != "x y"').to_wire() == ["value", "!=", b"k", b"", b"x y"]
    with pytest.raises(ValueError):
        parse_compare('version("k") = "abc"')
    assert parse_op('put "a key" "a value"').args["value"] == b"a value"
    assert parse_op("get a --prefix").args["range_end"] == b"b"
    for bad in ("put k", "frob k", "get", "put 'k"):
        with pytest.raises(ValueError):
            parse_op(bad)
    cmp, ok, fail = parse_txn("\nput a b\n")
    assert cmp == [] and len(ok) == 1 and fail == []


def test_help_teaches() -> None:
    runner = CliRunner()
    for args in (["--help"], ["put", "--help"], ["get", "--help"], ["del", "--help"],
                 ["txn", "--help"], ["compaction", "--help"], ["member", "list", "--help"],
                 ["endpoint", "health", "--help"], ["endpoint", "status", "--help"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 0 and "Example" in r.output and "fastractl" in r.output, args


def test_subprocess_roundtrip(cluster: FakeCluster) -> None:
    env = {**os.environ, "FASTRAFT_ENDPOINTS": ",".join(cluster.endpoints)}
    p = subprocess.run([sys.executable, "-m", "fastraft.ctl", "put", "sub", "proc"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == "OK\n", p.stderr
    p = subprocess.run([sys.executable, "-m", "fastraft.ctl", "get", "sub"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.stdout == "sub\nproc\n"
    cluster.set_leader(None)
    p = subprocess.run([sys.executable, "-m", "fastraft.ctl", "--command-timeout", "300ms",
                        "get", "sub"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr.startswith("Error: no leader")
