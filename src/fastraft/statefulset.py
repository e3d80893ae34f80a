"""The StatefulSet entrypoint: a pod's identity (``fastraft-2``) -> the member's flags.

A StatefulSet gives every pod a stable name ``<set>-<ordinal>`` and, through its headless
Service, a stable DNS name ``<set>-<ordinal>.<service>.<namespace>.svc.<cluster domain>``. From
that, the set's initial size and the ports, this module derives what an operator would otherwise
type per member (etcd's StatefulSet examples do it with shell in the manifest):

* ordinals below the initial size are the founding members: ``--initial-cluster`` lists them all,
  ``--initial-cluster-state new``. A pod restarted on its data dir resumes as itself, so scaling
  3 -> 1 -> 2 keeps the three members (no quorum with one pod, a quorum again with two);
* an ordinal at or above the initial size grows the cluster: with an empty data dir it asks the
  running members to add it as a learner (``member add --learner``, skipped when it is listed
  already: a pod restarted between the add and its first start), starts with
  ``--initial-cluster-state existing``, and promotes itself once the leader accepts it (in sync);
* shrinking is a step before ``kubectl scale``: ``fastraft statefulset shrink --to N`` removes
  the members of ordinal N and above (highest first). A preStop hook cannot tell a scale-down
  from a rolling restart, and removing a member on every restart would resync it each time.

The derived values are ``FASTRAFT_*`` settings (config.py reads them like flags): the identity
ones (name, URLs, initial cluster and state) are always derived; everything else (timeouts, token,
data dir, log level) comes from the environment unchanged. Settings the server does not know
(an older build without ``--listen-metrics-urls``) are ignored there rather than refused.

``FASTRAFT_HOSTS`` (``fastraft-0=127.0.0.10,...``) maps member names to addresses instead of
DNS: for running the same entrypoint where there is no cluster DNS (tests, a podman network).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fastraft.config import member_id
from fastraft.errors import BadRequestError, ConfigError, FastraftError

__all__ = ["PodSet", "Plan", "pod_set", "plan", "join_as_learner", "Promoter", "shrink",
           "data_dir", "data_dir_has_member", "probe"]

log = logging.getLogger("fastraft.statefulset")

_POD_NAME = re.compile(r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>[0-9]+)$")
DEFAULT_DATA_DIR = "/var/lib/fastraft/data"  # a subdirectory: a fresh volume has lost+found


@dataclass(frozen=True)
class PodSet:
    """The set this pod belongs to, as the environment describes it."""

    set_name: str
    ordinal: int
    initial_size: int
    service: str
    namespace: str
    cluster_domain: str
    client_port: int
    peer_port: int
    metrics_port: int
    hosts: Mapping[str, str]  # member name -> address, instead of DNS

    @property
    def name(self) -> str:
        return self.member_name(self.ordinal)

    @property
    def grows(self) -> bool:
        """Whether this pod is beyond the founding members (it joins as a learner)."""
        return self.ordinal >= self.initial_size

    def member_name(self, ordinal: int) -> str:
        return f"{self.set_name}-{ordinal}"

    def host(self, ordinal: int) -> str:
        name = self.member_name(ordinal)
        return self.hosts.get(name) or (
            f"{name}.{self.service}.{self.namespace}.svc.{self.cluster_domain}")

    def peer_url(self, ordinal: int) -> str:
        return f"http://{self.host(ordinal)}:{self.peer_port}"

    def client_url(self, ordinal: int) -> str:
        return f"http://{self.host(ordinal)}:{self.client_port}"

    def listen_host(self) -> str:
        # All interfaces in a pod; the own mapped address where several members share a host.
        return self.hosts.get(self.name, "0.0.0.0")

    def founders(self) -> list[int]:
        return list(range(self.initial_size))

    def others_below(self) -> list[str]:
        """Client endpoints of the members a grown pod can ask (every lower ordinal)."""
        return [f"{self.host(i)}:{self.client_port}" for i in range(self.ordinal)]


def _int(env: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key, "").strip() or str(default)
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ConfigError(f"{key}={raw!r}: expected a number from {lo} to {hi}")
    return int(raw)


def _hosts(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, addr = part.partition("=")
        if not sep or not name.strip() or not addr.strip():
            raise ConfigError(f"FASTRAFT_HOSTS: {part!r} is not name=address")
        out[name.strip()] = addr.strip()
    return out


def pod_set(env: Mapping[str, str]) -> PodSet:
    """Read the pod's identity and the set's shape from ``env``. Raises ConfigError."""
    pod = (env.get("FASTRAFT_POD_NAME") or env.get("HOSTNAME") or "").strip()
    m = _POD_NAME.match(pod)
    if m is None:
        raise ConfigError(f"pod name {pod!r} (HOSTNAME or FASTRAFT_POD_NAME) is not "
                          f"<statefulset>-<ordinal>, e.g. fastraft-0")
    set_name = m.group("set")
    return PodSet(
        set_name=set_name, ordinal=int(m.group("ordinal")),
        initial_size=_int(env, "FASTRAFT_INITIAL_CLUSTER_SIZE", 3, 1, 99),
        service=(env.get("FASTRAFT_SERVICE_NAME") or set_name).strip(),
        namespace=(env.get("POD_NAMESPACE") or "default").strip(),
        cluster_domain=(env.get("FASTRAFT_CLUSTER_DOMAIN") or "cluster.local").strip(),
        client_port=_int(env, "FASTRAFT_CLIENT_PORT", 2379, 1, 65535),
        peer_port=_int(env, "FASTRAFT_PEER_PORT", 2380, 1, 65535),
        metrics_port=_int(env, "FASTRAFT_METRICS_PORT", 2381, 1, 65535),
        hosts=_hosts(env.get("FASTRAFT_HOSTS", "")))


@dataclass(frozen=True)
class Plan:
    """What to start: the member's ``FASTRAFT_*`` settings and whether it must join first."""

    pod: PodSet
    settings: dict[str, str]
    join: bool  # a grown pod with an empty data dir: `member add --learner` before starting

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the derived settings laid over it."""
        return {**env, **self.settings}


def plan(env: Mapping[str, str], has_data: bool) -> Plan:
    """Derive the member's settings; ``has_data``: its data dir holds a member already."""
    p = pod_set(env)
    listen = p.listen_host()
    founders = [p.member_name(i) + "=" + p.peer_url(i) for i in p.founders()]
    if p.grows:
        # Resuming, the node ignores the list (its data dir has the members); joining, it asks
        # these members for the cluster (server/join.py): the founders are the ones that exist.
        founders.append(p.name + "=" + p.peer_url(p.ordinal))
    settings = {
        "FASTRAFT_NAME": p.name,
        "FASTRAFT_DATA_DIR": data_dir(env),
        "FASTRAFT_LISTEN_CLIENT_URLS": f"http://{listen}:{p.client_port}",
        "FASTRAFT_ADVERTISE_CLIENT_URLS": p.client_url(p.ordinal),
        "FASTRAFT_LISTEN_PEER_URLS": f"http://{listen}:{p.peer_port}",
        "FASTRAFT_INITIAL_ADVERTISE_PEER_URLS": p.peer_url(p.ordinal),
        "FASTRAFT_INITIAL_CLUSTER": ",".join(founders),
        "FASTRAFT_INITIAL_CLUSTER_STATE": "existing" if p.grows else "new",
        "FASTRAFT_LISTEN_METRICS_URLS": f"http://{listen}:{p.metrics_port}",
    }
    return Plan(p, settings, join=p.grows and not has_data)


def _token(env: Mapping[str, str]) -> str:
    return (env.get("FASTRAFT_INITIAL_CLUSTER_TOKEN") or "fastraft-cluster").strip()


def join_as_learner(pl: Plan, env: Mapping[str, str], timeout: float = 60.0) -> None:
    """Have the running cluster add this pod as a learner (once: skipped if it is listed).

    Retries while the cluster has no leader (a set scaling up while another member restarts)
    for at most ``timeout`` seconds. Raises ConfigError saying why it could not."""
    from fastraft.client.api import Client

    p = pl.pod
    url = p.peer_url(p.ordinal)
    token = _token(env)
    endpoints = p.others_below()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for _attempt in range(10_000):  # bounded in count and (below) in time
        if time.monotonic() >= deadline:
            break
        try:
            with Client(endpoints, timeout=min(5.0, max(0.5, deadline - time.monotonic()))) as c:
                if any(url in m.peer_urls for m in c.member_list()):
                    log.info("%s: already a member (added before a restart)", p.name)
                    return
                res = c.member_add(p.name, [url], learner=True)
            if res.cluster_token and res.cluster_token != token:
                raise ConfigError(f"the cluster's token is {res.cluster_token!r} but "
                                  f"FASTRAFT_INITIAL_CLUSTER_TOKEN is {token!r}")
            log.info("%s: added as learner %x", p.name, res.member.id if res.member else 0)
            return
        except BadRequestError as e:
            raise ConfigError(f"{p.name}: member add refused: {e}") from None
        except FastraftError as e:  # no leader, unreachable, timed out: the cluster may recover
            last = e
            time.sleep(0.5)
    raise ConfigError(f"{p.name}: could not be added as a learner through "
                      f"{','.join(endpoints)} within {timeout:g}s ({last})")


class Promoter(threading.Thread):
    """Promotes this learner once the leader accepts (it refuses until the learner caught up).

    Asks the member itself first: nothing to do for a voter (a founder, or already promoted)."""

    def __init__(self, pl: Plan, env: Mapping[str, str], interval: float = 1.0,
                 timeout: float = 3600.0) -> None:
        super().__init__(name=f"promote-{pl.pod.name}", daemon=True)
        p = pl.pod
        self.me = member_id(p.name, (p.peer_url(p.ordinal),), _token(env))
        self.endpoints = [f"{p.host(p.ordinal)}:{p.client_port}", *p.others_below()]
        self.interval = interval
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.promoted = threading.Event()

    def run(self) -> None:
        from fastraft.client.api import Client

        deadline = time.monotonic() + self.timeout
        with Client(self.endpoints, timeout=5.0) as c:
            while not self.stop_event.wait(self.interval) and time.monotonic() < deadline:
                try:
                    me = [m for m in c.member_list() if m.id == self.me]
                    if me and not me[0].is_learner:
                        self.promoted.set()
                        return
                    if me:
                        c.member_promote(self.me)
                        log.info("member %x promoted to voter", self.me)
                        self.promoted.set()
                        return
                except FastraftError as e:  # not in sync yet, or no leader: ask again
                    log.debug("promote %x: %s", self.me, e)
        if not self.promoted.is_set() and not self.stop_event.is_set():
            log.warning("member %x still a learner after %gs: promote it with "
                        "`fastractl member promote %x`", self.me, self.timeout, self.me)


def shrink(env: Mapping[str, str], to: int, timeout: float = 30.0) -> list[str]:
    """Remove the members of ordinal ``to`` and above (highest first); return their names.

    Run before scaling the StatefulSet down to ``to`` pods. Founding members are not removed
    (scaling below the initial size is a quorum loss the set recovers from, not a shrink)."""
    from fastraft.client.api import Client

    p = pod_set(env)
    if to < p.initial_size:
        raise ConfigError(f"--to {to} is below the initial cluster size {p.initial_size}: "
                          f"founding members are not removed")
    removed: list[str] = []
    endpoints = [f"{p.host(i)}:{p.client_port}" for i in range(to)]
    with Client(endpoints, timeout=timeout) as c:
        mine = {m.name: m for m in c.member_list()}
        doomed = sorted((n for n in mine if (o := _ordinal(n, p.set_name)) is not None
                         and o >= to), key=lambda n: -(_ordinal(n, p.set_name) or 0))
        for name in doomed:
            c.member_remove(mine[name].id)
            log.info("removed member %x (%s)", mine[name].id, name)
            removed.append(name)
    return removed


def _ordinal(name: str, set_name: str) -> int | None:
    m = _POD_NAME.match(name)
    return int(m.group("ordinal")) if m and m.group("set") == set_name else None


def data_dir_has_member(path: str) -> bool:
    """Whether ``path`` holds a member's data already (raises DataDirError for a foreign dir)."""
    from fastraft.storage.logstore import Storage

    return Storage.read_identity(path) is not None


def data_dir(env: Mapping[str, str]) -> str:
    return env.get("FASTRAFT_DATA_DIR") or DEFAULT_DATA_DIR


def probe(env: Mapping[str, str], path: str, timeout: float = 3.0) -> tuple[bool, str]:
    """GET ``path`` on this member's metrics port (a container HEALTHCHECK): (ok, first line).

    Needs no pod name (``docker run`` without ``--hostname`` has none): the port from
    FASTRAFT_METRICS_PORT, the address from FASTRAFT_HOSTS when it maps this pod, else loopback."""
    import urllib.error
    import urllib.request

    port = _int(env, "FASTRAFT_METRICS_PORT", 2381, 1, 65535)
    pod = (env.get("FASTRAFT_POD_NAME") or env.get("HOSTNAME") or "").strip()
    host = _hosts(env.get("FASTRAFT_HOSTS", "")).get(pod, "127.0.0.1")
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own member
            body = r.read(4096).decode("utf-8", "replace")
            return r.status == 200, f"{url}: {r.status} {body.strip()[:200]}"
    except urllib.error.HTTPError as e:
        return False, f"{url}: {e.code} {e.read(4096).decode('utf-8', 'replace').strip()[:200]}"
    except OSError as e:
        return False, f"{url}: {e}"
