"""The etcd side of the PACELC lab: etcd 3.4 members (Debian's ``etcd-server``) and a small
client over etcd's HTTP/JSON gateway (``/v3/kv/put``, ``/v3/kv/range``,
``/v3/maintenance/status``), served by each member on its client port.

Why the gateway: it needs nothing beyond the standard library (no gRPC, no protobufs), and
every request still goes through etcd's own gRPC KV service (the gateway runs in the member and
forwards over a local connection), so the consistency behaviour is etcd's. The gateway costs a
few hundred microseconds a request: the report says so beside etcd's latencies. Its two read
levels: linearizable (``l``, the default) and serializable (``s``).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
from typing import Any

__all__ = ["EtcdClient", "EtcdError", "available", "member_argv"]


class EtcdError(Exception):
    """An etcd answer that is not a success; ``kind`` is a short name for the report."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def available() -> str | None:
    """None if etcd can run here, else why not."""
    if shutil.which("etcd") is None:
        return "etcd not found (apt-get install -y etcd-server)"
    return None


def member_argv(name: str, addr: str, cluster: dict[str, str], data_dir: str,
                heartbeat_ms: int, election_ms: int) -> list[str]:
    """The command line of one etcd member listening on ``addr`` (client 2379, peer 2380)."""
    initial = ",".join(f"{n}=http://{a}:2380" for n, a in cluster.items())
    return ["etcd", "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", f"http://{addr}:2379",
            "--advertise-client-urls", f"http://{addr}:2379",
            "--listen-peer-urls", f"http://{addr}:2380",
            "--initial-advertise-peer-urls", f"http://{addr}:2380",
            "--initial-cluster", initial, "--initial-cluster-token", "pacelc",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms),
            "--log-level", "warn"]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class EtcdClient:
    """One keep-alive HTTP connection to one member; one request at a time."""

    def __init__(self, host: str, port: int = 2379, timeout: float = 1.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request("POST", path, json.dumps(body),
                               {"Content-Type": "application/json"})
            r = self._conn.getresponse()
            data = r.read()
        except socket.timeout:
            self.close()
            raise EtcdError("TimeoutError", f"no answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise EtcdError("UnavailableError", str(e) or type(e).__name__) from None
        try:
            doc: dict[str, Any] = json.loads(data)
        except ValueError:
            raise EtcdError("BadAnswer", data[:200].decode(errors="replace")) from None
        if r.status != 200:
            msg = str(doc.get("error") or doc.get("message") or r.status)
            # etcd's words for "no quorum here": the same family as fastraft's NoLeaderError.
            kind = ("NoLeaderError" if "leader" in msg else
                    "TimeoutError" if "timed out" in msg or "deadline" in msg else "EtcdError")
            raise EtcdError(kind, msg)
        return doc

    def put(self, key: str, value: str) -> int:
        doc = self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(doc["header"]["revision"])

    def get(self, key: str, serializable: bool) -> int:
        doc = self._post("/v3/kv/range", {"key": _b64(key), "serializable": serializable})
        return int(doc["header"]["revision"])

    def status(self) -> dict[str, Any]:
        doc = self._post("/v3/maintenance/status", {})
        return {"member_id": int(doc["header"]["member_id"]),
                "leader": int(doc.get("leader") or 0),
                "term": int(doc.get("raftTerm") or 0)}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
