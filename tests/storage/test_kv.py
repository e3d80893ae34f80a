"""Tests of fastraft.storage.mvcc: the MVCC state machine (revisions, ranges, txn, compaction,
snapshots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from fastraft.errors import (
    BadRequestError,
    CompactedError,
    FutureRevisionError,
    KeyTooLargeError,
    UnknownOperationError,
    ValueTooLargeError,
)
from fastraft.storage.mvcc import KV, dec_key, enc_key
from fastraft.storage.logstore import Storage


class Cluster1:
    """One member's storage + KV, with a helper that appends and applies commands."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage = Storage.open(str(path), cluster_id=1, member_id=2, name="m")
        self.kv = KV(self.storage)
        self.index = self.kv.applied

    def entry(self, op: str, args: dict) -> tuple:
        self.index += 1
        return (self.index, 1, 0, self.kv.encode_command(op, args))

    def do(self, op: str, args: dict) -> object:
        res = self.kv.apply([self.entry(op, args)])
        assert len(res) == 1 and res[0][0] == self.index
        return res[0][1]

    def put(self, key: bytes, value: bytes, **kw: object) -> dict:
        r = self.do("put", {"key": key, "value": value, **kw})
        assert isinstance(r, dict)
        return r

    def reopen(self) -> None:
        self.storage.close()
        self.__init__(self.path)  # type: ignore[misc]


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Cluster1]:
    cl = Cluster1(tmp_path / "m")
    yield cl
    cl.storage.close()


def keys(res: dict) -> list[bytes]:
    return [kv["key"] for kv in res["kvs"]]


# ---------------------------------------------------------------- revisions and versions


def test_revisions_start_at_one_and_versions_follow_etcd(c: Cluster1) -> None:
    assert (c.kv.revision, c.kv.applied, c.kv.compact_revision) == (1, 0, 0)
    assert c.put(b"a", b"1") == {"revision": 2}
    r = c.put(b"a", b"2", prev_kv=True)
    assert r["revision"] == 3
    assert r["prev_kv"] == {"key": b"a", "value": b"1", "create_revision": 2, "mod_revision": 2,
                            "version": 1, "lease": 0}
    kv = c.kv.range(b"a")["kvs"][0]
    assert (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"]) == (b"2", 2, 3, 2)
    d = c.do("delete", {"key": b"a", "prev_kv": True})
    assert d == {"revision": 4, "deleted": 1, "prev_kvs": [kv]}
    assert c.kv.range(b"a") == {"kvs": [], "count": 0, "more": False, "revision": 4}
    # Recreated: a new life of the key, version back to 1.
    c.put(b"a", b"3")
    kv = c.kv.range(b"a")["kvs"][0]
    assert (kv["create_revision"], kv["mod_revision"], kv["version"]) == (5, 5, 1)


def test_delete_of_nothing_keeps_revision(c: Cluster1) -> None:
    c.put(b"a", b"1")
    assert c.do("delete", {"key": b"zzz"}) == {"revision": 2, "deleted": 0}
    assert c.do("delete", {"key": b"b", "range_end": b"c"}) == {"revision": 2, "deleted": 0}
    assert c.kv.revision == 2


def test_noops_and_conf_changes_only_advance_applied(c: Cluster1) -> None:
    res = c.kv.apply([(1, 1, 0, b""), (2, 1, 1, msgpack.packb([0, 5, b"ctx"])), (3, 2, 0, b"")])
    assert res == []
    assert (c.kv.applied, c.kv.revision) == (3, 1)
    c.reopen()
    assert c.kv.applied == 3


def test_replayed_entries_are_skipped_and_gaps_refused(c: Cluster1) -> None:
    e1 = c.entry("put", {"key": b"a", "value": b"1"})
    e2 = c.entry("put", {"key": b"a", "value": b"2"})
    c.kv.apply([e1, e2])
    # After a restart the host may hand back entries already applied: no double revision.
    assert c.kv.apply([e1, e2]) == []
    assert c.kv.revision == 3
    with pytest.raises(ValueError, match="does not follow"):
        c.kv.apply([(10, 1, 0, b"")])
    assert c.kv.applied == 2


def test_batch_of_entries_sees_its_own_writes(c: Cluster1) -> None:
    batch = [c.entry("put", {"key": b"k", "value": b"%d" % i}) for i in range(5)]
    batch.append(c.entry("delete", {"key": b"k", "prev_kv": True}))
    batch.append(c.entry("put", {"key": b"k", "value": b"again"}))
    res = c.kv.apply(batch)
    assert [r[1]["revision"] for r in res] == [2, 3, 4, 5, 6, 7, 8]  # type: ignore[index]
    assert res[5][1]["prev_kvs"][0]["version"] == 5  # type: ignore[index]
    kv = c.kv.range(b"k")["kvs"][0]
    assert (kv["value"], kv["version"], kv["create_revision"]) == (b"again", 1, 8)
    assert c.kv.applied == 7
    c.reopen()
    assert (c.kv.applied, c.kv.revision) == (7, 8)
    assert c.kv.range(b"k")["kvs"][0]["value"] == b"again"


# ---------------------------------------------------------------- ranges


@pytest.fixture
def filled(c: Cluster1) -> Cluster1:
    for k in (b"a", b"ab", b"abc", b"b", b"b\x00", b"b\x00x", b"c", b"\xff"):
        c.put(k, b"v-" + k)
    return c


def test_range_single_prefix_from_and_all(filled: Cluster1) -> None:
    kv = filled.kv
    assert keys(kv.range(b"ab")) == [b"ab"]
    assert keys(kv.range(b"ab", b"ac")) == [b"ab", b"abc"]  # prefix "ab"
    assert keys(kv.range(b"b", b"\x00")) == [b"b", b"b\x00", b"b\x00x", b"c", b"\xff"]
    assert keys(kv.range(b"\x00", b"\x00"))[0] == b"a"
    assert kv.range(b"\x00", b"\x00")["count"] == 8
    assert keys(kv.range(b"c", b"a")) == []  # end before start: empty, as etcd
    assert kv.range(b"zz")["count"] == 0


def test_range_limit_count_more_keys_only_count_only(filled: Cluster1) -> None:
    kv = filled.kv
    r = kv.range(b"a", b"\x00", limit=3)
    assert keys(r) == [b"a", b"ab", b"abc"]
    assert (r["count"], r["more"]) == (8, True)
    r = kv.range(b"a", b"\x00", limit=8)
    assert (len(r["kvs"]), r["more"]) == (8, False)
    r = kv.range(b"a", b"b", keys_only=True)
    assert [x["value"] for x in r["kvs"]] == [b"", b"", b""]
    assert r["kvs"][1]["version"] == 1
    r = kv.range(b"a", b"\x00", count_only=True)
    assert (r["kvs"], r["count"], r["more"]) == ([], 8, False)
    assert r["revision"] == 9


def test_old_revisions_single_key_and_ranges(c: Cluster1) -> None:
    c.put(b"x", b"1")  # 2
    c.put(b"y", b"1")  # 3
    c.put(b"x", b"2")  # 4
    c.do("delete", {"key": b"y"})  # 5
    c.put(b"x\x00", b"z")  # 6: a key that extends "x" must not disturb x's history
    c.put(b"y", b"again")  # 7
    kv = c.kv
    assert kv.range(b"x", revision=1)["kvs"] == []
    assert kv.range(b"x", revision=2)["kvs"][0]["value"] == b"1"
    assert kv.range(b"x", revision=3)["kvs"][0]["value"] == b"1"
    assert kv.range(b"x", revision=4)["kvs"][0]["value"] == b"2"
    assert kv.range(b"y", revision=4)["kvs"][0]["version"] == 1
    assert kv.range(b"y", revision=5)["kvs"] == []
    assert kv.range(b"y", revision=7)["kvs"][0]["version"] == 1
    r = kv.range(b"x", b"\x00", revision=4)
    assert [(x["key"], x["value"]) for x in r["kvs"]] == [(b"x", b"2"), (b"y", b"1")]
    assert r["revision"] == 7
    r = kv.range(b"x", b"\x00", revision=6, limit=1)
    assert keys(r) == [b"x"] and r["count"] == 2 and r["more"] is True
    assert keys(kv.range(b"x", b"y", revision=6)) == [b"x", b"x\x00"]
    with pytest.raises(FutureRevisionError):
        kv.range(b"x", revision=8)


def test_key_encoding_is_order_preserving_and_reversible() -> None:
    ks = [b"", b"\x00", b"\x00\x00", b"\x00\xff", b"\x00\xff\x00", b"a", b"a\x00", b"a\x00b",
          b"a\x01", b"ab", b"\xff", b"\xff\x00"]
    assert sorted(ks) == sorted(ks, key=enc_key)
    assert all(dec_key(enc_key(k)) == k for k in ks)
    for a in ks:
        for b in ks:
            if a != b:
                assert not enc_key(b).startswith(enc_key(a))  # prefix-free


# ---------------------------------------------------------------- compaction


def test_compaction(c: Cluster1) -> None:
    c.put(b"a", b"1")  # 2
    c.put(b"a", b"2")  # 3
    c.put(b"b", b"1")  # 4
    c.do("delete", {"key": b"b"})  # 5
    c.put(b"a", b"3")  # 6
    assert c.do("compact", {"revision": 4}) == {"revision": 6}
    assert c.kv.compact_revision == 4
    kv = c.kv
    with pytest.raises(CompactedError):
        kv.range(b"a", revision=3)
    # The compact revision itself is still readable, and later ones are unchanged.
    assert kv.range(b"a", revision=4)["kvs"][0]["value"] == b"2"
    assert kv.range(b"b", revision=4)["kvs"][0]["value"] == b"1"
    assert kv.range(b"b", revision=5)["kvs"] == []
    assert kv.range(b"a", b"\x00", revision=5)["count"] == 1
    assert isinstance(c.do("compact", {"revision": 4}), CompactedError)
    assert isinstance(c.do("compact", {"revision": 3}), CompactedError)
    assert isinstance(c.do("compact", {"revision": 99}), FutureRevisionError)
    assert c.do("compact", {"revision": 6}) == {"revision": 6}
    assert kv.range(b"a", revision=6)["kvs"][0]["value"] == b"3"
    assert kv.range(b"b", b"c", revision=6)["kvs"] == []
    for _ in range(100):  # the records go in steps after the apply (compact_step)
        if not kv.compact_step():
            break
    assert not kv.compaction_pending
    # History is really gone: only a's latest entry remains in the index; no change log left.
    cf = c.storage.column_family("kv")
    hist = [k for k in cf.keys() if k[:1] == b"i"]
    assert hist == [b"i" + enc_key(b"a") + (6).to_bytes(8, "big")]
    assert not [k for k in cf.keys() if k[:1] == b"r"]
    c.reopen()
    assert c.kv.compact_revision == 6
    with pytest.raises(CompactedError):
        c.kv.range(b"a", revision=5)


# ---------------------------------------------------------------- txn


def test_txn_compare_and_branches(c: Cluster1) -> None:
    c.put(b"k", b"v1")  # 2
    c.put(b"k", b"v2")  # 3, version 2
    r = c.do("txn", {
        "compare": [["value", "=", b"k", b"", b"v2"], ["version", ">", b"k", b"", 1],
                    ["create", "=", b"k", b"", 2], ["mod", "<", b"k", b"", 4]],
        "success": [["put", {"key": b"k", "value": b"v3", "prev_kv": True}],
                    ["put", {"key": b"other", "value": b"o"}],
                    ["range", {"key": b"k", "range_end": b"\x00"}],
                    ["delete", {"key": b"nothing"}]],
        "failure": [["put", {"key": b"fail", "value": b"x"}]],
    })
    assert isinstance(r, dict)
    assert r["succeeded"] is True
    assert r["revision"] == 4  # the whole txn is one revision
    put_r, put2_r, range_r, del_r = r["responses"]
    assert put_r["prev_kv"]["value"] == b"v2"
    assert put2_r == {}
    # A range after a put in the same txn sees the put.
    assert [(x["key"], x["value"], x["mod_revision"]) for x in range_r["kvs"]] == [
        (b"k", b"v3", 4), (b"other", b"o", 4)]
    assert del_r == {"deleted": 0}
    assert c.kv.range(b"fail")["count"] == 0

    r = c.do("txn", {"compare": [["value", "=", b"missing", b"", b""]],
                     "success": [], "failure": [["delete", {"key": b"k", "prev_kv": True}]]})
    assert r["succeeded"] is False  # type: ignore[index]
    assert r["responses"][0]["deleted"] == 1  # type: ignore[index]
    assert r["revision"] == 5  # type: ignore[index]

    # Version compare on a missing key compares with 0; a txn that changes nothing keeps the revision.
    r = c.do("txn", {"compare": [["version", "=", b"missing", b"", 0]],
                     "success": [["range", {"key": b"other"}]], "failure": []})
    assert r["succeeded"] is True and r["revision"] == 5  # type: ignore[index]
    assert r["responses"][0]["count"] == 1  # type: ignore[index]


def test_txn_range_compare_needs_all_keys(c: Cluster1) -> None:
    c.put(b"p/1", b"a")
    c.put(b"p/2", b"b")
    cmp_ok = [["value", ">", b"p/", b"p0", b"0"]]
    cmp_bad = [["value", "=", b"p/", b"p0", b"a"]]
    assert c.do("txn", {"compare": cmp_ok, "success": [], "failure": []})["succeeded"] is True  # type: ignore[index]
    assert c.do("txn", {"compare": cmp_bad, "success": [], "failure": []})["succeeded"] is False  # type: ignore[index]


def test_txn_on_compacted_revision_changes_nothing(c: Cluster1) -> None:
    c.put(b"a", b"1")
    c.put(b"a", b"2")
    c.do("compact", {"revision": 3})
    r = c.do("txn", {"compare": [], "success": [
        ["put", {"key": b"a", "value": b"new"}], ["range", {"key": b"a", "revision": 2}]],
        "failure": []})
    assert isinstance(r, CompactedError)
    assert c.kv.revision == 3
    assert c.kv.range(b"a")["kvs"][0]["value"] == b"2"
    assert c.kv.applied == c.index  # the entry still counts as applied


# ---------------------------------------------------------------- validation, bad commands


@pytest.mark.parametrize(
    "op, args, exc, message",
    [
        ("get", {"key": b"a"}, UnknownOperationError, "unknown operation 'get'"),
        (7, {}, UnknownOperationError, "unknown operation"),
        ("put", [], BadRequestError, "args must be a map"),
        ("put", {"key": b"a"}, BadRequestError, "missing required argument 'value'"),
        ("put", {"key": "a", "value": b"v"}, BadRequestError, "key must be bytes"),
        ("put", {"key": b"", "value": b"v"}, BadRequestError, "must not be empty"),
        ("put", {"key": b"a", "value": b"v", "ttl": 1}, BadRequestError, "unknown argument 'ttl'"),
        ("put", {"key": b"a", "value": b"v", "prev_kv": 1}, BadRequestError, "must be a bool"),
        ("put", {"key": b"a", "value": b"v", "lease": 5}, BadRequestError, "leases are not supported"),
        ("put", {"key": b"k" * 101, "value": b"v"}, KeyTooLargeError, "101 bytes; the limit is 100"),
        ("put", {"key": b"k", "value": b"v" * 201}, ValueTooLargeError, "201 bytes; the limit is 200"),
        ("range", {"key": b"a", "limit": -1}, BadRequestError, "limit must be an integer"),
        ("range", {"key": b"a", "revision": True}, BadRequestError, "revision must be an integer"),
        ("compact", {"revision": 0}, BadRequestError, "revision must be >= 1"),
        ("txn", {"compare": [["value", "=", b"a"]]}, BadRequestError, "a compare must be"),
        ("txn", {"compare": [["size", "=", b"a", b"", 1]]}, BadRequestError, "compare target"),
        ("txn", {"compare": [["version", "~", b"a", b"", 1]]}, BadRequestError, "compare result"),
        ("txn", {"compare": [["version", "=", b"a", b"", b"1"]]}, BadRequestError, "integer value"),
        ("txn", {"success": [["txn", {}]]}, UnknownOperationError, "inside a txn"),
        ("txn", {"success": [["put", {"key": b"a"}]]}, BadRequestError, "missing required"),
        ("txn", {"success": [["put", {"key": b"a", "value": b"1"}], ["put", {"key": b"a", "value": b"2"}]]},
         BadRequestError, "duplicate key"),
        ("txn", {"failure": [["delete", {"key": b"a", "range_end": b"c"}], ["put", {"key": b"b", "value": b"2"}]]},
         BadRequestError, "both put and deleted"),
        ("txn", {"success": [["range", {"key": b"a"}]] * 5}, BadRequestError, "too many operations"),
    ],
)
def test_validate_rejects_bad_commands(tmp_path: Path, op: object, args: object,
                                       exc: type, message: str) -> None:
    s = Storage.open(str(tmp_path / "m"), cluster_id=1, member_id=2, name="m")
    try:
        kv = KV(s, max_key_bytes=100, max_value_bytes=200, max_txn_ops=4)
        with pytest.raises(exc, match=message):
            kv.validate(op, args)  # type: ignore[arg-type]
        with pytest.raises(exc):
            kv.encode_command(op, args)  # type: ignore[arg-type]
        assert (kv.revision, kv.applied) == (1, 0)
    finally:
        s.close()


def test_valid_commands_pass_validation(c: Cluster1) -> None:
    c.kv.validate("put", {"key": b"a", "value": b"", "prev_kv": False, "lease": 0})
    c.kv.validate("range", {"key": b"a", "range_end": b"\x00", "limit": 5, "serializable": True})
    c.kv.validate("txn", {"compare": [], "success": [], "failure": []})
    data = c.kv.encode_command("delete", {"key": b"a", "range_end": b"b"})
    assert msgpack.unpackb(data, raw=False) == ["delete", {"key": b"a", "range_end": b"b"}]


@pytest.mark.parametrize("data", [
    b"\xc1",  # never valid msgpack
    msgpack.packb("put"),
    msgpack.packb(["put"]),
    msgpack.packb(["nope", {}]),
    msgpack.packb(["put", {"key": "str", "value": b"v"}]),
    msgpack.packb([1, 2, 3]),
])
def test_bad_committed_entry_returns_error_and_advances(c: Cluster1, data: bytes) -> None:
    c.put(b"a", b"1")
    res = c.kv.apply([(2, 1, 0, data), (3, 1, 0, c.kv.encode_command("put", {"key": b"a", "value": b"2"}))])
    assert isinstance(res[0][1], BadRequestError)
    assert res[1][1] == {"revision": 3}
    assert c.kv.applied == 3


def test_apply_ignores_size_limits_of_this_member(tmp_path: Path) -> None:
    # A leader with larger limits accepted this; every member must apply it the same way.
    s = Storage.open(str(tmp_path / "m"), cluster_id=1, member_id=2, name="m")
    try:
        big = KV(s)
        data = big.encode_command("put", {"key": b"k", "value": b"v" * 500})
        small = KV(s, max_value_bytes=10)
        assert small.apply([(1, 1, 0, data)]) == [(1, {"revision": 2})]
    finally:
        s.close()


def test_range_rejects_bad_arguments(c: Cluster1) -> None:
    with pytest.raises(BadRequestError):
        c.kv.range("a")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        c.kv.range(b"a", limit=-2)


# ---------------------------------------------------------------- snapshot / restore


def test_snapshot_restore_round_trip(tmp_path: Path) -> None:
    a = Cluster1(tmp_path / "a")
    b = Cluster1(tmp_path / "b")
    try:
        for i in range(30):
            a.put(b"k%02d" % i, b"v%d" % i)
        a.do("delete", {"key": b"k05"})
        a.put(b"k01", b"changed")
        a.do("compact", {"revision": 10})
        b.put(b"stale", b"x")  # must vanish on restore
        data = a.kv.snapshot_data()
        b.kv.restore(data, a.kv.applied)
        for cl in (b, ):
            assert (cl.kv.applied, cl.kv.revision, cl.kv.compact_revision) == (
                a.kv.applied, a.kv.revision, a.kv.compact_revision)
        full = a.kv.range(b"\x00", b"\x00")
        assert b.kv.range(b"\x00", b"\x00") == full
        assert b.kv.range(b"stale")["count"] == 0
        assert b.kv.range(b"k01", revision=12) == a.kv.range(b"k01", revision=12)
        b.reopen()
        assert b.kv.range(b"\x00", b"\x00") == full
        assert b.kv.applied == a.kv.applied
        # Both continue identically from here.
        e = a.entry("put", {"key": b"k99", "value": b"n"})
        b.index = a.index
        assert a.kv.apply([e]) == b.kv.apply([e])
    finally:
        a.storage.close()
        b.storage.close()


@pytest.mark.parametrize("data", [
    b"",
    b"\xc1\xc1",
    msgpack.packb("other") + msgpack.packb(1) + msgpack.packb(0),
    msgpack.packb("fastraft-kv-snapshot") + msgpack.packb(1) + msgpack.packb(2) + msgpack.packb(b"c"),
    msgpack.packb("fastraft-kv-snapshot") + msgpack.packb(1) + msgpack.packb(1)
    + msgpack.packb(b"zzz") + msgpack.packb(b"v"),
    msgpack.packb("fastraft-kv-snapshot") + msgpack.packb(1) + msgpack.packb(0),  # no metadata
])
def test_restore_rejects_bad_data_and_changes_nothing(c: Cluster1, data: bytes) -> None:
    c.put(b"a", b"1")
    before = c.kv.snapshot_data()
    with pytest.raises(ValueError):
        c.kv.restore(data, 99)
    assert c.kv.snapshot_data() == before
    assert (c.kv.applied, c.kv.revision) == (1, 2)
