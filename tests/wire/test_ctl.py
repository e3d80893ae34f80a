"""fastractl through click's CliRunner, and once as a real subprocess, against the fake server."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from fakeserver import FakeCluster
from fastraft.ctl import cli, humanize_bytes, parse_compare, parse_duration, parse_op, parse_txn
from fastraft.tools.tablefmt import render_table



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


def test_version_needs_no_cluster() -> None:
    import fastraft

    for args in (["version"], ["--version"]):
        r = CliRunner().invoke(cli, ["--endpoints", "127.0.0.1:1", *args])
        assert r.exit_code == 0 and r.output == f"fastractl version: {fastraft.__version__}\n"


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


# ------------------------------------------------- global options anywhere (as etcdctl's)

def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    # No settings from the caller's shell: each test says what it sets.
    base: dict[str, str | None] = {
        f"{p}_{n}": None for p in ("FASTRAFT", "ETCDCTL")
        for n in ("ENDPOINTS", "WRITE_OUT", "COMMAND_TIMEOUT", "DIAL_TIMEOUT")}
    return CliRunner().invoke(cli, args, env={**base, **(env or {})})


# Each command as words, with the places a global option may go: after every word of the
# command path and after its arguments (etcdctl's persistent flags go anywhere).
_COMMANDS = [
    (["put"], ["gk", "gv"]),
    (["get"], ["gk"]),
    (["del"], ["gk"]),
    (["member", "list"], []),
    (["endpoint", "status"], []),
    (["endpoint", "health"], []),
]


def _placements(path: list[str], args: list[str], opt: list[str]) -> list[list[str]]:
    out = []
    for i in range(len(path) + 1):  # before the command, between its words, right after it
        out.append(path[:i] + opt + path[i:] + args)
    if args:
        out.append(path + args + opt)  # after the arguments
    return out


@pytest.mark.parametrize("path, args", _COMMANDS, ids=lambda v: " ".join(v) or "-")
def test_global_options_are_accepted_in_any_position(cluster: FakeCluster, path: list[str],
                                                     args: list[str]) -> None:
    eps = ",".join(cluster.endpoints)
    cluster.store.put({"key": b"gk", "value": b"gv"})
    for opt in (["--endpoints", eps, "--write-out=json"], [f"--endpoints={eps}", "-w", "json"]):
        for argv in _placements(path, args, opt):
            r = _run(argv)
            assert r.exit_code == 0, (argv, r.output)
            json.loads(r.stdout)  # -w json took effect wherever it was put
            cluster.store.put({"key": b"gk", "value": b"gv"})  # `del` removed it


def test_command_timeout_and_dial_timeout_after_the_command(cluster: FakeCluster) -> None:
    cluster.set_leader(None)
    t0 = time.monotonic()
    r = _run(["get", "k", "--endpoints", ",".join(cluster.endpoints), "--command-timeout",
              "300ms", "--dial-timeout", "100ms"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: no leader")
    assert time.monotonic() - t0 < 3.0  # the 300ms given after the command, not the 5s default
    r = _run(["get", "k", "--command-timeout", "5"])
    assert r.exit_code == 2 and "--command-timeout" in r.stderr
    r = _run(["member", "list", "--dial-timeout", "soon"])
    assert r.exit_code == 2 and "--dial-timeout" in r.stderr


def test_the_last_global_option_given_wins(cluster: FakeCluster) -> None:
    live = ",".join(cluster.endpoints)
    r = _run(["--endpoints", "127.0.0.1:1", "-w", "table", "endpoint", "status",
              "--endpoints", live, "-w", "json"])
    assert r.exit_code == 0, r.output
    assert [d["Endpoint"] for d in json.loads(r.stdout)] == cluster.endpoints


def test_the_seed_walkthrough_typed_as_the_seed_types_it(cluster: FakeCluster) -> None:
    """`export ETCDCTL_ENDPOINTS=...; etcdctl endpoint status --write-out=table`, then put/get."""
    env = {"ETCDCTL_ENDPOINTS": ",".join(s.url for s in cluster.servers)}
    r = _run(["endpoint", "status", "--write-out=table"], env=env)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == lines[2] == lines[-1] and lines[0].startswith("+---")
    assert len(lines) == 3 + 3 + 1
    assert _run(["put", "aaa", "bbb"], env=env).stdout == "OK\n"
    assert _run(["get", "aaa"], env=env).stdout == "aaa\nbbb\n"


def test_endpoints_env_precedence(cluster: FakeCluster) -> None:
    live, dead = cluster.servers[1].endpoint, "127.0.0.1:1"
    args = ["endpoint", "status", "-w", "json", "--command-timeout", "1s"]

    def shown(env: dict[str, str], extra: list[str] = []) -> list[str]:  # noqa: B006
        r = _run([*args, *extra], env=env)
        return [d["Endpoint"] for d in json.loads(r.stdout or "[]")]

    assert shown({"ETCDCTL_ENDPOINTS": live}) == [live]  # read when FASTRAFT_ is not set
    assert shown({"FASTRAFT_ENDPOINTS": live, "ETCDCTL_ENDPOINTS": dead}) == [live]
    assert shown({"FASTRAFT_ENDPOINTS": dead, "ETCDCTL_ENDPOINTS": live}) == []  # FASTRAFT_ won
    assert shown({"FASTRAFT_ENDPOINTS": dead}, ["--endpoints", live]) == [live]  # flag over env
    assert shown({"ETCDCTL_ENDPOINTS": dead}, ["--endpoints", live]) == [live]


# ------------------------------------------------------- tables drawn as etcdctl draws them

# etcdctl v3.5's `endpoint status --write-out=table` for the seed's three members. The seed's
# copy lost its runs of spaces, not its rules: the rule lines below are the seed's, byte for
# byte (checked against the file when it is present); the padding is the table writer's
# (headers centred, the odd space to the right; cells right-aligned; one space each side).
_SEED_RULE = ("+-------------------------+------------------+---------+---------+-----------+"
              "------------+-----------+------------+--------------------+--------+")
_SEED_TABLE = f"""\
{_SEED_RULE}
|        ENDPOINT         |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
{_SEED_RULE}
| http://etcd-0.etcd:2379 | 69691ed70da97612 |   3.5.0 |   25 kB |      true |      false |        30 |         35 |                 35 |        |
| http://etcd-1.etcd:2379 | 7e44220b60d58d6a |   3.5.0 |   25 kB |     false |      false |        30 |         35 |                 35 |        |
| http://etcd-2.etcd:2379 | 63cdb3774b98cc2e |   3.5.0 |   20 kB |     false |      false |        30 |         35 |                 35 |        |
{_SEED_RULE}
"""
_STATUS_HEADER = ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
                  "raft index", "raft applied index", "errors"]


def _seed_rows() -> list[list[str]]:
    ids = ["69691ed70da97612", "7e44220b60d58d6a", "63cdb3774b98cc2e"]
    return [[f"http://etcd-{i}.etcd:2379", ids[i], "3.5.0", "20 kB" if i == 2 else "25 kB",
             "true" if i == 0 else "false", "false", "30", "35", "35", ""] for i in range(3)]


def test_table_layout_matches_etcdctl_sample() -> None:
    assert render_table(_STATUS_HEADER, _seed_rows()) == _SEED_TABLE
    seed = pathlib.Path("/work/shared/seed/000_0d1fd22e09599330.txt")
    if seed.exists():  # the seed's own rule lines, where the seed is at hand
        rules = [ln for ln in seed.read_text().splitlines() if ln.startswith("+---")]
        assert rules[:3] == [_SEED_RULE] * 3


def test_table_rule_widens_for_an_error_as_in_the_seed() -> None:
    # The seed's last table: one member left, "etcdserver: no leader" in ERRORS.
    row = _seed_rows()[0]
    row[4], row[9] = "false", "etcdserver: no leader"
    text = render_table(_STATUS_HEADER, [row])
    rule = text.splitlines()[0]
    assert rule == _SEED_RULE.removesuffix("--------+") + "-----------------------+"
    assert text.splitlines()[1].endswith("|        ERRORS         |")
    assert text.splitlines()[3].endswith("| etcdserver: no leader |")


def test_table_wraps_long_cells_like_the_writer() -> None:
    # A cell over 30 columns with spaces is wrapped where the lines come out most even
    # ("... has no" / "quorum ..." beats "... has" / "no quorum ..."); a long word stays whole.
    err = "no leader: the cluster has no quorum or is electing one"
    lines = render_table(["endpoint", "error"], [["a:1", err], ["b:1", "x" * 40]]).splitlines()
    assert lines[0] == "+----------+" + "-" * 42 + "+"
    assert lines[1] == "| ENDPOINT | " + " " * 17 + "ERROR" + " " * 18 + " |"
    assert lines[3] == "|      a:1 | " + "no leader: the cluster has no".rjust(40) + " |"
    assert lines[4] == "|          | " + "quorum or is electing one".rjust(40) + " |"
    assert lines[5] == "|      b:1 | " + "x" * 40 + " |"
    assert lines[6] == lines[0] and len(lines) == 7
    # Once wrapped, a column is as wide as the limit (30) even if its lines are shorter.
    lines = render_table(["error"], [[err]]).splitlines()
    assert lines[0] == "+" + "-" * 32 + "+"
    assert lines[2 + 1] == "|  no leader: the cluster has no |"


def test_endpoint_status_table_exact(cluster: FakeCluster) -> None:
    cluster.set_leader(1)
    eps = cluster.endpoints
    r = _run(["endpoint", "status", "--endpoints", ",".join(eps), "-w", "table"])
    assert r.exit_code == 0, r.output
    rows = [[ep, format(s.member_id, "x"), "0.1.0", "25 kB", str(i == 1).lower(), "false", "2",
             "8", "8", ""] for i, (ep, s) in enumerate(zip(eps, cluster.servers))]
    assert r.stdout == render_table(_STATUS_HEADER, rows)
    w = len(eps[0])
    head = r.stdout.splitlines()[1]
    gap = w - len("ENDPOINT")
    assert head.startswith("| " + " " * (gap // 2) + "ENDPOINT" + " " * (gap - gap // 2) + " | ")


def test_member_list_table_exact(cluster: FakeCluster) -> None:
    r = _run(["member", "list", "-w", "table", "--endpoints", ",".join(cluster.endpoints)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    s0 = cluster.servers[0]
    peer, client = f"http://127.0.0.1:{s0.port + 1}", s0.url
    pw, cw = len(peer), len(client)
    rule = "+-----+---------+------+" + "-" * (pw + 2) + "+" + "-" * (cw + 2) + "+------------+"
    assert lines[0] == lines[2] == lines[-1] == rule
    hdr = lines[1].split("|")[1:-1]
    assert [c.strip() for c in hdr] == ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS",
                                        "IS LEARNER"]
    assert hdr[0] == " ID  " and hdr[1] == " STATUS  "
    assert lines[3] == f"| 100 | started | m100 | {peer} | {client} |      false |"
    assert len(lines) == 3 + 3 + 1


def test_help_of_every_command_lists_the_global_options() -> None:
    for args in (["put", "--help"], ["member", "list", "--help"], ["member", "--help"],
                 ["endpoint", "status", "--help"], ["watch", "--help"]):
        r = _run(args)
        assert r.exit_code == 0 and "Example" in r.output, args
        assert "Global Options (before or after the command)" in r.output, args
        assert "--write-out" in r.output and "ETCDCTL_ENDPOINTS" in r.output, args


def test_other_global_options_from_the_environment(cluster: FakeCluster) -> None:
    eps = ",".join(cluster.endpoints)
    cluster.store.put({"key": b"k", "value": b"v"})
    r = _run(["get", "k", "--endpoints", eps], env={"ETCDCTL_WRITE_OUT": "json"})
    assert json.loads(r.stdout)["count"] == 1
    r = _run(["get", "k", "--endpoints", eps], env={"FASTRAFT_WRITE_OUT": "simple",
                                                    "ETCDCTL_WRITE_OUT": "json"})
    assert r.stdout == "k\nv\n"
    r = _run(["get", "k", "--endpoints", eps, "-w", "simple"], env={"ETCDCTL_WRITE_OUT": "json"})
    assert r.stdout == "k\nv\n"
    r = _run(["get", "k", "--endpoints", eps], env={"ETCDCTL_COMMAND_TIMEOUT": "5"})
    assert r.exit_code == 2 and "--command-timeout" in r.stderr
