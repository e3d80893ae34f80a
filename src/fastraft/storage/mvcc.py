"""The MVCC key-value state machine: etcd's revision model over RocksDB.

Every change bumps the store *revision* (it starts at 1, so the first put gets revision 2, as in
etcd); a txn is one revision, and the changes inside one revision are numbered by a *sub*
index. Each key carries create_revision, mod_revision and version (1 on creation, +1 per put,
reset when the key is deleted). A delete that deletes nothing does not bump the revision.

Key layout, all in the ``kv`` column family of the member's DB (one family, so that one RocksDB
iterator -- which pins an implicit snapshot when created -- sees a consistent state for
``snapshot_data``):

=================================  ==============================================================
``m``                              msgpack ``[applied, revision, compact_revision]``
``c`` + key                        current record: msgpack ``[create, mod, version, lease, value]``
                                   (a current read is one point lookup; a range is one ordered
                                   iteration over the ``c`` prefix)
``i`` + enc(key) + rev (8 B BE)    history: the record the key got at ``rev``, or ``b""`` for a
                                   tombstone (deleted at ``rev``). Reads at an old revision take
                                   each key's last entry <= that revision.
``r`` + rev (8 B BE) + sub (4 B)   change log: which key changed at (rev, sub). Compaction walks
                                   it to find the history entries to drop; ``events`` (watch)
                                   streams from it.
=================================  ==============================================================

``enc(key)`` escapes ``\\x00`` as ``\\x00\\xff`` and ends with ``\\x00\\x00``: it keeps byte order
and is prefix-free, so one key's history entries are contiguous and ordered by revision even when
another key extends it.

Compaction at revision C keeps, for every key, its last history entry <= C unless that entry is
a tombstone, and drops all ``r`` entries <= C. Reads at revisions >= C keep working. Applying
it only moves the compact revision; the records go afterwards in bounded steps
(``compact_step``, driven by the node between loop iterations), so a compaction of a big store
never holds the member's loop.

Ranges are read by ``RangeScan``: lazily, in steps over one pinned iterator (the node runs the
steps after the first in a worker thread), and refused with ResponseTooLargeError once the
answer passes ``max_response_bytes``.

Nothing is held in Python dicts between calls: RocksDB holds the data. Within one ``apply`` call
changes are buffered in a dict (so later entries of the batch see earlier ones) and written in
ONE WriteBatch together with the new ``applied`` index. A plain put (``key`` and ``value``, at
most ``prev_kv: False`` and ``lease: 0`` besides) is applied inline by ``apply`` without the
generic validation and dispatch; every other command takes the generic path. Both write the same
records.

Watch: ``events``/``events_page`` read the change log and the history lazily, after the fact;
``apply`` does no extra work for them. Compaction at C drops the change log up to and including
C, so events can be read from revision C + 1 on (etcd can still replay revision C itself).

Not in scope yet: leases (a put with a non-zero lease is refused with BadRequestError rather than
silently ignored).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import rocksdict

from fastraft._core import ENTRY_NORMAL
from fastraft.errors import (
    BadRequestError,
    CompactedError,
    FastraftError,
    FutureRevisionError,
    KeyTooLargeError,
    ResponseTooLargeError,
    UnknownOperationError,
    ValueTooLargeError,
)
from fastraft.net.framing import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES

_U64 = struct.Struct(">Q")
_REVSUB = struct.Struct(">QI")
_MAX_REV = (1 << 63) - 1
_META_KEY = b"m"
_SUB0 = b"\x00\x00\x00\x00"  # sub index 0 of a change-log key, 4 bytes BE
_MISSING = object()
_SNAP_MAGIC = "fastraft-kv-snapshot"
_SNAP_VERSION = 1
# One page of watch events (events_page): bounded so a watch from revision 1 on a big store is
# streamed, and a frame stays far below the client's 64 MiB limit.
EVENTS_PAGE_LIMIT = 1000
EVENTS_PAGE_BYTES = 1 << 20
# Encoded bytes of one KeyValue besides its key and value (field names, four integers, headers):
# an overestimate, so the frame never ends up larger than the estimate.
_KV_OVERHEAD = 100
# Change-log entries one compaction step drops (compact_step): a few ms on the loop.
COMPACT_BATCH = 1000

_OPS = ("put", "delete", "txn", "compact", "range")
_TXN_OPS = ("put", "delete", "range")
_TARGETS = ("value", "version", "create", "mod")
_RESULTS = ("=", "!=", ">", "<")

# Argument kinds per op: "key" (non-empty bytes, size-limited), "bytes", "value", "bool",
# "uint", "list".
_ARGS: dict[str, dict[str, str]] = {
    "put": {"key": "key", "value": "value", "prev_kv": "bool", "lease": "uint"},
    "delete": {"key": "key", "range_end": "bytes", "prev_kv": "bool"},
    "range": {"key": "key", "range_end": "bytes", "limit": "uint", "revision": "uint",
              "keys_only": "bool", "count_only": "bool", "serializable": "bool",
              "exact_count": "bool"},
    "compact": {"revision": "uint"},
    "txn": {"compare": "list", "success": "list", "failure": "list"},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "put": ("key", "value"), "delete": ("key",), "range": ("key",), "compact": ("revision",),
    "txn": (),
}

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False)


def enc_key(key: bytes) -> bytes:
    """Order-preserving, prefix-free encoding of a key for the history index."""
    return key.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def dec_key(ek: bytes) -> bytes:
    return ek[:-2].replace(b"\x00\xff", b"\x00")


def _kv_dict(key: bytes, rec: bytes, keys_only: bool) -> dict:
    create, mod, version, lease, value = _unpack(rec)
    return {"key": key, "value": b"" if keys_only else value, "create_revision": create,
            "mod_revision": mod, "version": version, "lease": lease}


def _range_end_key(prefix: bytes, key: bytes, range_end: bytes, encode: bool) -> tuple[bytes, bytes]:
    """DB bounds [lo, hi) of a non-single-key range under ``prefix``."""
    lo = prefix + (enc_key(key) if encode else key)
    if range_end == b"\x00":
        hi = bytes([prefix[0] + 1])  # end of the whole prefix
    else:
        hi = prefix + (enc_key(range_end) if encode else range_end)
    return lo, hi


class _Buffer:
    """Reads through pending writes; one apply() call's changes, written as one WriteBatch."""

    __slots__ = ("cf", "pend")

    def __init__(self, cf: rocksdict.Rdict) -> None:
        self.cf = cf
        self.pend: dict[bytes, bytes | None] = {}

    def get(self, k: bytes) -> bytes | None:
        pend = self.pend
        if k in pend:
            return pend[k]
        return self.cf.get(k)

    def put(self, k: bytes, v: bytes) -> None:
        self.pend[k] = v

    def delete(self, k: bytes) -> None:
        self.pend[k] = None

    def scan(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs in [lo, hi), ascending, pending writes merged in."""
        pend = self.pend
        pk = sorted(k for k in pend if lo <= k < hi) if pend else []
        it = self.cf.iter()
        it.seek(lo)
        j = 0
        n = len(pk)
        while True:
            dbk = it.key() if it.valid() else None
            if dbk is not None and dbk >= hi:
                dbk = None
            pkk = pk[j] if j < n else None
            if dbk is None and pkk is None:
                it.status()  # an iterator stopped by a read error is not the end (raises)
                return
            if pkk is not None and (dbk is None or pkk <= dbk):
                j += 1
                if dbk == pkk:
                    it.next()
                v = pend[pkk]
                if v is not None:
                    yield pkk, v
            else:
                assert dbk is not None  # both None returned above; pkk None or > dbk here
                yield dbk, it.value()
                it.next()

    def last_in(self, lo: bytes, hi: bytes) -> tuple[bytes, bytes] | None:
        """The greatest live pair in [lo, hi) (one reverse seek when nothing is pending)."""
        pend = self.pend
        best: tuple[bytes, bytes] | None = None
        if pend:
            for k in sorted((k for k in pend if lo <= k < hi), reverse=True):
                v = pend[k]
                if v is not None:
                    best = (k, v)
                    break
        it = self.cf.iter()
        it.seek_for_prev(hi)
        while it.valid():
            k = it.key()
            if k >= hi:
                it.prev()
                continue
            if k < lo or (best is not None and k <= best[0]):
                break
            if k in pend:  # overridden (or deleted) by a pending write, judged above
                it.prev()
                continue
            return (k, it.value())
        it.status()  # a read error is not "nothing there" (raises)
        return best



def _plain_put(args: Any) -> tuple[bytes, bytes] | None:
    """(key, value) when ``args`` are a plain put's: a non-empty bytes ``key``, a bytes
    ``value`` and nothing else but ``prev_kv: False`` and ``lease: 0`` (what clients send by
    default); None sends the command down the generic path."""
    if type(args) is not dict:
        return None
    n = len(args)
    if n != 2:
        if n > 4 or args.get("prev_kv", False) is not False:
            return None
        lease = args.get("lease", 0)
        if type(lease) is not int or lease != 0:
            return None
        if n != 2 + ("prev_kv" in args) + ("lease" in args):
            return None
    key = args.get("key")
    value = args.get("value")
    if type(key) is bytes and key and type(value) is bytes:
        return key, value
    return None


class KV:
    """The MVCC store of one member, kept in the ``kv`` column family of its Storage."""

    def __init__(self, storage: Any, *, max_key_bytes: int = 32768,
                 max_value_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_txn_ops: int = 128,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.storage = storage
        self.max_response_bytes = max_response_bytes
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self.max_txn_ops = max_txn_ops
        # Only the Rdict is kept: a ColumnFamily handle held here would keep RocksDB open (and
        # its LOCK taken) after storage.close(). Storage closes this Rdict itself.
        self._cf: rocksdict.Rdict = storage.column_family("kv")
        self.applied, self.revision, self.compact_revision = 0, 1, 0
        # Physical compaction (compact_step): done up to _compacted_to; the change log below
        # _compact_cursor is gone. Both reset on reload (an install may bring old records).
        self._compacted_to = 0
        self._compact_cursor: bytes | None = None
        self.reload()

    # ------------------------------------------------------------------ validation

    def validate(self, op: str, args: dict) -> None:
        """Check a client command completely before it is proposed; raise on anything wrong."""
        self._validate(op, args, True, False)

    def encode_command(self, op: str, args: dict) -> bytes:
        """The log entry data of a command: msgpack ``[op, args]`` (validated first)."""
        self._validate(op, args, True, False)
        return _pack([op, args])

    def _check_key(self, what: str, k: bytes, sizes: bool, allow_empty: bool) -> None:
        if not isinstance(k, bytes):
            raise BadRequestError(f"{what} must be bytes, got {type(k).__name__}")
        if not k and not allow_empty:
            raise BadRequestError(f"{what} must not be empty")
        if sizes and len(k) > self.max_key_bytes:
            raise KeyTooLargeError(f"{what} is {len(k)} bytes; the limit is {self.max_key_bytes}")

    def _validate(self, op: Any, args: Any, sizes: bool, in_txn: bool) -> None:
        allowed_ops = _TXN_OPS if in_txn else _OPS
        if not isinstance(op, str) or op not in allowed_ops:
            where = " inside a txn" if in_txn else ""
            raise UnknownOperationError(
                f"unknown operation {op!r}{where}; expected one of {', '.join(allowed_ops)}")
        if not isinstance(args, dict):
            raise BadRequestError(f"{op}: args must be a map, got {type(args).__name__}")
        spec = _ARGS[op]
        for name, v in args.items():
            kind = spec.get(name) if isinstance(name, str) else None
            if kind is None:
                raise BadRequestError(f"{op}: unknown argument {name!r}")
            if kind == "key":
                self._check_key(f"{op}: {name}", v, sizes, False)
            elif kind == "bytes":
                self._check_key(f"{op}: {name}", v, sizes, True)
            elif kind == "value":
                if not isinstance(v, bytes):
                    raise BadRequestError(f"{op}: {name} must be bytes, got {type(v).__name__}")
                if sizes and len(v) > self.max_value_bytes:
                    raise ValueTooLargeError(
                        f"{op}: value is {len(v)} bytes; the limit is {self.max_value_bytes}")
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise BadRequestError(f"{op}: {name} must be a bool, got {type(v).__name__}")
            elif kind == "uint":
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_REV:
                    raise BadRequestError(f"{op}: {name} must be an integer in [0, 2^63), got {v!r}")
            elif kind == "list":
                if not isinstance(v, (list, tuple)):
                    raise BadRequestError(f"{op}: {name} must be a list, got {type(v).__name__}")
        for name in _REQUIRED[op]:
            if name not in args:
                raise BadRequestError(f"{op}: missing required argument {name!r}")
        if op == "put" and args.get("lease", 0) != 0:
            raise BadRequestError("put: leases are not supported yet (lease must be 0)")
        if op == "compact" and args["revision"] < 1:
            raise BadRequestError("compact: revision must be >= 1")
        if op == "txn":
            self._validate_txn(args, sizes)

    def _validate_txn(self, args: dict, sizes: bool) -> None:
        compare = args.get("compare", [])
        n_ops = 0
        for c in compare:
            if not isinstance(c, (list, tuple)) or len(c) != 5:
                raise BadRequestError(
                    f"txn: a compare must be [target, result, key, range_end, value], got {c!r}")
            target, result, key, range_end, value = c
            if target not in _TARGETS:
                raise BadRequestError(f"txn: compare target must be one of {_TARGETS}, got {target!r}")
            if result not in _RESULTS:
                raise BadRequestError(f"txn: compare result must be one of {_RESULTS}, got {result!r}")
            self._check_key("txn: compare key", key, sizes, False)
            self._check_key("txn: compare range_end", range_end, sizes, True)
            if target == "value":
                if not isinstance(value, bytes):
                    raise BadRequestError("txn: a value compare needs a bytes value")
                if sizes and len(value) > self.max_value_bytes:
                    raise ValueTooLargeError(
                        f"txn: compare value is {len(value)} bytes; the limit is {self.max_value_bytes}")
            elif not isinstance(value, int) or isinstance(value, bool):
                raise BadRequestError(f"txn: a {target} compare needs an integer value, got {value!r}")
        for branch in ("success", "failure"):
            puts: set[bytes] = set()
            deletes: list[tuple[bytes, bytes]] = []
            for item in args.get(branch, []):
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise BadRequestError(f"txn: each {branch} op must be [op, args], got {item!r}")
                sub_op, sub_args = item
                self._validate(sub_op, sub_args, sizes, True)
                if sub_op == "put":
                    if sub_args["key"] in puts:
                        # etcd refuses this too: two values for one key in one revision.
                        raise BadRequestError(f"txn: duplicate key {sub_args['key']!r} in {branch}")
                    puts.add(sub_args["key"])
                elif sub_op == "delete":
                    deletes.append((sub_args["key"], sub_args.get("range_end", b"")))
            for key in puts:
                for lo, end in deletes:
                    if _in_range(key, lo, end):
                        raise BadRequestError(f"txn: key {key!r} is both put and deleted in {branch}")
            n_ops = max(n_ops, len(args.get(branch, [])))
        if n_ops + len(compare) > self.max_txn_ops:
            raise BadRequestError(f"txn: too many operations (limit {self.max_txn_ops})")

    # ------------------------------------------------------------------ apply

    def apply(self, entries: list[tuple]) -> list[tuple[int, object]]:
        """Apply committed entries in order; return (index, result-or-error) per command."""
        buf = _Buffer(self._cf)
        pend = buf.pend
        cf_get = self._cf.get
        unpackb = msgpack.unpackb
        pack_u64 = _U64.pack
        results: list[tuple[int, object]] = []
        applied = self.applied
        saved = (self.revision, self.compact_revision)
        try:
            for index, _term, typ, data in entries:
                if index <= applied:
                    continue  # already applied (replay after a restart): applying is not idempotent
                if index != applied + 1:
                    raise ValueError(f"entry {index} does not follow the applied index {applied}")
                applied = index
                if typ != ENTRY_NORMAL or not data:
                    continue  # leader no-op, conf change: only the applied index moves
                try:
                    cmd = unpackb(data, raw=False)
                except Exception as e:  # garbage must not wedge the cluster: report it as the result
                    results.append((index, BadRequestError(
                        f"committed entry is not a valid msgpack command ({e})")))
                    continue
                # Fast path for the common command, a plain put (see _plain_put): for it the
                # generic validation cannot fail (sizes are not checked at apply), so it is
                # skipped. Anything else goes the long way. The body is _put inlined (calling
                # _put measured ~5% slower per batch); test_kv_apply_batch checks that both
                # write the same bytes, so the two cannot drift apart unnoticed.
                if type(cmd) is list and len(cmd) == 2 and cmd[0] == "put":
                    kv_pair = _plain_put(cmd[1])
                    if kv_pair is not None:
                        key, value = kv_pair
                        rev = self.revision + 1
                        ck = b"c" + key
                        cur = pend.get(ck, _MISSING)
                        if cur is _MISSING:
                            cur = cf_get(ck)
                        if cur is None:  # absent, or deleted earlier in this batch
                            create, version = rev, 1
                        else:
                            create, _mod, version, _lease, _value = unpackb(cur, raw=False)
                            version += 1
                        rec = _pack([create, rev, version, 0, value])
                        rev8 = pack_u64(rev)
                        pend[ck] = rec
                        pend[b"i" + enc_key(key) + rev8] = rec
                        pend[b"r" + rev8 + _SUB0] = key  # == _REVSUB.pack(rev, 0)
                        self.revision = rev
                        results.append((index, {"revision": rev}))
                        continue
                results.append((index, self._apply_cmd(buf, cmd)))
            if applied == self.applied:
                return results
            buf.put(_META_KEY, _pack([applied, self.revision, self.compact_revision]))
            wb = rocksdict.WriteBatch(raw_mode=True)
            h = self.storage.cf_handle("kv")
            for k, v in buf.pend.items():
                if v is None:
                    wb.delete(k, h)
                else:
                    wb.put(k, v, h)
            self.storage.write(wb)
        except BaseException:
            self.revision, self.compact_revision = saved  # nothing was written
            raise
        self.applied = applied
        return results

    def _apply_cmd(self, buf: _Buffer, cmd: Any) -> object:
        """Apply one decoded command (any op) through the generic, fully validated path."""
        if not isinstance(cmd, (list, tuple)) or len(cmd) != 2:
            return BadRequestError("committed entry is not an [op, args] command")
        op, args = cmd
        try:
            # Size limits are proposal-time policy that may differ between members; applying
            # must give the same result everywhere, so only the structure is checked here.
            self._validate(op, args, False, False)
            if op == "put":
                return self._op_put(buf, args)
            if op == "delete":
                return self._op_delete(buf, args)
            if op == "txn":
                return self._op_txn(buf, args)
            if op == "compact":
                return self._op_compact(buf, args["revision"])
            res = self._range(buf, args)
            return res
        except FastraftError as e:
            # The error outlives this call (it goes to a client); its traceback would pin our
            # frames, and through them RocksDB handles that keep the DB open after close().
            return e.with_traceback(None)

    # ------------------------------------------------------------------ primitive changes

    def _put(self, buf: _Buffer, key: bytes, value: bytes, lease: int, rev: int, sub: int,
             want_prev: bool) -> dict | None:
        ck = b"c" + key
        cur = buf.get(ck)
        prev = None
        if cur is None:
            create, version = rev, 1
        else:
            create, _mod, version, _lease, _value = _unpack(cur)
            version += 1
            if want_prev:
                prev = _kv_dict(key, cur, False)
        rec = _pack([create, rev, version, lease, value])
        buf.put(ck, rec)
        buf.put(b"i" + enc_key(key) + _U64.pack(rev), rec)
        buf.put(b"r" + _REVSUB.pack(rev, sub), key)
        return prev

    def _current(self, buf: _Buffer, key: bytes,
                 range_end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, record) of the live keys in the range, at the current revision, lazily (a
        range over a big store must not be copied into a list first)."""
        if not range_end:
            rec = buf.get(b"c" + key)
            if rec is not None:
                yield key, rec
            return
        if range_end != b"\x00" and range_end <= key:
            return
        lo, hi = _range_end_key(b"c", key, range_end, False)
        for k, v in buf.scan(lo, hi):
            yield k[1:], v

    def _delete(self, buf: _Buffer, key: bytes, range_end: bytes, rev: int, sub: int,
                want_prev: bool) -> tuple[int, list[dict]]:
        found = list(self._current(buf, key, range_end))  # the loop below changes buf
        prevs = []
        rev8 = _U64.pack(rev)
        for k, rec in found:
            buf.delete(b"c" + k)
            buf.put(b"i" + enc_key(k) + rev8, b"")
            buf.put(b"r" + _REVSUB.pack(rev, sub), k)
            sub += 1
            if want_prev:
                prevs.append(_kv_dict(k, rec, False))
        return len(found), prevs

    # ------------------------------------------------------------------ ops

    def _op_put(self, buf: _Buffer, args: dict) -> dict:
        rev = self.revision + 1
        prev = self._put(buf, args["key"], args["value"], args.get("lease", 0), rev, 0,
                         args.get("prev_kv", False))
        self.revision = rev
        res: dict = {"revision": rev}
        if prev is not None:
            res["prev_kv"] = prev
        return res

    def _op_delete(self, buf: _Buffer, args: dict) -> dict:
        rev = self.revision + 1
        want = args.get("prev_kv", False)
        n, prevs = self._delete(buf, args["key"], args.get("range_end", b""), rev, 0, want)
        if n:
            self.revision = rev  # as etcd: deleting nothing is not a new revision
        res: dict = {"revision": self.revision, "deleted": n}
        if want:
            res["prev_kvs"] = prevs
        return res

    def _compare(self, buf: _Buffer, c: list) -> bool:
        target, result, key, range_end, value = c
        found = list(self._current(buf, key, range_end))
        if not found:
            if target == "value":
                return False  # as etcd: a value compare on a missing key is false
            recs: list[tuple] = [(0, 0, 0, 0, b"")]
        else:
            recs = [tuple(_unpack(rec)) for _k, rec in found]
        for create, mod, version, _lease, val in recs:
            have: Any = {"value": val, "version": version, "create": create, "mod": mod}[target]
            d = (have > value) - (have < value)
            ok = {"=": d == 0, "!=": d != 0, ">": d > 0, "<": d < 0}[result]
            if not ok:
                return False
        return True

    def _op_txn(self, buf: _Buffer, args: dict) -> dict:
        succeeded = all(self._compare(buf, c) for c in args.get("compare", []))
        ops = args.get("success" if succeeded else "failure", [])
        # Refuse before changing anything: a txn is all or nothing.
        for sub_op, sub_args in ops:
            if sub_op == "range":
                self._check_revision(sub_args.get("revision", 0))
        rev = self.revision + 1
        sub = 0
        responses: list[dict] = []
        for sub_op, sub_args in ops:
            if sub_op == "put":
                prev = self._put(buf, sub_args["key"], sub_args["value"], sub_args.get("lease", 0),
                                 rev, sub, sub_args.get("prev_kv", False))
                sub += 1
                responses.append({"prev_kv": prev} if prev is not None else {})
            elif sub_op == "delete":
                want = sub_args.get("prev_kv", False)
                n, prevs = self._delete(buf, sub_args["key"], sub_args.get("range_end", b""),
                                        rev, sub, want)
                sub += n
                r: dict = {"deleted": n}
                if want:
                    r["prev_kvs"] = prevs
                responses.append(r)
            else:
                r = self._range(buf, sub_args)
                del r["revision"]
                responses.append(r)
        if sub:
            self.revision = rev
        return {"revision": self.revision, "succeeded": succeeded, "responses": responses}

    def _op_compact(self, buf: _Buffer, target: int) -> dict:
        if target <= self.compact_revision:
            raise CompactedError(
                f"revision {target} is already compacted (compact revision {self.compact_revision})")
        if target > self.revision:
            raise FutureRevisionError(
                f"cannot compact to revision {target}: the current revision is {self.revision}")
        # Applying only moves the compact revision (reads below it are refused from now on);
        # the obsolete records are dropped afterwards in small steps (compact_step), as etcd's
        # batched compaction does: dropping a million keys' history in this apply held the
        # member's loop for minutes, long enough for elections.
        self.compact_revision = target
        return {"revision": self.revision}

    @property
    def compaction_pending(self) -> bool:
        """Records below the compact revision may still be on disk: run ``compact_step``."""
        return self.compact_revision > self._compacted_to

    def compact_step(self, max_changes: int = COMPACT_BATCH) -> bool:
        """Drop up to ``max_changes`` change-log entries at or below the compact revision C,
        with the history they made obsolete: for each key they name, every history entry
        <= C but its last, and that one too if it is a tombstone. One WriteBatch of its own
        (unsynced: dropping records no read can reach needs no durability; a restart finds the
        rest and goes on). Returns True while more remain.

        Reads at revisions >= C give the same answers before, during and after: a key's last
        entry <= C stays until it is a tombstone. The change log is walked from a cursor (the
        entries before it are gone), so a long compaction does not re-skip their tombstones."""
        target = self.compact_revision
        hi = b"r" + _U64.pack(target + 1)
        it = self._cf.iter()
        it.seek(self._compact_cursor if self._compact_cursor is not None else b"r")
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self.storage.cf_handle("kv")
        keys: set[bytes] = set()
        n = 0
        while it.valid() and n < max_changes:
            k = it.key()
            if k >= hi:
                break
            wb.delete(k, h)
            keys.add(it.value())
            n += 1
            it.next()
        more = it.valid() and it.key() < hi
        # Where the next step starts: every change-log entry before it is gone (or being
        # dropped by this batch).
        cursor = it.key() if more else hi
        tail = _U64.pack(target + 1)
        history = _Buffer(self._cf)  # reads only (the deletes go to wb)
        for key in sorted(keys):
            lo = b"i" + enc_key(key)
            hist = list(history.scan(lo, lo + tail))
            for k, _v in hist[:-1]:
                wb.delete(k, h)
            if hist and hist[-1][1] == b"":
                wb.delete(hist[-1][0], h)  # a tombstone is not needed to read at >= C
        del it
        if n:
            self.storage.write(wb)
        self._compact_cursor = cursor
        if not more:
            self._compacted_to = target
        return more

    # ------------------------------------------------------------------ reads

    def _check_revision(self, revision: int) -> None:
        if revision and revision < self.compact_revision:
            raise CompactedError(
                f"revision {revision} has been compacted (compact revision {self.compact_revision})")
        if revision > self.revision:
            raise FutureRevisionError(
                f"revision {revision} is in the future (current revision {self.revision})")

    def range(self, key: bytes, range_end: bytes = b"", limit: int = 0, revision: int = 0,
              keys_only: bool = False, count_only: bool = False) -> dict:
        """Read keys at the current (or an older) revision, as etcd's Range."""
        args = {"key": key, "range_end": range_end, "limit": limit, "revision": revision,
                "keys_only": keys_only, "count_only": count_only}
        res = self.range_scan(args).run()
        assert res is not None
        return res

    def range_scan(self, args: dict) -> RangeScan:
        """A range read (``range``'s arguments as a dict) to run in steps, e.g. the first on the
        member's loop and the rest in a worker thread: the view is pinned on the first step."""
        self._validate("range", args, False, False)
        return RangeScan(self, _Buffer(self._cf), args)

    def _range(self, buf: _Buffer, args: dict) -> dict:
        res = RangeScan(self, buf, args).run()
        assert res is not None
        return res

    def _at_revision(self, buf: _Buffer, key: bytes, range_end: bytes,
                     revision: int) -> Iterator[tuple[bytes, bytes]]:
        upto = _U64.pack(revision)
        if not range_end:
            lo = b"i" + enc_key(key)
            last = buf.last_in(lo, lo + _U64.pack(revision + 1))
            if last is not None and last[1]:
                yield key, last[1]
            return
        if range_end != b"\x00" and range_end <= key:
            return
        lo, hi = _range_end_key(b"i", key, range_end, True)
        group: bytes | None = None
        best: bytes | None = None
        for k, v in buf.scan(lo, hi):
            ek, rev8 = k[1:-8], k[-8:]
            if ek != group:
                if group is not None and best:
                    yield dec_key(group), best
                group, best = ek, None
            if rev8 <= upto:
                best = v  # the last entry <= revision wins; b"" means deleted then
        if group is not None and best:
            yield dec_key(group), best

    # ------------------------------------------------------------------ watch events

    def events(self, key: bytes, range_end: bytes, start_revision: int, end_revision: int = 0,
               *, limit: int = EVENTS_PAGE_LIMIT, prev_kv: bool = False) -> list[dict]:
        """Events of keys in the range with start_revision <= revision <= end_revision.

        ``end_revision`` 0 means the current revision. At most about ``limit`` events (one page,
        see ``events_page``); read the next page from the last event's revision + 1."""
        evs, _cursor = self.events_page(key, range_end, (start_revision, 0), end_revision,
                                        limit=limit, prev_kv=prev_kv)
        return evs

    def events_page(self, key: bytes, range_end: bytes, cursor: tuple[int, int],
                    end_revision: int = 0, *, limit: int = EVENTS_PAGE_LIMIT,
                    max_bytes: int = EVENTS_PAGE_BYTES, prev_kv: bool = False,
                    scan_limit: int = 0) -> tuple[list[dict], tuple[int, int]]:
        """One page of events from ``cursor`` = (revision, sub) on; returns (events, next cursor).

        An event is ``{"type": "PUT" | "DELETE", "kv": KeyValue, "prev_kv"?: KeyValue}`` (a DELETE's
        kv holds the key and its mod_revision only, as etcd's). ``range_end`` follows range():
        b"" = one key, b"\0" = every key >= key. A page ends at a revision boundary once it holds
        ``limit`` events or ``max_bytes`` of keys and values, or once ``scan_limit`` change-log
        entries were looked at (0: 16 x limit; bounds the work of a narrow watch over a busy log).
        Only a single revision larger than a page is split, mid-revision. The next cursor is past
        ``end_revision`` when everything up to it was read.

        Raises CompactedError when the cursor's revision is compacted (<= compact_revision: the
        change log of the compact revision itself is gone), BadRequestError on bad arguments."""
        if not isinstance(key, bytes) or not isinstance(range_end, bytes):
            raise BadRequestError("events: key and range_end must be bytes")
        rev0, sub0 = cursor
        for name, v in (("start_revision", rev0), ("end_revision", end_revision),
                        ("limit", limit), ("max_bytes", max_bytes), ("scan_limit", scan_limit)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_REV:
                raise BadRequestError(f"events: {name} must be an integer in [0, 2^63), got {v!r}")
        if not isinstance(sub0, int) or not 0 <= sub0 < 1 << 32:
            raise BadRequestError(f"events: bad cursor {cursor!r}")
        if limit < 1 or max_bytes < 1:
            raise BadRequestError("events: limit and max_bytes must be >= 1")
        rev0 = max(rev0, 1)
        if self.compact_revision and rev0 <= self.compact_revision:
            raise CompactedError(
                f"revision {rev0} has been compacted (compact revision {self.compact_revision}); "
                f"watch from {self.compact_revision + 1} or later",
                compact_revision=self.compact_revision)
        end = self.revision if end_revision == 0 else min(end_revision, self.revision)
        if rev0 > end:
            return [], (rev0, sub0)
        scan_limit = scan_limit or 16 * limit
        cf = self._cf
        it = cf.iter()
        it.seek(b"r" + _REVSUB.pack(rev0, sub0))
        hi = b"r" + _U64.pack(end + 1)
        evs: list[dict] = []
        nbytes = 0
        scanned = 0
        cur_rev = -1
        rev_start = 0  # index in evs where cur_rev's events begin
        while it.valid():
            k = it.key()
            if k >= hi:
                break
            rev, sub = _REVSUB.unpack_from(k, 1)
            if rev != cur_rev:
                if len(evs) >= limit or nbytes >= max_bytes or scanned >= scan_limit:
                    return evs, (rev, 0)
                cur_rev, rev_start = rev, len(evs)
            scanned += 1
            ek: bytes = it.value()
            if range_end:
                if ek < key or (range_end != b"\x00" and ek >= range_end):
                    it.next()
                    continue
            elif ek != key:
                it.next()
                continue
            if len(evs) >= limit or nbytes >= max_bytes:
                if rev_start > 0:
                    # Keep revisions whole when the page holds earlier ones: resend this one.
                    del evs[rev_start:]
                    return evs, (rev, 0)
                return evs, (rev, sub)  # one revision bigger than a page: split it
            ev = self._event(ek, rev, prev_kv)
            nbytes += len(ek) + len(ev["kv"]["value"])
            if "prev_kv" in ev:
                nbytes += len(ev["prev_kv"]["value"])
            evs.append(ev)
            it.next()
        it.status()  # a read error must not end the page as if history ended (raises)
        return evs, (end + 1, 0)

    def changes(self, cursor: tuple[int, int], end_revision: int,
                max_entries: int) -> tuple[list[tuple[int, int, bytes]], bool]:
        """The raw change log ``(revision, sub, key)`` from ``cursor`` through ``end_revision``.

        Returns (entries, complete); complete is False when there were more than
        ``max_entries`` (the entries are then a prefix). One pass serves many watchers (the
        hub filters it per watcher and builds bodies with ``event``). Raises CompactedError as
        events_page does."""
        rev0, sub0 = cursor
        if self.compact_revision and rev0 <= self.compact_revision:
            raise CompactedError(
                f"revision {rev0} has been compacted (compact revision {self.compact_revision})",
                compact_revision=self.compact_revision)
        end = min(end_revision, self.revision)
        out: list[tuple[int, int, bytes]] = []
        if rev0 > end:
            return out, True
        it = self._cf.iter()
        it.seek(b"r" + _REVSUB.pack(rev0, sub0))
        hi = b"r" + _U64.pack(end + 1)
        unpack = _REVSUB.unpack_from
        while it.valid():
            k = it.key()
            if k >= hi:
                return out, True
            if len(out) >= max_entries:
                return out, False
            rev, sub = unpack(k, 1)
            out.append((rev, sub, it.value()))
            it.next()
        it.status()  # raises on a read error (corruption) instead of a short change log
        return out, True

    def event(self, key: bytes, rev: int, prev_kv: bool = False) -> dict:
        """The event of ``key`` at revision ``rev`` (which changed it), as events_page builds."""
        return self._event(key, rev, prev_kv)

    def _event(self, key: bytes, rev: int, prev_kv: bool) -> dict:
        hk = b"i" + enc_key(key)
        rec = self._cf.get(hk + _U64.pack(rev))
        ev: dict
        if rec:
            ev = {"type": "PUT", "kv": _kv_dict(key, rec, False)}
        else:
            # A tombstone (b""); None cannot happen above the compact revision.
            ev = {"type": "DELETE", "kv": {"key": key, "value": b"", "create_revision": 0,
                                           "mod_revision": rev, "version": 0, "lease": 0}}
        if prev_kv:
            last = _Buffer(self._cf).last_in(hk, hk + _U64.pack(rev))
            if last is not None and last[1]:
                ev["prev_kv"] = _kv_dict(key, last[1], False)
        return ev

    # ------------------------------------------------------------------ snapshots

    def snapshot_view(self) -> Any:
        """A consistent view of the state as of now: O(1), nothing is copied.

        It is an unpositioned RocksDB iterator, which pins an implicit snapshot when created
        (rocksdict 0.3's explicit ``Snapshot`` does NOT apply to its own iterators: measured).
        The host keeps it as "the state machine at index ``applied``" and serializes it with
        ``snapshot_data(view)`` only when a follower needs it, possibly in a worker thread (one
        thread at a time): later applies do not show through. Holding it pins the memtable and
        SST files of that moment, so the host drops it when it takes the next one."""
        return self._cf.iter()

    def snapshot_data(self, view: Any = None,
                      cancelled: Callable[[], bool] | None = None) -> bytes:
        """A consistent copy of the whole state, or of ``view`` (from ``snapshot_view()``).

        ``cancelled`` is polled every 4096 keys (a host stopping while a worker thread
        serializes a big store); when it returns True this raises InterruptedError."""
        body = bytearray()
        n = 0
        it = self._cf.iter() if view is None else view
        it.seek_to_first()
        while it.valid():
            body += _pack(it.key())
            body += _pack(it.value())
            n += 1
            if cancelled is not None and not n & 4095 and cancelled():
                raise InterruptedError("snapshot serialization cancelled")
            it.next()
        it.status()  # a read error must not yield a silently truncated snapshot (raises)
        del it
        return _pack(_SNAP_MAGIC) + _pack(_SNAP_VERSION) + _pack(n) + bytes(body)

    def snapshot_chunks(self, view: Any, chunk_bytes: int = 1 << 20,
                        cancelled: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """The state of ``view`` (from ``snapshot_view()``) as chunks of about ``chunk_bytes``:
        each the msgpack of alternating keys and values, keys ascending across chunks (what a
        receiver's ``SnapshotStage`` needs). A generator: the host pulls one chunk at a time in
        a worker thread, so memory holds one chunk, never the store. ``cancelled`` is polled
        once per chunk (raises InterruptedError)."""
        it = view
        it.seek_to_first()
        pack = _pack
        while it.valid():
            if cancelled is not None and cancelled():
                raise InterruptedError("snapshot streaming cancelled")
            body = bytearray()
            while it.valid() and len(body) < chunk_bytes:
                body += pack(it.key())
                body += pack(it.value())
                it.next()
            it.status()  # never send part of the state as if it were all of it (raises)
            yield bytes(body)
        it.status()

    @staticmethod
    def parse_chunk(data: bytes, start: int = 0) -> list[tuple[bytes, bytes]]:
        """The pairs of one ``snapshot_chunks`` chunk, read from ``data[start:]``; ValueError
        on anything else."""
        # Read through a BytesIO (which shares a bytes object) rather than fed: no copy of the
        # whole chunk, the unpacker buffers one value at a time.
        bio = io.BytesIO(data)
        bio.seek(start)
        up = msgpack.Unpacker(bio, raw=False, read_size=64 * 1024,
                              max_buffer_size=max(len(data), 1 << 20))
        out: list[tuple[bytes, bytes]] = []
        try:
            items = list(up)
        except (msgpack.UnpackException, msgpack.ExtraData, ValueError, TypeError) as e:
            raise ValueError(f"snapshot chunk is corrupt ({e})") from None
        if len(items) % 2:
            raise ValueError("snapshot chunk is truncated (a key without its value)")
        for i in range(0, len(items), 2):
            k, v = items[i], items[i + 1]
            if not isinstance(k, bytes) or not isinstance(v, bytes) or not k or k[0] not in b"cimr":
                raise ValueError("snapshot holds an entry outside the KV layout")
            out.append((k, v))
        return out

    @staticmethod
    def install_meta(meta: bytes | None, index: int) -> tuple[bytes, bytes]:
        """(key, value) of the KV record to write when a received snapshot at ``index`` is
        installed: its revision and compact revision, with ``applied`` = ``index``.
        ``meta`` is the snapshot's own record (ValueError when missing or malformed)."""
        if meta is None:
            raise ValueError("snapshot data has no KV metadata record")
        try:
            _applied, revision, compact = _unpack(meta)
        except Exception as e:  # msgpack raises several types on garbage
            raise ValueError(f"snapshot KV metadata is corrupt ({e})") from None
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (revision, compact)):
            raise ValueError("snapshot KV metadata has the wrong shape")
        return _META_KEY, _pack([index, revision, compact])

    def reload(self) -> None:
        """Re-read the live state after storage switched KV generations (an install)."""
        self._cf = self.storage.column_family("kv")
        self._compacted_to, self._compact_cursor = 0, None
        raw = self._cf.get(_META_KEY)
        if raw is None:
            self.applied, self.revision, self.compact_revision = 0, 1, 0
        else:
            self.applied, self.revision, self.compact_revision = _unpack(raw)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot's; ``applied`` becomes ``index``.

        The data is decoded and checked completely before anything is written; the state is
        then replaced in one WriteBatch.
        """
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError("snapshot data must be bytes")
        up = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1 << 20))
        up.feed(data)
        try:
            magic, version, n = next(up), next(up), next(up)
            if magic != _SNAP_MAGIC or version != _SNAP_VERSION or not isinstance(n, int):
                raise ValueError(f"not a fastraft KV snapshot (format {version!r})")
            pairs = []
            for _ in range(n):
                k, v = next(up), next(up)
                if not isinstance(k, bytes) or not isinstance(v, bytes) or not k or k[0] not in b"cimr":
                    raise ValueError("snapshot holds an entry outside the KV layout")
                pairs.append((k, v))
            try:
                next(up)
            except StopIteration:
                pass
            else:
                raise ValueError("snapshot has trailing data")
        except StopIteration:
            raise ValueError("snapshot data is truncated") from None
        except (msgpack.UnpackException, msgpack.ExtraData, TypeError) as e:
            raise ValueError(f"snapshot data is corrupt ({e})") from None
        meta = dict(pairs).get(_META_KEY)
        if meta is None:
            raise ValueError("snapshot data has no KV metadata record")
        _applied, revision, compact = _unpack(meta)
        wb = rocksdict.WriteBatch(raw_mode=True)
        h = self.storage.cf_handle("kv")
        wb.delete_range(b"", b"\xff", h)  # every KV key starts with one of c, i, m, r
        for k, v in pairs:
            wb.put(k, v, h)
        wb.put(_META_KEY, _pack([index, revision, compact]), h)
        self.storage.write(wb)
        self.applied, self.revision, self.compact_revision = index, revision, compact
        self._compacted_to, self._compact_cursor = 0, None


class RangeScan:
    """One range read, runnable in steps of a bounded number of keys.

    The revision served is fixed when the scan is made; the keys come from one RocksDB iterator,
    which pins the store's state when the first step creates it (``_Buffer.scan``), so steps may
    run later, or in another thread, and still read one consistent state. The answer is refused
    with ResponseTooLargeError as soon as the keys and values gathered pass
    ``kv.max_response_bytes`` (count_only gathers nothing: it counts the whole range)."""

    __slots__ = ("revision", "limit", "keys_only", "count_only", "exact_count", "max_bytes",
                 "kvs", "count", "nbytes", "_found")

    def __init__(self, kv: KV, buf: _Buffer, args: dict) -> None:
        key: bytes = args["key"]
        range_end: bytes = args.get("range_end", b"")
        revision: int = args.get("revision", 0)
        self.limit: int = args.get("limit", 0)
        self.keys_only: bool = args.get("keys_only", False)
        self.count_only: bool = args.get("count_only", False)
        # False (a pager's pages): with a limit, stop at limit + 1 keys; `more` stays exact,
        # `count` is then not the range's total (counting it would rescan the rest every page).
        self.exact_count: bool = args.get("exact_count", True)
        self.max_bytes = kv.max_response_bytes
        kv._check_revision(revision)
        self.revision = kv.revision
        if revision == 0 or revision == kv.revision:
            self._found: Iterator[tuple[bytes, bytes]] = kv._current(buf, key, range_end)
        else:
            self._found = kv._at_revision(buf, key, range_end, revision)
        self.kvs: list[dict] = []
        self.count = 0
        self.nbytes = 0

    def close(self) -> None:
        """End the scan (done or abandoned): its RocksDB iterator (and the view it pins) goes
        now, not when the generator is collected."""
        close = getattr(self._found, "close", None)
        if close is not None:
            close()
        self._found = iter(())

    def run(self, budget: int = 0) -> dict | None:
        """Look at up to ``budget`` more keys (0: all); the answer once the range is done,
        else None (call again). Raises ResponseTooLargeError."""
        found = self._found
        limit, keys_only, count_only = self.limit, self.keys_only, self.count_only
        kvs = self.kvs
        count, nbytes = self.count, self.nbytes
        seen = 0
        try:
            for k, rec in found:
                count += 1
                if not count_only and (limit == 0 or count <= limit):
                    kv = _kv_dict(k, rec, keys_only)
                    kvs.append(kv)
                    nbytes += len(k) + len(kv["value"]) + _KV_OVERHEAD
                    if nbytes > self.max_bytes:
                        # Drop the iterator (and its pinned view) now: the error may be kept
                        # with its traceback, which must not hold the DB open.
                        self.close()
                        raise ResponseTooLargeError(
                            f"the answer would be larger than {self.max_bytes:,} bytes (passed "
                            f"after {len(kvs):,} keys): ask for less with --limit (and page from "
                            f"the last key), --keys-only or --count-only")
                elif limit and not self.exact_count:
                    break  # limit + 1 keys seen: `more` is known
                seen += 1
                if budget and seen >= budget:
                    return None
        finally:
            self.count, self.nbytes = count, nbytes
        self.close()  # done (a pager's page may stop early): let the view go now
        more = bool(limit) and count > limit and not count_only
        return {"kvs": kvs, "count": count, "more": more, "revision": self.revision}


def _in_range(key: bytes, lo: bytes, end: bytes) -> bool:
    if not end:
        return key == lo
    if end == b"\x00":
        return key >= lo
    return lo <= key < end
