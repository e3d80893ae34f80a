"""``fastractl``: the command-line client, shaped like etcdctl.

Output formats (``-w``): ``simple`` (lines, like etcdctl), ``json`` (keys and values base64, as
etcd's JSON does, since they are arbitrary bytes) and ``table``. Errors print one line
``Error: <message>`` on stderr and exit with status 1; bad usage exits with 2.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from fastraft._version import __version__
from fastraft.client import snapfile
from fastraft.client.api import (
    Client,
    Compare,
    Consistency,
    DeleteResult,
    GetResult,
    Header,
    KeyValue,
    Member,
    MemberChange,
    Op,
    PutResult,
    TxnResult,
    Watch,
    WatchEvent,
    parse_endpoint,
)
from fastraft.client.api import _range as _range_bounds
from fastraft.errors import FastraftError, ResponseTooLargeError
from fastraft.tools.tablefmt import render_table

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``1.5s``, ``1m``, ``1h`` to seconds (a unit is required, as etcdctl)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 500ms, 5s, 1m")
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return seconds


def humanize_bytes(n: int) -> str:
    """SI sizes the way etcdctl prints DB SIZE: ``25 kB``, ``1.2 MB``, ``999 B``."""
    if n < 10:
        return f"{n} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    e = min(int(math.floor(math.log(n, 1000))), len(units) - 1)
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.0f} {units[e]}" if val >= 10 else f"{val:.1f} {units[e]}"


@dataclass
class Settings:
    endpoints: list[str]
    timeout: float
    write_out: str
    dial_timeout: float = 2.0

    def client(self) -> Client:
        return Client(self.endpoints, timeout=self.timeout, connect_timeout=self.dial_timeout)


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _handle_errors(f: F) -> F:
    """One line on stderr and exit 1 for every expected failure (not a traceback)."""

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except FastraftError as e:
            _fail(e.message)
        except (ValueError, TypeError, OSError) as e:
            _fail(str(e))

    return cast(F, wrapper)


# ------------------------------------------------------------------------------ output


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _header_json(h: Header) -> dict[str, Any]:
    out: dict[str, Any] = {"cluster_id": h.cluster_id, "member_id": h.member_id,
                           "revision": h.revision, "raft_term": h.raft_term}
    if h.contact_age is not None:
        out["contact_age_ms"] = round(h.contact_age * 1000.0, 1)
    return out


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    d: dict[str, Any] = {"key": _b64(kv.key), "create_revision": kv.create_revision,
                         "mod_revision": kv.mod_revision, "version": kv.version}
    if kv.value:
        d["value"] = _b64(kv.value)
    if kv.lease:
        d["lease"] = kv.lease
    return d


def _result_json(r: Any) -> dict[str, Any]:
    if isinstance(r, GetResult):
        return {"header": _header_json(r.header), "kvs": [_kv_json(k) for k in r.kvs],
                "count": r.count, "more": r.more}
    if isinstance(r, PutResult):
        d = {"header": _header_json(r.header)}
        if r.prev_kv is not None:
            d["prev_kv"] = _kv_json(r.prev_kv)
        return d
    if isinstance(r, DeleteResult):
        return {"header": _header_json(r.header), "deleted": r.deleted,
                "prev_kvs": [_kv_json(k) for k in r.prev_kvs]}
    if isinstance(r, TxnResult):
        return {"header": _header_json(r.header), "succeeded": r.succeeded,
                "responses": [_result_json(x) for x in r.responses]}
    raise TypeError(type(r).__name__)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=False))


def _echo_bytes(b: bytes) -> None:
    click.echo(b)  # raw bytes: keys and values are not necessarily UTF-8


def _table(columns: list[str], rows: list[list[str]]) -> None:
    click.echo(render_table(columns, rows), nl=False)


def _print_kvs(kvs: list[KeyValue], value_only: bool = False, keys_only: bool = False) -> None:
    # One write for the lot: a line per echo took most of the time of a million-key get.
    lines: list[bytes] = []
    for kv in kvs:
        if not value_only:
            lines.append(kv.key)
        if not keys_only:
            lines.append(kv.value)
    if lines:
        click.echo(b"\n".join(lines))  # raw bytes: keys and values are not necessarily UTF-8


def _print_simple(r: Any, s: Settings) -> None:
    if isinstance(r, PutResult):
        click.echo("OK")
        if r.prev_kv is not None:
            _print_kvs([r.prev_kv])
    elif isinstance(r, GetResult):
        _print_kvs(r.kvs)
    elif isinstance(r, DeleteResult):
        click.echo(str(r.deleted))
        _print_kvs(r.prev_kvs)


# ------------------------------------------------------------------------------ commands


# ------------------------------------------------------------------------ global options
#
# etcdctl's global flags are "persistent": accepted before or after the command, at any depth
# (`etcdctl endpoint status --write-out=table`). click only knows options of the command they
# are given to, so every command and group here also carries the global options; each level
# keeps what was typed on the command line, and the command that runs resolves them root to
# leaf: the last one typed wins, else the environment, else the default.

_OUTPUTS = ["simple", "json", "table"]
_GLOBAL_NAMES = ("endpoints", "command_timeout", "dial_timeout", "write_out")


def _global_options(root: bool) -> list[click.Option]:
    """Fresh option objects (one set per command); only the root's have defaults and env."""
    def env(name: str) -> list[str] | None:
        return [f"FASTRAFT_{name}", f"ETCDCTL_{name}"] if root else None

    return [
        click.Option(["--endpoints"], envvar=env("ENDPOINTS"),
                     default="127.0.0.1:2379" if root else None, show_default=root,
                     help="Comma-separated host:port list (env FASTRAFT_ENDPOINTS, else "
                          "ETCDCTL_ENDPOINTS)."),
        click.Option(["--command-timeout"], envvar=env("COMMAND_TIMEOUT"),
                     default="5s" if root else None, show_default=root,
                     help="Time limit of each command, retries included (500ms, 5s, 1m)."),
        click.Option(["--dial-timeout"], envvar=env("DIAL_TIMEOUT"),
                     default="2s" if root else None, show_default=root,
                     help="Time limit of connecting to one endpoint; one that does not answer "
                          "sooner is left for the others."),
        click.Option(["--write-out", "-w"], envvar=env("WRITE_OUT"),
                     type=click.Choice(_OUTPUTS), default="simple" if root else None,
                     show_default=root, help="Output format."),
    ]


def _take_globals(ctx: click.Context, root: bool) -> None:
    """Move the global options out of ctx.params (callbacks do not take them) and remember
    the ones this level decides: all of them at the root, those typed here below it."""
    given: dict[str, Any] = {}
    for name in _GLOBAL_NAMES:
        value = ctx.params.pop(name, None)
        if root or ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            given[name] = value
    ctx.meta.setdefault("fastractl.globals", []).append(given)


def _settings(ctx: click.Context) -> Settings:
    values: dict[str, Any] = {}
    for given in ctx.meta.get("fastractl.globals", []):  # root first, the command last
        values.update(given)
    try:
        timeout = parse_duration(values["command_timeout"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--command-timeout") from None
    try:
        dial = parse_duration(values["dial_timeout"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--dial-timeout") from None
    eps = [e.strip() for e in values["endpoints"].split(",") if e.strip()]
    try:
        for ep in eps:
            parse_endpoint(ep)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--endpoints") from None
    if not eps:
        raise click.BadParameter("no endpoints given", param_hint="--endpoints")
    return Settings(eps, timeout, values["write_out"], dial)


class _Level:
    """What every command and group below the root shares: the global options."""

    params: list[click.Parameter]

    if TYPE_CHECKING:  # provided by the click.Command this is mixed into
        def get_params(self, ctx: click.Context) -> list[click.Parameter]: ...

    def _add_globals(self) -> None:
        self.params.extend(_global_options(root=False))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own = [p.get_help_record(ctx) for p in self.get_params(ctx)
               if p.name not in _GLOBAL_NAMES]
        rows = [r for r in own if r is not None]
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)
        glob = [p.get_help_record(ctx) for p in _global_options(root=True)]
        with formatter.section("Global Options (before or after the command)"):
            formatter.write_dl([r for r in glob if r is not None])
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)


class _Command(_Level, click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_globals()

    def invoke(self, ctx: click.Context) -> Any:
        _take_globals(ctx, root=False)
        ctx.obj = _settings(ctx)
        return super().invoke(ctx)


class _Group(_Level, click.Group):
    command_class = _Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_globals()

    def invoke(self, ctx: click.Context) -> Any:
        _take_globals(ctx, root=False)
        return super().invoke(ctx)


_Group.group_class = _Group


class _Root(click.Group):
    command_class = _Command
    group_class = _Group

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options(root=True))

    def invoke(self, ctx: click.Context) -> Any:
        _take_globals(ctx, root=True)
        return super().invoke(ctx)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message="fastractl version: %(version)s")
def cli() -> None:
    """fastractl: talk to a fastraft cluster (etcdctl-style).

    Global options (--endpoints, --write-out/-w, --command-timeout, --dial-timeout) may come
    before or after the command, as etcdctl's do.

    \b
    Examples:
      fastractl --endpoints=127.0.0.1:2379,127.0.0.1:22379 put greeting hello
      fastractl endpoint status --write-out=table
    """


@cli.command()
def version() -> None:
    """Print fastractl's version (`fastractl endpoint status` shows each member's)."""
    click.echo(f"fastractl version: {__version__}")


@cli.command()
@click.argument("key")
@click.argument("value")
@click.option("--prev-kv", is_flag=True, help="Also print the previous key-value pair.")
@click.pass_obj
@_handle_errors
def put(s: Settings, key: str, value: str, prev_kv: bool) -> None:
    """Put KEY = VALUE into the store; prints OK.

    \b
    Example:
      fastractl put foo bar
    """
    with s.client() as c:
        r = c.put(key, value, prev_kv=prev_kv)
    if s.write_out == "json":
        _echo_json(_result_json(r))
    else:
        _print_simple(r, s)


@cli.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Get every key starting with KEY.")
@click.option("--consistency", type=click.Choice(["l", "s", "lease", "bounded"]), default="l",
              show_default=True,
              help="l = linearizable (ReadIndex via the leader); lease = the leader's lease, no "
                   "round trip; s = serializable (local, may be stale); bounded = local if "
                   "fresh within --max-staleness, else refused.")
@click.option("--max-staleness", default=None, metavar="DURATION",
              help="With --consistency bounded: how stale the answer may be (500ms, 2s).")
@click.option("--rev", type=click.IntRange(min=0), default=0, help="Read at this revision.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most N results.")
@click.option("--print-value-only", is_flag=True, help="Print only values.")
@click.option("--keys-only", is_flag=True, help="Print only keys.")
@click.option("--count-only", is_flag=True, help="Print only the number of keys.")
@click.pass_obj
@_handle_errors
def get(s: Settings, key: str, range_end: str | None, prefix: bool, consistency: str,
        max_staleness: str | None, rev: int, limit: int, print_value_only: bool, keys_only: bool,
        count_only: bool) -> None:
    """Get KEY, or the keys in [KEY, RANGE_END); prints key then value lines.

    \b
    Examples:
      fastractl get foo
      fastractl get app/ --prefix --keys-only
      fastractl get foo --consistency bounded --max-staleness 500ms
    """
    bound = None
    if max_staleness is not None:
        if consistency != "bounded":
            raise click.UsageError("--max-staleness goes with --consistency bounded")
        try:
            bound = parse_duration(max_staleness)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--max-staleness") from None
        if bound <= 0:
            raise click.BadParameter("must be more than 0", param_hint="--max-staleness")
    elif consistency == "bounded":
        raise click.UsageError("--consistency bounded needs --max-staleness (e.g. 500ms)")
    with s.client() as c:
        try:
            r = c.get(key, range_end, prefix=prefix, limit=limit, revision=rev,
                      keys_only=keys_only, count_only=count_only,
                      consistency=cast(Consistency, consistency), max_staleness=bound)
        except ResponseTooLargeError:
            # Too big for one answer: key and value lines can come page by page (JSON and
            # tables are one document, --limit and --count-only one answer: those fail).
            if limit or count_only or s.write_out not in ("simple", ""):
                raise
            _print_pages(c, key, range_end, prefix, rev, keys_only, print_value_only,
                         cast(Consistency, consistency), bound)
            return
    if s.write_out == "json":
        _echo_json(_result_json(r))
    elif s.write_out == "table":
        _table(["KEY", "VALUE"], [[kv.key.decode(errors="backslashreplace"),
                                   kv.value.decode(errors="backslashreplace")] for kv in r.kvs])
    elif count_only:
        click.echo(str(r.count))
    else:
        _print_kvs(r.kvs, value_only=print_value_only, keys_only=keys_only)


_PAGE_KEYS = 10_000


def _print_pages(c: Client, key: str, range_end: str | None, prefix: bool, rev: int,
                 keys_only: bool, value_only: bool, consistency: Consistency,
                 bound: float | None) -> None:
    """Print a range too big for one answer in pages of at most _PAGE_KEYS keys, all read at
    the revision of the first page (halved while a page is still too big)."""
    start, end = _range_bounds(key, range_end, prefix)
    page = _PAGE_KEYS
    for _ in range(1 << 40):  # ends when a page says there is no more, or an error
        try:
            r = c.get(start, end, limit=page, revision=rev, keys_only=keys_only,
                      consistency=consistency, max_staleness=bound, exact_count=False)
        except ResponseTooLargeError:
            if page == 1:
                raise
            page //= 2
            continue
        _print_kvs(r.kvs, value_only=value_only, keys_only=keys_only)
        if not r.more or not r.kvs:
            return
        rev = r.header.revision  # every page at the first one's revision
        start = r.kvs[-1].key + b"\0"


@cli.command(name="del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@click.option("--prev-kv", is_flag=True, help="Also print the deleted key-value pairs.")
@click.pass_obj
@_handle_errors
def delete(s: Settings, key: str, range_end: str | None, prefix: bool, prev_kv: bool) -> None:
    """Delete KEY, or the keys in [KEY, RANGE_END); prints how many were deleted.

    \b
    Example:
      fastractl del app/ --prefix
    """
    with s.client() as c:
        r = c.delete(key, range_end, prefix=prefix, prev_kv=prev_kv)
    if s.write_out == "json":
        _echo_json(_result_json(r))
    else:
        _print_simple(r, s)


@cli.command()
@click.argument("revision", type=click.IntRange(min=1))
@click.pass_obj
@_handle_errors
def compaction(s: Settings, revision: int) -> None:
    """Discard the key history before REVISION.

    \b
    Example:
      fastractl compaction 1234
    """
    with s.client() as c:
        h = c.compact(revision)
    if s.write_out == "json":
        _echo_json({"header": _header_json(h)})
    else:
        click.echo(f"compacted revision {revision}")


# ------------------------------------------------------------------------------- txn

_CMP = re.compile(r'^\s*(value|version|create|mod)\(\s*("(?:[^"\\]|\\.)*"|\S+?)\s*\)\s*'
                  r'(=|!=|>|<)\s*(.+?)\s*$')


def _unquote(tok: str) -> str:
    tok = tok.strip()
    if len(tok) >= 2 and tok[0] == tok[-1] == '"':
        return json.loads(tok)  # handles \" and \n escapes like Go's strconv.Unquote
    return tok


def parse_compare(line: str) -> Compare:
    """``value("k") = "v"``, ``version("k") > "2"``, ``create(...)``, ``mod(...)``."""
    m = _CMP.match(line)
    if not m:
        raise ValueError(f"bad compare {line!r}: expected e.g. value(\"key\") = \"v\"")
    target, result = m.group(1), m.group(3)
    key, operand = _unquote(m.group(2)), _unquote(m.group(4))
    if target == "value":
        return Compare.value(key, result, operand)
    try:
        n = int(operand)
    except ValueError:
        raise ValueError(f"bad compare {line!r}: {target} needs an integer") from None
    return {"version": Compare.version, "create": Compare.create, "mod": Compare.mod}[target](
        key, result, n)


def parse_op(line: str) -> Op:
    """``put KEY VALUE``, ``get KEY [RANGE_END]``, ``del KEY [RANGE_END]`` (shell quoting)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"bad operation {line!r}: {e}") from None
    if not words:
        raise ValueError("empty operation")
    cmd, args = words[0], words[1:]
    prefix = "--prefix" in args
    args = [a for a in args if a != "--prefix"]
    if cmd == "put" and len(args) == 2 and not prefix:
        return Op.put(args[0], args[1])
    if cmd in ("get", "del") and 1 <= len(args) <= 2:
        end = args[1] if len(args) == 2 else None
        if cmd == "get":
            return Op.get(args[0], end, prefix=prefix)
        return Op.delete(args[0], end, prefix=prefix)
    raise ValueError(f"bad operation {line!r}: expected put KEY VALUE, get KEY [END], "
                     f"del KEY [END]")


def parse_txn(text: str) -> tuple[list[Compare], list[Op], list[Op]]:
    """Three blank-line-separated blocks: compares, success ops, failure ops (as etcdctl)."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif len(blocks) < 3:
            blocks.append([])
        else:
            continue
    while len(blocks) < 3:
        blocks.append([])
    return ([parse_compare(ln) for ln in blocks[0]], [parse_op(ln) for ln in blocks[1]],
            [parse_op(ln) for ln in blocks[2]])


@cli.command()
@click.pass_obj
@_handle_errors
def txn(s: Settings) -> None:
    """Run a transaction from stdin: compares, blank line, success ops, blank line, failure ops.

    \b
    Example:
      printf 'value("k") = "v1"\\n\\nput k v2\\n\\nget k\\n' | fastractl txn
    """
    compares, success, failure = parse_txn(sys.stdin.read())
    with s.client() as c:
        r = c.txn(compares, success, failure)
    if s.write_out == "json":
        _echo_json(_result_json(r))
        return
    click.echo("SUCCESS" if r.succeeded else "FAILURE")
    for resp in r.responses:
        click.echo("")
        _print_simple(resp, s)


# ------------------------------------------------------------------------------ watch


def _event_json(ev: WatchEvent) -> dict[str, Any]:
    d: dict[str, Any] = {"type": ev.type, "kv": _kv_json(ev.kv)}
    if ev.prev_kv is not None:
        d["prev_kv"] = _kv_json(ev.prev_kv)
    return d


def _print_event(ev: WatchEvent, s: Settings) -> None:
    if s.write_out == "json":
        _echo_json(_event_json(ev))
        return
    click.echo(ev.type)
    if ev.prev_kv is not None:
        _print_kvs([ev.prev_kv])
    if ev.type == "DELETE":
        _echo_bytes(ev.kv.key)
    else:
        _print_kvs([ev.kv])


@cli.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY.")
@click.option("--rev", type=click.IntRange(min=0), default=0,
              help="Start at this revision (replays history first); 0 = from now on.")
@click.option("--prev-kv", is_flag=True, help="Also print each key's previous value.")
@click.option("--max-events", type=click.IntRange(min=1), default=None,
              help="Exit (status 0) after N events.")
@click.option("--timeout", "duration", default=None,
              help="Exit (status 0) after this long (500ms, 5s, 1m).")
@click.pass_obj
@_handle_errors
def watch(s: Settings, key: str, range_end: str | None, prefix: bool, rev: int, prev_kv: bool,
          max_events: int | None, duration: str | None) -> None:
    """Print changes of KEY (or [KEY, RANGE_END), or a prefix) until Ctrl-C.

    Each event prints its type (PUT or DELETE), then the key, then (for PUT) the value; with
    --prev-kv the previous key and value come before them. If the member goes away the command
    fails and says from which revision to watch again (--rev) to continue without gaps.

    \b
    Examples:
      fastractl watch foo
      fastractl watch app/ --prefix --rev 1 --max-events 10
    """
    try:
        limit = parse_duration(duration) if duration is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--timeout") from None
    deadline = None if limit is None else time.monotonic() + limit
    seen = 0
    w: Watch | None = None
    try:
        with s.client() as c:
            w = c.watch(key, range_end, prefix=prefix, start_revision=rev, prev_kv=prev_kv)
            while max_events is None or seen < max_events:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                ev = w.get(wait)
                if ev is None:
                    if deadline is None:
                        break  # cancelled
                    continue
                _print_event(ev, s)
                sys.stdout.flush()  # a pipe reader sees each event as it comes
                seen += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching: exit 0, no traceback
    finally:
        if w is not None:
            w.cancel()


# ------------------------------------------------------------------------------ member


@cli.group()
def member() -> None:
    """Cluster membership commands.

    \b
    Example:
      fastractl member list -w table
    """


@member.command(name="list")
@click.pass_obj
@_handle_errors
def member_list(s: Settings) -> None:
    """List the cluster's members.

    \b
    Example:
      fastractl member list
    """
    with s.client() as c:
        members = c.member_list()
    rows = [[format(m.id, "x"), "started", m.name, ",".join(m.peer_urls),
             ",".join(m.client_urls), "true" if m.is_learner else "false"] for m in members]
    if s.write_out == "json":
        _echo_json({"members": [{"id": m.id, "name": m.name, "peer_urls": m.peer_urls,
                                 "client_urls": m.client_urls, "is_learner": m.is_learner}
                                for m in members]})
    elif s.write_out == "table":
        _table(["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], rows)
    else:
        for r in rows:
            click.echo(", ".join(r))


def join_settings(change: MemberChange) -> list[tuple[str, str]]:
    """The settings that start a member just added (etcdctl prints the same as ETCD_*)."""
    new = change.member
    assert new is not None
    cluster = ",".join(f"{m.name}={u}" for m in change.members for u in m.peer_urls if m.name)
    out = [("FASTRAFT_NAME", new.name), ("FASTRAFT_INITIAL_CLUSTER", cluster),
           ("FASTRAFT_INITIAL_ADVERTISE_PEER_URLS", ",".join(new.peer_urls)),
           ("FASTRAFT_INITIAL_CLUSTER_STATE", "existing")]
    if change.cluster_token:
        out.append(("FASTRAFT_INITIAL_CLUSTER_TOKEN", change.cluster_token))
    return out


def _member_change_json(c: MemberChange) -> dict[str, Any]:
    def one(m: Member) -> dict[str, Any]:
        return {"id": m.id, "name": m.name, "peer_urls": m.peer_urls,
                "client_urls": m.client_urls, "is_learner": m.is_learner}

    out: dict[str, Any] = {"header": _header_json(c.header),
                           "members": [one(m) for m in c.members]}
    if c.member is not None:
        out["member"] = one(c.member)
    return out


def parse_member_id(text: str) -> int:
    """A member id as `member list` prints it (hex)."""
    try:
        mid = int(text.strip().removeprefix("0x"), 16)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a hexadecimal member id") from None
    if not 0 < mid < 1 << 64:
        raise click.BadParameter(f"{text!r} is not a 64-bit member id")
    return mid


@member.command(name="add")
@click.argument("name")
@click.option("--peer-urls", required=True,
              help="Comma-separated peer URLs of the new member.")
@click.option("--learner", is_flag=True, help="Add it as a learner (promote it later).")
@click.pass_obj
@_handle_errors
def member_add(s: Settings, name: str, peer_urls: str, learner: bool) -> None:
    """Add a member; prints the settings to start it with.

    \b
    Example:
      fastractl member add n4 --peer-urls=http://127.0.0.1:2410 --learner
    """
    with s.client() as c:
        res = c.member_add(name, peer_urls, learner=learner)
    if res.member is None:
        _fail("the server did not return the new member")
    if s.write_out == "json":
        _echo_json(_member_change_json(res))
        return
    click.echo(f"Member {res.member.id:x} added to cluster {res.header.cluster_id:x}")
    click.echo("")
    for k, v in join_settings(res):
        click.echo(f'{k}="{v}"')


@member.command(name="remove")
@click.argument("member_id", metavar="ID")
@click.pass_obj
@_handle_errors
def member_remove(s: Settings, member_id: str) -> None:
    """Remove a member (ID in hex, as `member list` prints it).

    \b
    Example:
      fastractl member remove 8e9e05c52164694d
    """
    _member_change(s, member_id, Client.member_remove, "removed from")


@member.command(name="promote")
@click.argument("member_id", metavar="ID")
@click.pass_obj
@_handle_errors
def member_promote(s: Settings, member_id: str) -> None:
    """Promote a learner to a voting member (refused until it is in sync with the leader).

    \b
    Example:
      fastractl member promote 8e9e05c52164694d
    """
    _member_change(s, member_id, Client.member_promote, "promoted in")


def _member_change(s: Settings, member_id: str, call: Callable[[Client, int], Any],
                   done: str) -> None:
    mid = parse_member_id(member_id)
    with s.client() as c:
        res = call(c, mid)
    if s.write_out == "json":
        _echo_json(_member_change_json(res))
    else:
        click.echo(f"Member {mid:x} {done} cluster {res.header.cluster_id:x}")


# ---------------------------------------------------------------------------- snapshot


@cli.group()
def snapshot() -> None:
    """Back up a member's key-value store to a file, and check such a file.

    Restore a file into new data dirs with `fastraft snapshot restore`.

    \b
    Examples:
      fastractl --endpoints=127.0.0.1:2379 snapshot save backup.db
      fastractl snapshot status backup.db -w table
    """


# A progress line on stderr at most this often while a snapshot is fetched.
_PROGRESS_EVERY = 1.0


@snapshot.command(name="save")
@click.argument("path", metavar="FILE")
@click.pass_obj
@_handle_errors
def snapshot_save(s: Settings, path: str) -> None:
    """Save one member's store, at one revision, to FILE (the member of --endpoints, which
    must name exactly one).

    The file is written as FILE.part and renamed to FILE only once it is complete and
    checksummed: if the save fails (the member goes away, the connection is refused) there
    is no FILE. --command-timeout bounds each wait for the member, not the whole transfer;
    progress goes to stderr.

    \b
    Example:
      fastractl --endpoints=127.0.0.1:2379 snapshot save backup.db
    """
    if len(s.endpoints) != 1:
        _fail(f"snapshot must be requested from one member, not {len(s.endpoints)} "
              f"(--endpoints={','.join(s.endpoints)}): give exactly one endpoint")
    ep = s.endpoints[0]
    click.echo(f"fetching snapshot from {ep} into {path}{snapfile.PART_SUFFIX}", err=True)
    last = time.monotonic()

    def progress(chunks: int, nbytes: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_EVERY:
            last = now
            click.echo(f"fetched {humanize_bytes(nbytes)} so far ({chunks} chunks)", err=True)

    with s.client() as c:
        saved = c.snapshot(path, endpoint=ep, progress=progress)
    h = saved.header
    click.echo(f"fetched snapshot: {humanize_bytes(saved.size)} in {saved.took:.2f}s "
               f"(member {h.member_id:x}, revision {h.revision})", err=True)
    click.echo(f"Snapshot saved at {path}")


@snapshot.command(name="status")
@click.argument("path", metavar="FILE")
@click.pass_obj
@_handle_errors
def snapshot_status(s: Settings, path: str) -> None:
    """Check FILE completely (checksums, structure) and show its HASH, REVISION, TOTAL KEYS
    (live keys) and TOTAL SIZE.

    \b
    Example:
      fastractl snapshot status backup.db -w table
    """
    info = snapfile.verify_snapshot(path)
    row = [format(info.hash, "x"), str(info.header.revision), str(info.total_keys),
           humanize_bytes(info.total_size)]
    if s.write_out == "json":
        _echo_json({"hash": info.hash, "revision": info.header.revision,
                    "totalKey": info.total_keys, "totalSize": info.total_size})
    elif s.write_out == "table":
        _table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], [row])
    else:
        click.echo(", ".join(row))


# ------------------------------------------------------------------------- move-leader


@cli.command(name="move-leader")
@click.argument("transferee", metavar="HEX_ID")
@click.pass_obj
@_handle_errors
def move_leader(s: Settings, transferee: str) -> None:
    """Hand leadership to the voting member HEX_ID (as `member list` prints it).

    Sent to the leader (found through --endpoints, as a write is). Refused for an id that is
    not a member, a learner, or when the cluster has no leader.

    \b
    Example:
      fastractl move-leader 8e9e05c52164694d
    """
    target = parse_member_id(transferee)
    with s.client() as c:
        res = c.move_leader(target)
    if s.write_out == "json":
        _echo_json(res)
        return
    click.echo(f"Leadership transferred from {int(res.get('previous', 0)):x} to "
               f"{int(res.get('leader', target)):x}")


# ---------------------------------------------------------------------------- endpoint


@cli.group()
def endpoint() -> None:
    """Per-endpoint commands (each endpoint of --endpoints is asked on its own).

    \b
    Example:
      fastractl --endpoints=127.0.0.1:2379,127.0.0.1:22379 endpoint status -w table
    """


@endpoint.command()
@click.pass_obj
@_handle_errors
def health(s: Settings) -> None:
    """Check that each endpoint is healthy (exit 1 if any is not).

    \b
    Example:
      fastractl endpoint health
    """
    bad = 0
    results = []
    with s.client() as c:
        for ep in s.endpoints:
            t0 = time.perf_counter()
            try:
                h = c.health(ep)
            except FastraftError as e:
                ok, reason = False, e.message
            else:
                ok, reason = bool(h.get("health")), str(h.get("reason") or "")
            took = (time.perf_counter() - t0) * 1000
            results.append({"endpoint": ep, "health": ok, "took": f"{took:.1f}ms",
                            "error": reason if not ok else ""})
            if ok:
                line = f"{ep} is healthy: successfully committed proposal: took = {took:.1f}ms"
            else:
                bad += 1
                line = f"{ep} is unhealthy: failed to commit proposal: {reason or 'unknown'}"
            if s.write_out == "simple":
                click.echo(line, err=not ok)
    if s.write_out == "json":
        _echo_json(results)
    elif s.write_out == "table":
        _table(["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
               [[str(r["endpoint"]), str(r["health"]).lower(), str(r["took"]), str(r["error"])]
                for r in results])
    if bad:
        _fail("unhealthy cluster")


@endpoint.command()
@click.pass_obj
@_handle_errors
def status(s: Settings) -> None:
    """Show each endpoint's status: ID, version, DB size, leader, Raft term and indexes.

    \b
    Example:
      fastractl endpoint status -w table
    """
    rows: list[list[str]] = []
    docs: list[dict[str, Any]] = []
    failed = 0
    with s.client() as c:
        for ep in s.endpoints:
            try:
                st = c.status(ep)
            except FastraftError as e:
                failed += 1
                click.echo(f"Failed to get the status of endpoint {ep} ({e.message})", err=True)
                continue
            errors = [str(x) for x in st.get("errors") or []]
            if not st.get("leader") and "no leader" not in errors:
                errors.append("no leader")
            mid = int(st.get("member_id", 0))
            rows.append([ep, format(mid, "x"), str(st.get("version", "")),
                         humanize_bytes(int(st.get("db_size", 0))),
                         "true" if mid and mid == st.get("leader") else "false",
                         "true" if st.get("is_learner") else "false",
                         str(st.get("raft_term", 0)), str(st.get("raft_index", 0)),
                         str(st.get("raft_applied_index", 0)), ", ".join(errors)])
            docs.append({"Endpoint": ep, "Status": st})
    if s.write_out == "json":
        _echo_json(docs)
    elif s.write_out == "table":
        _table(["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
                "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"], rows)
    else:
        for r in rows:
            click.echo(", ".join(r))
    if failed:
        sys.exit(1)


def main() -> None:
    """Entry point of the ``fastractl`` script."""
    cli(prog_name="fastractl")


if __name__ == "__main__":
    main()
