"""`fastraft pacelc` without the namespace lab: it says why and offers --loopback; a loopback
run (members on 127.0.0.1, delay made by --experimental-peer-delay-ms in fastraft's transport)
labels every report so; the flag is off by default and validated."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fastraft.config import FlagError, build_config
from fastraft.tools.pacelc import cli as pacelc_cli
from fastraft.tools.pacelc.lab import LOOPBACK_LABEL


def test_without_the_namespace_lab_it_says_why_and_offers_loopback(monkeypatch, tmp_path
                                                                   ) -> None:
    monkeypatch.setattr(pacelc_cli.netns, "available",
                        lambda: "the network-namespace lab needs root")
    r = CliRunner().invoke(pacelc_cli.pacelc_command, ["--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "cannot run here: the network-namespace lab needs root" in r.output
    assert "--loopback" in r.output and LOOPBACK_LABEL in r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, words", [
    (["--delays", "0,x"], "comma-separated"),
    (["--systems", "cassandra"], "unknown cassandra"),
    (["--partitions", "everything"], "unknown everything"),
    (["--max-staleness", "0ms"], "must be positive"),
    (["--max-staleness", "2m"], "within (0, 60]"),
    (["--timeout", "0.5"], "use a number and a unit"),
    (["--delays", "0,5", "--jitter-ms", "10"], "--jitter-ms"),
])
def test_bad_options_are_refused_clearly(args, words, tmp_path) -> None:
    r = CliRunner().invoke(pacelc_cli.pacelc_command, ["--out", str(tmp_path), *args])
    assert r.exit_code == 2 and words in r.output, r.output


def test_transport_delay_flag_is_off_by_default_and_validated() -> None:
    base = {"name": "n1", "data-dir": "/nonexistent/x"}
    assert build_config(base, env={}).experimental_peer_delay_ms == 0
    assert build_config({**base, "experimental-peer-delay-ms": "20"},
                        env={}).experimental_peer_delay_ms == 20
    for bad in ("-1", "x", "20000"):
        with pytest.raises(FlagError, match="--experimental-peer-delay-ms"):
            build_config({**base, "experimental-peer-delay-ms": bad}, env={})


@pytest.mark.slow
def test_loopback_run_is_labelled_and_sees_the_transport_delay(tmp_path) -> None:
    out = tmp_path / "r"
    p = subprocess.run([sys.executable, "-m", "fastraft", "pacelc", "--loopback",
                        "--out", str(out), "--delays", "0,20", "--seconds", "0.5"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "partitions and loss need the namespace lab" in p.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == LOOPBACK_LABEL
    assert "a loopback run has no delay for etcd" in res["systems"]["etcd"]["skipped"]
    html = (out / "index.html").read_text()
    assert f"<b>{LOOPBACK_LABEL}</b>" in html
    fr = res["systems"]["fastraft"]
    p50 = {(pt["level"], pt["delay_ms"]): pt["latency"]["p50_ms"] for pt in fr["else"]}
    # A write waits for a follower's acknowledgement: one delayed message at least (the reply
    # to the leader is delayed as well: 2 x 20 ms), whatever the machine's load.
    assert p50[("write", 20.0)] - p50[("write", 0.0)] >= 20.0, p50
    assert fr["classification"]["write"]["e"] == "EC"
