"""The StatefulSet entrypoint's derivation: pod name, set size and ports -> a member's settings."""

from __future__ import annotations

import pytest

from fastraft.config import build_config
from fastraft.errors import ConfigError
from fastraft.statefulset import DEFAULT_DATA_DIR, plan, pod_set

POD = {"HOSTNAME": "fastraft-2", "POD_NAMESPACE": "kv"}
DNS = "fastraft-{}.fastraft.kv.svc.cluster.local"


def test_founding_member_lists_every_founder_by_stable_dns() -> None:
    pl = plan(POD, has_data=False)
    s = pl.settings
    assert s["FASTRAFT_NAME"] == "fastraft-2"
    assert s["FASTRAFT_INITIAL_CLUSTER"] == ",".join(
        f"fastraft-{i}=http://{DNS.format(i)}:2380" for i in range(3))
    assert s["FASTRAFT_INITIAL_CLUSTER_STATE"] == "new"
    assert s["FASTRAFT_INITIAL_ADVERTISE_PEER_URLS"] == f"http://{DNS.format(2)}:2380"
    assert s["FASTRAFT_ADVERTISE_CLIENT_URLS"] == f"http://{DNS.format(2)}:2379"
    assert s["FASTRAFT_LISTEN_CLIENT_URLS"] == "http://0.0.0.0:2379"
    assert s["FASTRAFT_LISTEN_PEER_URLS"] == "http://0.0.0.0:2380"
    assert s["FASTRAFT_LISTEN_METRICS_URLS"] == "http://0.0.0.0:2381"
    assert s["FASTRAFT_DATA_DIR"] == DEFAULT_DATA_DIR
    assert not pl.join


def test_settings_are_accepted_by_the_server_config() -> None:
    cfg = build_config({}, env=plan(POD, has_data=False).environ(POD))
    assert cfg.name == "fastraft-2"
    assert [n for n, _ in cfg.initial_cluster] == ["fastraft-0", "fastraft-1", "fastraft-2"]
    # The same cluster id on every founder: they agree on the initial membership.
    ids = {build_config({}, env=plan({**POD, "HOSTNAME": f"fastraft-{i}"}, False).environ(
        POD)).cluster_id for i in range(3)}
    assert len(ids) == 1


def test_service_domain_size_and_ports_come_from_the_environment() -> None:
    env = {"HOSTNAME": "kv-store-0", "POD_NAMESPACE": "prod", "FASTRAFT_SERVICE_NAME": "kv-peers",
           "FASTRAFT_CLUSTER_DOMAIN": "k8s.example", "FASTRAFT_INITIAL_CLUSTER_SIZE": "5",
           "FASTRAFT_CLIENT_PORT": "12379", "FASTRAFT_PEER_PORT": "12380",
           "FASTRAFT_METRICS_PORT": "12381", "FASTRAFT_DATA_DIR": "/data/m"}
    s = plan(env, has_data=False).settings
    assert s["FASTRAFT_INITIAL_CLUSTER"].split(",")[4] == \
        "kv-store-4=http://kv-store-4.kv-peers.prod.svc.k8s.example:12380"
    assert s["FASTRAFT_LISTEN_METRICS_URLS"] == "http://0.0.0.0:12381"
    assert s["FASTRAFT_DATA_DIR"] == "/data/m"


def test_an_ordinal_past_the_initial_size_joins_as_a_learner_unless_it_has_data() -> None:
    env = {**POD, "HOSTNAME": "fastraft-3"}
    pl = plan(env, has_data=False)
    assert pl.join and pl.pod.grows
    s = pl.settings
    assert s["FASTRAFT_INITIAL_CLUSTER_STATE"] == "existing"
    # the founders (whom the join asks) and itself (config requires its own entry)
    assert [p.split("=")[0] for p in s["FASTRAFT_INITIAL_CLUSTER"].split(",")] == \
        ["fastraft-0", "fastraft-1", "fastraft-2", "fastraft-3"]
    assert pl.pod.others_below() == [f"{DNS.format(i)}:2379" for i in range(3)]
    resumed = plan(env, has_data=True)
    assert not resumed.join and resumed.settings["FASTRAFT_INITIAL_CLUSTER_STATE"] == "existing"
    build_config({}, env=pl.environ(env))  # valid as it stands


def test_hosts_map_replaces_dns_and_the_listen_address() -> None:
    env = {"HOSTNAME": "fastraft-1",
           "FASTRAFT_HOSTS": "fastraft-0=127.0.0.10, fastraft-1=127.0.0.11,fastraft-2=127.0.0.12"}
    s = plan(env, has_data=False).settings
    assert s["FASTRAFT_INITIAL_CLUSTER"] == ("fastraft-0=http://127.0.0.10:2380,"
                                             "fastraft-1=http://127.0.0.11:2380,"
                                             "fastraft-2=http://127.0.0.12:2380")
    assert s["FASTRAFT_LISTEN_CLIENT_URLS"] == "http://127.0.0.11:2379"
    assert s["FASTRAFT_LISTEN_METRICS_URLS"] == "http://127.0.0.11:2381"


def test_derived_identity_wins_over_stale_environment_and_tuning_passes_through() -> None:
    env = {**POD, "FASTRAFT_NAME": "other", "FASTRAFT_INITIAL_CLUSTER_STATE": "existing",
           "FASTRAFT_HEARTBEAT_INTERVAL": "250", "FASTRAFT_ELECTION_TIMEOUT": "2500"}
    cfg = build_config({}, env=plan(env, has_data=False).environ(env))
    assert cfg.name == "fastraft-2" and cfg.initial_cluster_state == "new"
    assert (cfg.heartbeat_interval, cfg.election_timeout) == (250, 2500)


@pytest.mark.parametrize("env, what", [
    ({}, "is not <statefulset>-<ordinal>"),
    ({"HOSTNAME": "fastraft"}, "is not <statefulset>-<ordinal>"),
    ({"HOSTNAME": "Fastraft-0"}, "is not <statefulset>-<ordinal>"),
    ({"HOSTNAME": "fastraft-0", "FASTRAFT_INITIAL_CLUSTER_SIZE": "0"}, "from 1 to 99"),
    ({"HOSTNAME": "fastraft-0", "FASTRAFT_PEER_PORT": "http"}, "FASTRAFT_PEER_PORT"),
    ({"HOSTNAME": "fastraft-0", "FASTRAFT_HOSTS": "fastraft-0"}, "is not name=address"),
])
def test_bad_environment_is_one_clear_error(env: dict[str, str], what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        pod_set(env)


def test_pod_name_override_for_runtimes_without_a_pod_hostname() -> None:
    assert pod_set({"HOSTNAME": "abc123", "FASTRAFT_POD_NAME": "fastraft-4"}).ordinal == 4


def test_shrink_refuses_to_remove_founders_before_contacting_anyone() -> None:
    from fastraft.statefulset import shrink

    # FASTRAFT_HOSTS points nowhere reachable: the refusal must come before any connection.
    env = {"HOSTNAME": "fastraft-0", "FASTRAFT_HOSTS": "fastraft-0=127.0.0.2"}
    with pytest.raises(ConfigError, match="below the initial cluster size 3"):
        shrink(env, 2)


def test_flags_command_prints_the_derived_settings(tmp_path: object) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    env.update(HOSTNAME="fastraft-4", POD_NAMESPACE="kv",
               FASTRAFT_DATA_DIR=os.path.join(str(tmp_path), "data"))
    out = subprocess.run([sys.executable, "-m", "fastraft", "statefulset", "flags"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"FASTRAFT_INITIAL_ADVERTISE_PEER_URLS=http://{DNS.format(4)}:2380" in lines
    assert "FASTRAFT_INITIAL_CLUSTER_STATE=existing" in lines
    assert lines[-1].startswith("# joins first")  # empty data dir, ordinal 4 >= 3
    bad = subprocess.run([sys.executable, "-m", "fastraft", "statefulset", "flags"],
                         env={**env, "HOSTNAME": "web"}, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("fastraft: error: pod name 'web'")
    assert len(bad.stderr.strip().splitlines()) == 1
