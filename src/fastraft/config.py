"""Server configuration: etcd-style flags, ``FASTRAFT_*`` environment variables, a TOML file.

Precedence, highest first: command-line flag, environment variable (``--data-dir`` ->
``FASTRAFT_DATA_DIR``), config file (``--config-file``, TOML read with :mod:`tomllib`; keys are
the flag names without the dashes, e.g. ``data-dir = "n1.fastraft"``; underscores also accepted),
built-in default. (etcd ignores flags when a config file is given; we merge instead, because a
file shared by all members plus a per-member ``--name`` is the common case.)

Everything is validated here, before the server opens anything, and a problem is reported as a
:class:`ConfigError` naming the flag. ``build_config`` returns a frozen :class:`ServerConfig` that
also carries the derived member and cluster IDs (docs/architecture.md, "Identifiers").
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastraft.errors import ConfigError
from fastraft.net.framing import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES

__all__ = [
    "FLAGS",
    "ServerConfig",
    "FlagError",
    "build_config",
    "member_id",
    "cluster_id",
    "parse_url",
    "env_name",
]

LOG_LEVELS = ("debug", "info", "warn", "error")
CLUSTER_STATES = ("new", "existing")

# name -> (default, help). A default of None means "derived from other flags" (see build_config).
FLAGS: dict[str, tuple[str | None, str]] = {
    "name": ("default", "human-readable name of this member"),
    "data-dir": (None, "path to the data directory (default: <name>.fastraft)"),
    "listen-client-urls": ("http://127.0.0.1:2379", "comma-separated URLs to serve clients on"),
    "advertise-client-urls": (None, "client URLs to advertise to the cluster "
                                    "(default: --listen-client-urls)"),
    "listen-peer-urls": ("http://127.0.0.1:2380", "URL to listen on for peer traffic"),
    "listen-metrics-urls": (None, "comma-separated http URLs to serve /health, /readyz, /livez "
                                  "and /metrics (Prometheus) on (default: off)"),
    "readyz-max-lag": ("10000", "a member more than this many entries behind the leader's "
                                "commit index is not ready (/readyz answers 503)"),
    "initial-advertise-peer-urls": (None, "this member's peer URLs, as listed in "
                                          "--initial-cluster (default: --listen-peer-urls)"),
    "initial-cluster": (None, "initial members, name=peer-url,... "
                              "(default: <name>=<initial-advertise-peer-urls>)"),
    "initial-cluster-state": ("new", "new (bootstrap a cluster) or existing (join one)"),
    "initial-cluster-token": ("fastraft-cluster", "token that makes the cluster and member IDs "
                                                   "unique to this cluster"),
    "heartbeat-interval": ("100", "time of one heartbeat (one Raft tick) in ms"),
    "election-timeout": ("1000", "time in ms without a leader before an election "
                                 "(at least 5x --heartbeat-interval)"),
    "lease-clock-drift": ("100", "lease reads: how much sooner, in ms, a follower's election "
                                 "timer may run out than the leader's clock says over one "
                                 "election timeout (clock-rate difference and scheduling); the "
                                 "lease lasts election-timeout - heartbeat-interval - this"),
    "snapshot-count": ("10000", "applied entries between two snapshots (log compaction)"),
    "max-request-bytes": (str(DEFAULT_MAX_REQUEST_BYTES),
                          "largest client request accepted, in bytes"),
    "max-response-bytes": (str(DEFAULT_MAX_RESPONSE_BYTES),
                           "largest range answer a member builds, in bytes (keys, values and "
                           "their fields); a range past it fails with RESPONSE_TOO_LARGE"),
    "log-level": ("info", "debug, info, warn or error"),
    # Off by default; for the PACELC lab's loopback run (no namespaces: no NFQUEUE delayer).
    "experimental-peer-delay-ms": ("0", "TESTING ONLY: hold every message to the other members "
                                        "this many ms in the transport before sending (a delay "
                                        "stage standing in for a slow network, not a network)"),
}


def env_name(flag: str) -> str:
    """``data-dir`` -> ``FASTRAFT_DATA_DIR``."""
    return "FASTRAFT_" + flag.upper().replace("-", "_")


class FlagError(ConfigError):
    """a flag has a bad value"""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"--{flag}: {message}", flag=flag)
        self.flag = flag


# ------------------------------------------------------------------------------ identifiers


def member_id(name: str, peer_urls: tuple[str, ...] | list[str], token: str) -> int:
    """First 8 bytes (big-endian) of sha256(token/name/sorted peer urls); never 0."""
    raw = f"{token}/{name}/{','.join(sorted(peer_urls))}".encode()
    mid = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")
    return mid or 1  # 0 means "none" everywhere in Raft


def cluster_id(token: str, member_ids: list[int] | tuple[int, ...]) -> int:
    """First 8 bytes of sha256(token/sorted hex member IDs)."""
    ids = ",".join(sorted(format(m, "x") for m in member_ids))
    cid = int.from_bytes(hashlib.sha256(f"{token}/{ids}".encode()).digest()[:8], "big")
    return cid or 1


# ------------------------------------------------------------------------------------ urls


def parse_url(url: str) -> tuple[str, int]:
    """``http://host:port`` or ``host:port`` -> (host, port). Raises ValueError saying why."""
    u = url.strip()
    if not u:
        raise ValueError("empty URL")
    low = u.lower()
    if low.startswith("https://") or low.startswith("unixs://"):
        raise ValueError(f"{u}: TLS not supported yet (use http://)")
    if "://" in u:
        scheme, _, rest = u.partition("://")
        if scheme.lower() != "http":
            raise ValueError(f"{u}: unsupported scheme {scheme!r} (use http://host:port)")
        u = rest
    u = u.rstrip("/")
    if "/" in u:
        raise ValueError(f"{url}: a path is not allowed (use http://host:port)")
    if u.startswith("["):  # [::1]:2379
        host, sep, port_s = u[1:].partition("]:")
        if not sep:
            raise ValueError(f"{url}: expected [ipv6]:port")
    else:
        host, sep, port_s = u.rpartition(":")
        if not sep:
            raise ValueError(f"{url}: missing port (use http://host:port)")
    if not host:
        raise ValueError(f"{url}: missing host")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{url}: port must be a number from 1 to 65535")
    return host, int(port_s)


def _canonical(url: str) -> str:
    host, port = parse_url(url)
    if ":" in host:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def _url_list(flag: str, value: str) -> tuple[str, ...]:
    parts = [p for p in (s.strip() for s in value.split(",")) if p]
    if not parts:
        raise FlagError(flag, "at least one URL is required")
    out: list[str] = []
    for p in parts:
        try:
            c = _canonical(p)
        except ValueError as e:
            raise FlagError(flag, str(e)) from None
        if c not in out:
            out.append(c)
    return tuple(out)


# ---------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ServerConfig:
    """One member's validated configuration (all URLs canonical ``http://host:port``)."""

    name: str
    data_dir: str
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    listen_peer_urls: tuple[str, ...]
    initial_advertise_peer_urls: tuple[str, ...]
    # (name, peer urls) per member, in the order given.
    initial_cluster: tuple[tuple[str, tuple[str, ...]], ...]
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "fastraft-cluster"
    experimental_peer_delay_ms: int = 0  # testing only: the transport's delay stage
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    # Shortens the leader's lease (see server/readlevels.py and the README's read levels).
    lease_clock_drift: int = 100
    snapshot_count: int = 10000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    log_level: str = "info"
    # The HTTP door (server/health.py): off when empty.
    listen_metrics_urls: tuple[str, ...] = ()
    readyz_max_lag: int = 10000
    member_id: int = field(default=0)
    cluster_id: int = field(default=0)

    @property
    def election_tick(self) -> int:
        return self.election_timeout // self.heartbeat_interval

    def initial_members(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        """member id -> (name, peer urls) for every member of --initial-cluster."""
        return {member_id(n, urls, self.initial_cluster_token): (n, urls)
                for n, urls in self.initial_cluster}

    def client_addrs(self) -> list[tuple[str, int]]:
        return [parse_url(u) for u in self.listen_client_urls]

    def peer_addr(self) -> tuple[str, int]:
        return parse_url(self.listen_peer_urls[0])

    def metrics_addrs(self) -> list[tuple[str, int]]:
        return [parse_url(u) for u in self.listen_metrics_urls]


def _int_flag(flag: str, value: str, lo: int, hi: int | None = None) -> int:
    v = value.strip()
    if not (v.isdigit() or (v.startswith("-") and v[1:].isdigit())):
        raise FlagError(flag, f"{value!r} is not an integer")
    n = int(v)
    if n < lo:
        raise FlagError(flag, f"must be at least {lo}, got {n}")
    if hi is not None and n > hi:
        raise FlagError(flag, f"must be at most {hi}, got {n}")
    return n


def _parse_initial_cluster(value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    flag = "initial-cluster"
    members: dict[str, list[str]] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        name = name.strip()
        if not sep or not name or not url.strip():
            raise FlagError(flag, f"{part!r} is not name=url")
        try:
            c = _canonical(url)
        except ValueError as e:
            raise FlagError(flag, str(e)) from None
        urls = members.setdefault(name, [])
        if c not in urls:
            urls.append(c)
    if not members:
        raise FlagError(flag, "no members given")
    seen: dict[str, str] = {}
    for name, urls in members.items():
        for u in urls:
            if u in seen:
                raise FlagError(flag, f"URL {u} is used by both {seen[u]} and {name}")
            seen[u] = name
    return tuple((n, tuple(u)) for n, u in members.items())


def load_config_file(path: str) -> dict[str, str]:
    """Read a TOML config file into {flag name: string value}."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise FlagError("config-file", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise FlagError("config-file", f"{path} is not valid TOML: {e}") from None
    out: dict[str, str] = {}
    for k, v in data.items():
        flag = k.replace("_", "-")
        if flag not in FLAGS:
            raise FlagError("config-file", f"{path}: unknown key {k!r}")
        if isinstance(v, bool) or not isinstance(v, (str, int, list)):
            raise FlagError("config-file", f"{path}: {k} must be a string or a number")
        if isinstance(v, list):
            v = ",".join(str(x) for x in v)
        out[flag] = str(v)
    return out


def build_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
                 config_file: str | None = None) -> ServerConfig:
    """Merge flags (None = not given), ``FASTRAFT_*`` env, the config file and defaults, validate.

    Raises :class:`FlagError` ("--flag: what is wrong") on the first bad value.
    """
    env = os.environ if env is None else env
    for k in flags:
        if k not in FLAGS and k != "config-file":
            raise FlagError(k, "unknown flag")
    if config_file is None:
        config_file = flags.get("config-file") or env.get("FASTRAFT_CONFIG_FILE") or None
    file_vals = load_config_file(config_file) if config_file else {}

    sources: dict[str, str] = {}

    def raw(flag: str) -> str | None:
        v = flags.get(flag)
        if v is not None:
            return str(v)
        v = env.get(env_name(flag))
        if v is not None:
            sources[flag] = env_name(flag)
            return v
        if flag in file_vals:
            sources[flag] = str(config_file)
            return file_vals[flag]
        return FLAGS[flag][0]

    try:
        return _validate(name_raw=raw("name"), raw=raw)
    except FlagError as e:
        where = sources.get(e.flag)
        if where is None:
            raise
        # Say where a bad value came from: a stale environment variable is hard to spot.
        raise FlagError(e.flag, f"{e.message.removeprefix(f'--{e.flag}: ')} (set by {where})"
                        ) from None


def _validate(name_raw: str | None, raw: Any) -> ServerConfig:
    name = (name_raw or "").strip()
    if not name or any(c in name for c in ",=/ \t") or len(name) > 128:
        raise FlagError("name", f"{name!r} is not a valid name (no ',', '=', '/' or spaces)")
    data_dir = raw("data-dir") or f"{name}.fastraft"
    listen_client = _url_list("listen-client-urls", raw("listen-client-urls") or "")
    adv_raw = raw("advertise-client-urls")
    advertise = _url_list("advertise-client-urls", adv_raw) if adv_raw else listen_client
    listen_peer = _url_list("listen-peer-urls", raw("listen-peer-urls") or "")
    if len(listen_peer) != 1:
        raise FlagError("listen-peer-urls", "exactly one peer URL is supported")
    iap_raw = raw("initial-advertise-peer-urls")
    adv_peer = _url_list("initial-advertise-peer-urls", iap_raw) if iap_raw else listen_peer
    lm_raw = raw("listen-metrics-urls")
    listen_metrics = _url_list("listen-metrics-urls", lm_raw) if lm_raw else ()
    for u in listen_metrics:
        if u in listen_client or u in listen_peer:
            raise FlagError("listen-metrics-urls", f"{u} is also a client or peer URL: the "
                            "metrics need a port of their own")
    max_lag = _int_flag("readyz-max-lag", raw("readyz-max-lag") or "", 0)
    ic_raw = raw("initial-cluster")
    if ic_raw:
        initial = _parse_initial_cluster(ic_raw)
    else:
        initial = ((name, adv_peer),)
    mine = dict(initial).get(name)
    if mine is None:
        raise FlagError("initial-cluster", f"this member ({name}) is not listed; "
                        f"add {name}={adv_peer[0]}")
    if set(mine) != set(adv_peer):
        raise FlagError("initial-cluster", f"{name} has {','.join(mine)} but "
                        f"--initial-advertise-peer-urls is {','.join(adv_peer)}")
    state = (raw("initial-cluster-state") or "").strip()
    if state not in CLUSTER_STATES:
        raise FlagError("initial-cluster-state", f"{state!r} is not 'new' or 'existing'")
    token = (raw("initial-cluster-token") or "").strip()
    if not token:
        raise FlagError("initial-cluster-token", "must not be empty")
    hb = _int_flag("heartbeat-interval", raw("heartbeat-interval") or "", 1, 60_000)
    et = _int_flag("election-timeout", raw("election-timeout") or "", 1, 600_000)
    if et < 5 * hb:
        # etcd refuses the same: a timeout near the heartbeat makes elections start spuriously.
        raise FlagError("election-timeout", f"{et} ms must be at least 5x --heartbeat-interval "
                        f"({hb} ms), i.e. >= {5 * hb}")
    drift = _int_flag("lease-clock-drift", raw("lease-clock-drift") or "", 0, 600_000)
    if drift >= et - hb:
        raise FlagError("lease-clock-drift", f"{drift} ms leaves no lease: it must be below "
                        f"--election-timeout - --heartbeat-interval ({et - hb} ms)")
    snap = _int_flag("snapshot-count", raw("snapshot-count") or "", 1)
    mrb = _int_flag("max-request-bytes", raw("max-request-bytes") or "", 1024, 64 * 1024 * 1024)
    # At most what the client reads in one frame (64 MiB, the envelope and header aside).
    mresp = _int_flag("max-response-bytes", raw("max-response-bytes") or "", 1024,
                      DEFAULT_MAX_RESPONSE_BYTES)
    level = (raw("log-level") or "").strip().lower()
    if level not in LOG_LEVELS:
        raise FlagError("log-level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    delay = _int_flag("experimental-peer-delay-ms", raw("experimental-peer-delay-ms") or "", 0,
                      10_000)
    ids = [member_id(n, urls, token) for n, urls in initial]
    if len(set(ids)) != len(ids):
        raise FlagError("initial-cluster", "two members have the same name and URLs")
    return ServerConfig(
        experimental_peer_delay_ms=delay,
        name=name, data_dir=data_dir, listen_client_urls=listen_client,
        advertise_client_urls=advertise, listen_peer_urls=listen_peer,
        initial_advertise_peer_urls=adv_peer, initial_cluster=initial,
        initial_cluster_state=state, initial_cluster_token=token, heartbeat_interval=hb,
        election_timeout=et, lease_clock_drift=drift, snapshot_count=snap, max_request_bytes=mrb,
        max_response_bytes=mresp,
        log_level=level, listen_metrics_urls=listen_metrics, readyz_max_lag=max_lag,
        member_id=member_id(name, adv_peer, token), cluster_id=cluster_id(token, ids))
