"""KV.apply's fast path for plain puts must give exactly what the generic path gives.

The fast path (a put with ``key`` and ``value``, and at most ``prev_kv: False`` and ``lease: 0``
besides, as clients send it) skips the generic validation and the per-op dispatch; these tests pin that it writes the same records (current, history, change log,
meta) and returns the same results, whether the entries come one per apply() call or many in one
batch where later entries must see earlier ones' pending writes."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from fastraft.errors import BadRequestError
from fastraft.storage import mvcc as kv_module
from fastraft.storage.mvcc import KV, enc_key
from fastraft.storage.logstore import Storage

_pk = msgpack.Packer(use_bin_type=True).pack


def cmd(op: object, args: object) -> bytes:
    # Packed by hand (not encode_command) so that malformed commands reach apply too.
    return _pk([op, args])


def put(key: bytes, value: bytes, **extra: object) -> bytes:
    return cmd("put", {"key": key, "value": value, **extra})


def p(k: bytes, v: bytes) -> bytes:
    """A plain put in the form fastraft's clients send (explicit defaults)."""
    return put(k, v, prev_kv=False, lease=0)


def script() -> list[bytes]:
    """A command sequence touching every apply path."""
    return [
        p(b"a", b"1"),
        put(b"a", b"2"),                     # same key twice in a batch: version 2 (bare form)
        p(b"b\x00x", b"nul"),                # a NUL in the key: escaped history key
        cmd("delete", {"key": b"a"}),
        p(b"a", b"3"),                       # recreated after a delete in the same batch
        p(b"a", b"4"),
        put(b"a", b"5", prev_kv=True),       # generic path, must see the fast path's writes
        cmd("txn", {"compare": [["version", "=", b"a", b"", 3]],
                    "success": [["put", {"key": b"c", "value": b"t"}],
                                ["delete", {"key": b"b\x00x"}]],
                    "failure": []}),
        put(b"c", b"after-txn", lease=0),    # one default given, one left out
        cmd("range", {"key": b"a", "revision": 3}),  # history written earlier in the batch
        b"\xc1garbage",                      # not msgpack
        cmd("put", {"key": b"", "value": b"x"}),          # empty key: error, no change
        cmd("put", {"key": "str", "value": b"x"}),        # str key: error, no change
        cmd("put", {"key": b"k", "value": 7}),            # non-bytes value: error
        cmd("put", {"key": b"k", "valu": b"x"}),          # misspelt argument, two args
        cmd("put", {"key": b"k", "value": b"x", "lease": 5}),  # leases refused
        cmd("put", {"key": b"k", "value": b"x", "prev_kv": 0}),  # prev_kv not a bool
        cmd("put", [b"k", b"x"]),                         # args not a map
        cmd("put", {"key": b"k"}),                        # missing value, one arg
        cmd("PUT", {"key": b"k", "value": b"x"}),         # unknown op
        _pk(["put", {"key": b"k", "value": b"x"}, 1]),    # not [op, args]
        p(b"d", b"x" * 300),
        cmd("compact", {"revision": 4}),
        p(b"a", b"6"),
        cmd("delete", {"key": b"a", "range_end": b"\x00", "prev_kv": True}),
        p(b"a", b"7"),
    ]


def normalize(results: list[tuple[int, object]]) -> list[tuple[int, object]]:
    return [(i, (type(r).__name__, str(r)) if isinstance(r, Exception) else r)
            for i, r in results]


def run(path: Path, datas: list[bytes], batch: int) -> tuple[list, bytes, int]:
    """Apply ``datas`` (with a no-op entry in front) ``batch`` entries per call."""
    s = Storage.open(str(path), cluster_id=1, member_id=2, name="m")
    try:
        kv = KV(s)
        entries = [(1, 1, 0, b"")] + [(i + 2, 1, 0, d) for i, d in enumerate(datas)]
        results: list = []
        for j in range(0, len(entries), batch):
            results += kv.apply(entries[j:j + batch])
        assert kv.applied == len(entries)
        return normalize(results), kv.snapshot_data(), kv.revision
    finally:
        s.close()


def count_generic(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    orig = KV._apply_cmd

    def counted(self: KV, buf: object, c: object) -> object:
        calls[0] += 1
        return orig(self, buf, c)  # type: ignore[arg-type]

    monkeypatch.setattr(KV, "_apply_cmd", counted)
    return calls


def test_fast_path_equals_generic_path_in_any_batching(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = script()
    calls = count_generic(monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(kv_module, "_plain_put", lambda args: None)  # every command the generic way
        ref = run(tmp_path / "g1", cmds, 1)
        generic100 = run(tmp_path / "g100", cmds, 100)
    n_cmds = len(cmds) - 1  # the one undecodable entry is answered before any dispatch
    assert calls[0] == 2 * n_cmds
    calls[0] = 0
    runs = {f"fast/{b}": run(tmp_path / f"f{b}", cmds, b) for b in (1, 4, 100)}
    n_plain = sum(1 for d in cmds if is_plain_put(d))
    assert n_plain == 9
    # In each of the 3 runs, the plain puts took the fast path and nothing else did.
    assert calls[0] == 3 * (n_cmds - n_plain)
    runs["generic/100"] = generic100
    for name, got in runs.items():
        assert got[0] == ref[0], name
        assert got[1] == ref[1], name  # byte-identical state: every record and the meta key
        assert got[2] == ref[2], name
    # Spot checks of the reference itself, so that "equal" is not "equally wrong".
    results = dict(ref[0])
    assert ref[2] == 14
    assert results[6] == {"revision": 6}  # "a" recreated after the delete at revision 5
    assert results[8]["prev_kv"]["version"] == 2 and results[8]["prev_kv"]["value"] == b"4"
    assert results[9]["succeeded"] is True and results[9]["revision"] == 9
    assert results[11]["kvs"][0]["value"] == b"2"  # "a" as of revision 3
    errors = [results[i][0] for i in range(12, 23)]
    assert errors == ["BadRequestError"] * 9 + ["UnknownOperationError", "BadRequestError"]
    assert results[23] == {"revision": 11} and results[24] == {"revision": 11}
    assert results[26]["deleted"] == 3 and results[27] == {"revision": 14}


def is_plain_put(d: bytes) -> bool:
    """Whether ``d`` is a put with exactly a non-empty bytes key and a bytes value."""
    try:
        c = msgpack.unpackb(d, raw=False)
    except ValueError:
        return False
    if not (isinstance(c, list) and len(c) == 2 and c[0] == "put" and isinstance(c[1], dict)):
        return False
    a = c[1]
    extra = set(a) - {"key", "value"}
    return ({"key", "value"} <= set(a) and extra <= {"prev_kv", "lease"}
            and a.get("prev_kv", False) is False
            and type(a.get("lease", 0)) is int and a.get("lease", 0) == 0
            and isinstance(a["key"], bytes) and a["key"] != b"" and isinstance(a["value"], bytes))


def test_same_key_put_twice_then_deleted_in_one_batch(tmp_path: Path) -> None:
    s = Storage.open(str(tmp_path / "m"), cluster_id=1, member_id=2, name="m")
    try:
        kv = KV(s)
        res = kv.apply([(1, 1, 0, put(b"k", b"v1")), (2, 1, 0, put(b"k", b"v2")),
                        (3, 1, 0, cmd("delete", {"key": b"k"})), (4, 1, 0, put(b"k", b"v3"))])
        assert [r for _i, r in res][:2] == [{"revision": 2}, {"revision": 3}]
        assert res[2][1] == {"revision": 4, "deleted": 1}
        assert res[3][1] == {"revision": 5}
        cf = kv._cf
        hk = b"i" + enc_key(b"k")
        unpack = lambda b: msgpack.unpackb(b, raw=False)  # noqa: E731
        assert unpack(cf[hk + (2).to_bytes(8, "big")]) == [2, 2, 1, 0, b"v1"]
        assert unpack(cf[hk + (3).to_bytes(8, "big")]) == [2, 3, 2, 0, b"v2"]
        assert cf[hk + (4).to_bytes(8, "big")] == b""  # tombstone
        assert unpack(cf[b"ck"]) == [5, 5, 1, 0, b"v3"]  # created anew
        for rev in (2, 3, 4, 5):
            assert cf[b"r" + rev.to_bytes(8, "big") + b"\x00" * 4] == b"k"
        assert unpack(cf[b"m"]) == [4, 5, 0]
        # Replaying the same batch (restart) changes nothing.
        before = kv.snapshot_data()
        assert kv.apply([(4, 1, 0, put(b"k", b"other"))]) == []
        assert kv.snapshot_data() == before
    finally:
        s.close()


def test_bad_put_in_a_batch_changes_nothing(tmp_path: Path) -> None:
    s = Storage.open(str(tmp_path / "m"), cluster_id=1, member_id=2, name="m")
    try:
        kv = KV(s)
        res = kv.apply([(1, 1, 0, put(b"k", b"v1")), (2, 1, 0, cmd("put", {"key": b"", "value": b"x"})),
                        (3, 1, 0, cmd("put", {"key": b"k", "value": "str"}))])
        assert res[0][1] == {"revision": 2}
        assert isinstance(res[1][1], BadRequestError) and isinstance(res[2][1], BadRequestError)
        assert kv.revision == 2 and kv.applied == 3
        assert kv.range(b"k")["kvs"][0]["value"] == b"v1"
        assert kv._cf.get(b"c") is None  # the empty key wrote nothing
    finally:
        s.close()
