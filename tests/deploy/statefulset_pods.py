"""Pods of a StatefulSet on this machine: ``fastraft statefulset run`` per member, as the image
runs it, with ``FASTRAFT_HOSTS`` mapping fastraft-N to a loopback address of its own (no cluster
DNS here) so every member keeps the container's ports (2379 client, 2380 peer, 2381 HTTP)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from fastraft.tools.localcluster import request

PORTS = (2379, 2380, 2381)
MAX_PODS = 5


def _free_block(rng: random.Random) -> str:
    """A 127.a.b. prefix whose .10-.14 addresses have the three ports free (other tests on this
    machine use 127.0.0.1 and random ports; a random /24 keeps us out of their way)."""
    for _ in range(50):  # bounded
        prefix = f"127.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}."
        try:
            for i in range(MAX_PODS):
                for port in PORTS:
                    with socket.socket() as s:
                        s.bind((f"{prefix}{10 + i}", port))
        except OSError:
            continue
        return prefix
    raise RuntimeError("no free loopback block for the pods")


class Pods:
    def __init__(self, base_dir: str, initial_size: int = 3, *, heartbeat_ms: int = 50,
                 election_ms: int = 500) -> None:
        self.base_dir = base_dir
        self.prefix = _free_block(random.Random())
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        hosts = ",".join(f"fastraft-{i}={self.addr(i)}" for i in range(MAX_PODS))
        # Nothing from the caller's FASTRAFT_* environment steers the members.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
        self.env.update({"FASTRAFT_HOSTS": hosts,
                         "FASTRAFT_INITIAL_CLUSTER_SIZE": str(initial_size),
                         "FASTRAFT_INITIAL_CLUSTER_TOKEN": "pods-test",
                         "FASTRAFT_HEARTBEAT_INTERVAL": str(heartbeat_ms),
                         "FASTRAFT_ELECTION_TIMEOUT": str(election_ms)})

    def addr(self, i: int) -> str:
        return f"{self.prefix}{10 + i}"

    def endpoint(self, i: int) -> str:
        return f"{self.addr(i)}:2379"

    def endpoints(self, ordinals: range | list[int]) -> list[str]:
        return [self.endpoint(i) for i in ordinals]

    def pod_env(self, i: int) -> dict[str, str]:
        return {**self.env, "HOSTNAME": f"fastraft-{i}",
                "FASTRAFT_DATA_DIR": os.path.join(self.base_dir, f"fastraft-{i}", "data")}

    def log_path(self, i: int) -> str:
        return os.path.join(self.base_dir, f"fastraft-{i}.log")

    def log(self, i: int) -> str:
        try:
            with open(self.log_path(i), encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start(self, i: int) -> None:
        """What the StatefulSet controller does for pod i: run the image's command."""
        assert i not in self.procs or self.procs[i].poll() is not None
        os.makedirs(os.path.join(self.base_dir, f"fastraft-{i}"), exist_ok=True)
        with open(self.log_path(i), "ab") as log:
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "fastraft", "statefulset", "run"], env=self.pod_env(i),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, i: int, timeout: float = 15.0) -> int | None:
        """What scaling down does to pod i: SIGTERM, then SIGKILL after the grace period."""
        p = self.procs.pop(i, None)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                return p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
        return p.wait()

    def kill(self, i: int) -> None:
        p = self.procs.pop(i)
        p.kill()
        p.wait()

    def ctl(self, i: int, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`kubectl exec fastraft-i -- fastraft ...`: a command in pod i's environment."""
        return subprocess.run([sys.executable, "-m", "fastraft", *args], env=self.pod_env(i),
                              capture_output=True, text=True, timeout=timeout)

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            err, res = request(self.endpoint(i), "status", timeout=1.0)
        except OSError:
            return None
        return None if err else res

    def wait_leader(self, among: list[int], timeout: float = 20.0) -> int:
        """Ordinal of the member that all of ``among`` see as leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = {i: self.status(i) for i in among}
            leaders = {s["leader"] for s in sts.values() if s}
            if len(leaders) == 1 and all(sts.values()) and 0 not in leaders:
                (lid,) = leaders
                for i, s in sts.items():
                    if s and s["member_id"] == lid:
                        return i
            time.sleep(0.05)
        raise AssertionError(f"no common leader among {among} within {timeout}s:\n"
                             + "\n".join(self.log(i)[-1500:] for i in among))

    def close(self) -> None:
        for i in list(self.procs):
            self.stop(i, timeout=10.0)
