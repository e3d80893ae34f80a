"""`fastraft`: run a member (serve), a local cluster (cluster), or the guided demo (demo)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import click

from fastraft.config import FLAGS, FlagError, ServerConfig, build_config, env_name
from fastraft.errors import ConfigError, DataDirError, SnapshotFileError

__all__ = ["main"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


def _die(msg: str, status: int = 2) -> None:
    click.echo(f"fastraft: error: {msg}", err=True)
    sys.exit(status)


class _OneLineErrors(click.Command):
    """Usage errors as ONE line `fastraft: error: ...` and exit status 2 (as flag errors)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _die(e.format_message().replace("\n", " "))
            raise  # unreachable: _die exits


class _Group(click.Group):
    # Commands whose module is imported only when the command is looked up: `serve` must not
    # load the load generator (and its histogram library) just to start a member.
    _lazy = {"bench": ("fastraft.tools.loadgen", "bench_command"),
             "pacelc": ("fastraft.tools.pacelc.cli", "pacelc_command")}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _die(e.format_message().replace("\n", " "))
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._lazy:
            return super().get_command(ctx, cmd_name)
        module, attr = self._lazy[cmd_name]
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            _die(f"`fastraft {cmd_name}` needs {e.name}: pip install 'fastraft[tools]'")
        cmd: click.Command = getattr(mod, attr)
        return cmd


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastraft", message="fastraft %(version)s")
def main() -> None:
    """fastraft: a Raft-replicated key-value store (etcd's model, in Python + Cython).

    \b
    fastraft serve --name n1 ...      run one member (see `fastraft serve --help`)
    fastraft cluster --size 3         run a local 3-member cluster on 127.0.0.1
    fastraft demo                     a narrated walkthrough: writes, leader failure, quorum loss
    fastraft snapshot restore FILE    a new member's data dir from `fastractl snapshot save`
    fastraft pacelc --out DIR         the PACELC lab: each read level's latency, availability
                                      and staleness under delay and partitions, beside etcd
    Talk to a cluster with `fastractl`.
    """


# --------------------------------------------------------------------------------- logging


class _LineFormatter(logging.Formatter):
    """`2026-11-25 10:00:00.123 I | n1 | raft: <message>` (etcd's capnslog shape + member)."""

    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{int(record.msecs):03d}"
        pkg = record.name.removeprefix("fastraft.") if record.name != "fastraft" else "fastraft"
        line = (f"{stamp} {record.levelname[:1]} | {self.member} | {pkg}: "
                f"{record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(member: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(member))
    root = logging.getLogger("fastraft")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False


# ----------------------------------------------------------------------------------- serve


def _serve_options(f: Any) -> Any:
    for flag, (default, help_) in reversed(list(FLAGS.items())):
        shown = f" [default: {default}]" if default else ""
        f = click.option(f"--{flag}", flag.replace("-", "_"), default=None, metavar="VALUE",
                         help=f"{help_}{shown}  (env {env_name(flag)})")(f)
    f = click.option("--config-file", "config_file", default=None, metavar="PATH",
                     help="TOML file with the same keys as the flags, e.g. data-dir = \"x\" "
                          "(env FASTRAFT_CONFIG_FILE); flags and env override it")(f)
    return f


@main.command("serve", cls=_OneLineErrors)
@_serve_options
@click.version_option(package_name="fastraft", message="fastraft version: %(version)s")
def serve(config_file: str | None, **values: str | None) -> None:
    """Run one member until SIGTERM/SIGINT (graceful: hands over leadership first).

    \b
    Example, a 3-member cluster on one machine (run each line in its own shell):
      fastraft serve --name n1 --listen-client-urls http://127.0.0.1:2379 \\
        --listen-peer-urls http://127.0.0.1:2380 \\
        --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2390,n3=http://127.0.0.1:2400
      (n2: ports 2389/2390, n3: 2399/2400, same --initial-cluster)

    With --listen-metrics-urls http://127.0.0.1:2381 the member serves, on that port of its
    own: /health (leader + linearizable read, as etcd's), /readyz (caught up with the leader,
    not a learner), /livez and /metrics (Prometheus, etcd's metric names), e.g.

    \b
      curl -s http://127.0.0.1:2381/metrics | grep etcd_server_has_leader

    Every flag can also be set with FASTRAFT_<FLAG> (e.g. FASTRAFT_DATA_DIR).
    A bad value prints one line `fastraft: error: --flag: ...` and exits with status 2;
    a data dir that belongs to something else is refused (exit 1).
    """
    flags = {k.replace("_", "-"): v for k, v in values.items()}
    flags["config-file"] = config_file
    try:
        cfg = build_config(flags)
    except FlagError as e:
        _die(e.message)
    sys.exit(run_member(cfg))


def run_member(cfg: ServerConfig) -> int:
    """Run a member with uvloop until it stops; return the process exit status."""
    import uvloop

    try:
        from fastraft.server.node import Node
    except ModuleNotFoundError as e:
        if e.name != "fastraft._core":
            raise
        # A client-only install (FASTRAFT_CLIENT_ONLY=1): the member's native core is absent.
        _die("this install has no compiled core (fastraft._core), so it cannot run a member: "
             "reinstall without FASTRAFT_CLIENT_ONLY (needs Cython and a C compiler)", 1)

    setup_logging(cfg.name, cfg.log_level)

    async def amain() -> int:
        node = Node(cfg)
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []  # held so the stop task is not garbage-collected

        def on_signal() -> None:
            stop_requested.set()
            if node.server is not None and not tasks:
                tasks.append(loop.create_task(node.stop()))

        # Installed before start(): a SIGTERM while starting then stops cleanly afterwards
        # instead of killing the process halfway through opening storage.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await node.start()
        except (DataDirError, ConfigError) as e:
            click.echo(f"fastraft: error: {e.message}", err=True)
            return 1
        except OSError as e:
            click.echo(f"fastraft: error: cannot start: {e.strerror or e}"
                       f"{f' ({e.filename})' if e.filename else ''}", err=True)
            return 1
        if stop_requested.is_set():
            on_signal()
        await node.stopped.wait()
        logging.getLogger("fastraft.node").info("%s stopped", cfg.name)
        return node.exit_code

    uvloop.install()
    return asyncio.run(amain())


# --------------------------------------------------------------------------------- cluster

_COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "red", "white", "bright_cyan",
            "bright_magenta"]


class _Tailer(threading.Thread):
    """Prints new lines of the members' log files with a coloured `nX | ` prefix."""

    def __init__(self, members: list[Any]) -> None:
        super().__init__(daemon=True)
        self.members = members
        self.offsets = {m.name: 0 for m in members}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll()
            self.stop_event.wait(0.1)
        self.poll()

    def poll(self) -> None:
        for i, m in enumerate(self.members):
            try:
                with open(m.log_path, "rb") as f:
                    f.seek(self.offsets[m.name])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            self.offsets[m.name] += end
            prefix = click.style(f"{m.name:>3} | ", fg=_COLOURS[i % len(_COLOURS)])
            own = f" | {m.name} | "  # the member's own name field: the coloured prefix says it
            for line in chunk[:end].decode("utf-8", "replace").splitlines():
                click.echo(prefix + line.replace(own, " | ", 1))


@main.command("cluster", cls=_OneLineErrors)
@click.option("--size", default=3, show_default=True, type=click.IntRange(1, 9),
              help="number of members")
@click.option("--data-dir", default=None, metavar="DIR",
              help="where members keep data (default: a temporary folder, removed at exit)")
@click.option("--base-port", default=2379, show_default=True, type=click.IntRange(1, 65000),
              help="member i serves clients on BASE+10*(i-1), peers on that +1 and (with "
                   "--metrics) /health, /readyz, /livez and /metrics on that +2")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="give every member an HTTP port for probes and Prometheus metrics")
def cluster(size: int, data_dir: str | None, base_port: int, metrics: bool) -> None:
    """Run a local cluster n1..nN on 127.0.0.1, with every member's log prefixed.

    \b
    Example:
      fastraft cluster --size 3
      fastractl --endpoints=127.0.0.1:2379,127.0.0.1:2389,127.0.0.1:2399 endpoint status -w table
      curl -s http://127.0.0.1:2381/metrics | grep etcd_server_has_leader
    Stop it with Ctrl-C: every member gets SIGTERM and shuts down cleanly.
    """
    from fastraft.tools.localcluster import LocalCluster

    tmp = None
    if data_dir is None:
        tmp = data_dir = tempfile.mkdtemp(prefix="fastraft-cluster-")
    lc = LocalCluster(size, data_dir, base_port=base_port, token="fastraft-cluster",
                      heartbeat_ms=100, election_ms=1000, metrics=metrics)
    for m in lc.members:
        http = f"  metrics {m.metrics_url}" if m.metrics_url else ""
        click.echo(f"{m.name}: clients http://{m.endpoint}  peers {m.peer_url}{http}  "
                   f"data {m.data_dir}")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tail = _Tailer(lc.members)
    tail.start()
    lc.start()
    click.echo(f"\ntry:  fastractl --endpoints={lc.endpoints} endpoint status -w table\n")
    status = 0
    try:
        while not stop.is_set():
            dead = [m for m in lc.members if not m.alive]
            if dead and not stop.is_set():
                for m in dead:
                    click.echo(f"{m.name} exited with status {m.proc.returncode if m.proc else '?'}",
                               err=True)
                status = 1
                break
            stop.wait(0.2)
    finally:
        click.echo("stopping members ...")
        lc.close()
        tail.stop_event.set()
        tail.join(timeout=2)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(status)


# ------------------------------------------------------------------------------- snapshot


@main.group("snapshot", cls=_Group)
def snapshot() -> None:
    """Restore a backup taken with `fastractl snapshot save` into a new member's data dir.

    \b
      fastraft snapshot restore backup.db --name n1 \\
        --initial-cluster n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2390 \\
        --initial-advertise-peer-urls http://127.0.0.1:2380 --data-dir n1.fastraft
    """


@snapshot.command("restore", cls=_OneLineErrors)
@click.argument("path", metavar="FILE")
@click.option("--name", default="default", show_default=True,
              help="this member's name (one of --initial-cluster)")
@click.option("--initial-cluster", default=None,
              help="name=url,... of every member of the NEW cluster (default: this member alone)")
@click.option("--initial-advertise-peer-urls", default=None,
              help="this member's peer URL(s), as in --initial-cluster")
@click.option("--initial-cluster-token", default=None,
              help="the new cluster's token (default: fastraft-cluster); gives it new ids")
@click.option("--data-dir", default=None, help="the data dir to create (default: <name>.fastraft)")
def snapshot_restore(path: str, name: str, initial_cluster: str | None,
                     initial_advertise_peer_urls: str | None, initial_cluster_token: str | None,
                     data_dir: str | None) -> None:
    """Build a NEW member's data dir holding the keys (and revision) of FILE.

    The file's checksum is verified first; an existing data dir is never overwritten. Run it
    once per member of the new cluster, with the same --initial-cluster and token, then start
    each member with `fastraft serve` and the same flags.
    """
    from fastraft.server.restore import restore_config, restore_snapshot

    try:
        cfg = restore_config(path, name=name, initial_cluster=initial_cluster,
                             initial_advertise_peer_urls=initial_advertise_peer_urls,
                             data_dir=data_dir, initial_cluster_token=initial_cluster_token)
    except FlagError as e:
        _die(e.message)
        return
    try:
        res = restore_snapshot(path, cfg)
    except (ConfigError, DataDirError, SnapshotFileError) as e:
        _die(e.message, 1)
        return
    except OSError as e:
        _die(f"cannot restore into {cfg.data_dir!r}: {e}", 1)
        return
    h = res.info.header
    click.echo(f"restored snapshot {path} (revision {h.revision}, {res.info.total_keys} keys) "
               f"into {cfg.data_dir}: member {cfg.name} ({cfg.member_id:x}) of new cluster "
               f"{cfg.cluster_id:x}")


# ----------------------------------------------------------------------------- statefulset


@main.group("statefulset")
def statefulset() -> None:
    """Run a member as a pod of a StatefulSet (the container image's entrypoint).

    \b
    The pod name (HOSTNAME, e.g. fastraft-2), FASTRAFT_INITIAL_CLUSTER_SIZE (3), POD_NAMESPACE
    and the ports give the member's name, URLs and --initial-cluster (deploy/README.md).
      fastraft statefulset run              start this pod's member
      fastraft statefulset flags            print the settings `run` would use
      fastraft statefulset shrink --to 3    remove members of ordinal 3 and above first
      fastraft statefulset probe /readyz    exit 0 when this member's HTTP path answers 200
    """


def _plan() -> tuple[dict[str, str], Any]:
    """(the environment, this pod's Plan), or one error line and exit status 1."""
    from fastraft import statefulset as ss

    env = dict(os.environ)
    try:
        return env, ss.plan(env, ss.data_dir_has_member(ss.data_dir(env)))
    except (ConfigError, DataDirError) as e:
        _die(e.message, 1)
        raise  # unreachable: _die exits


@statefulset.command("flags", cls=_OneLineErrors)
def statefulset_flags() -> None:
    """Print the FASTRAFT_* settings this pod's member would start with."""
    env, pl = _plan()
    for k, v in pl.settings.items():
        click.echo(f"{k}={v}")
    if pl.join:
        click.echo("# joins first: member add --learner, then promoted once in sync")


@statefulset.command("run", cls=_OneLineErrors)
def statefulset_run() -> None:
    """Start this pod's member (joining and promoting it first when it grows the set)."""
    from fastraft import statefulset as ss

    env, pl = _plan()
    merged = pl.environ(env)
    try:
        cfg = build_config({}, env=merged)
    except FlagError as e:
        _die(e.message)
    setup_logging(cfg.name, cfg.log_level)
    if pl.join:
        try:
            ss.join_as_learner(pl, merged)
        except ConfigError as e:
            _die(e.message, 1)
    promoter = ss.Promoter(pl, merged) if pl.pod.grows else None
    if promoter is not None:
        promoter.start()
    try:
        status = run_member(cfg)
    finally:
        if promoter is not None:
            promoter.stop_event.set()
    sys.exit(status)


@statefulset.command("shrink", cls=_OneLineErrors)
@click.option("--to", "to", required=True, type=click.IntRange(1, 99),
              help="the replica count about to be set")
def statefulset_shrink(to: int) -> None:
    """Remove the members of ordinal TO and above, before `kubectl scale --replicas=TO`."""
    from fastraft import statefulset as ss
    from fastraft.errors import FastraftError

    try:
        removed = ss.shrink(dict(os.environ), to)
    except FastraftError as e:
        _die(str(e), 1)
    click.echo(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


@statefulset.command("probe", cls=_OneLineErrors)
@click.argument("path", default="/health")
def statefulset_probe(path: str) -> None:
    """GET PATH on this member's metrics port; exit 0 on 200 (a container HEALTHCHECK)."""
    from fastraft import statefulset as ss

    try:
        ok, line = ss.probe(dict(os.environ), path)
    except ConfigError as e:
        _die(e.message, 1)
    click.echo(line)
    sys.exit(0 if ok else 1)


# ------------------------------------------------------------------------------------ demo


@main.command("demo", cls=_OneLineErrors)
@click.option("--data-dir", default=None, metavar="DIR",
              help="where the 3 members keep data (default: a temporary folder)")
@click.option("--keep", is_flag=True, help="keep the data dir afterwards")
def demo(data_dir: str | None, keep: bool) -> None:
    """A narrated walkthrough on a real 3-member cluster (child processes on 127.0.0.1).

    It writes a key, kills the leader with SIGKILL, shows the election that follows in the new
    leader's own log, removes members until there is no majority (reads then fail fast instead
    of answering stale data), restores a majority and reads the key back. Exit status 0 only if
    every step behaved as expected. Takes about 10-20 seconds.

    \b
    Example:
      fastraft demo --keep --data-dir /tmp/fr-demo
    """
    from fastraft.tools.demo import run_demo

    tmp = None
    if data_dir is None:
        tmp = data_dir = tempfile.mkdtemp(prefix="fastraft-demo-")
    try:
        ok = run_demo(data_dir)
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif keep:
            click.echo(f"data kept in {data_dir}")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":  # pragma: no cover
    main()
