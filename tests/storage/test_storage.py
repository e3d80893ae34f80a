"""Tests of fastraft.storage.logstore: data dir identity, the raft log, snapshots, durability."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import msgpack
import pytest

from fastraft.errors import DataDirError
from fastraft.storage.logstore import FORMAT_VERSION, ID_FILE, KEEP_SNAPSHOTS, Storage

# Tests only: raft/core.py defines the real Snapshot; storage relies on duck typing.
Snap = namedtuple("Snap", "index term voters learners data")

CID, MID, NAME = 0xC1A55, 0xABCDEF, "alpha"


def open_store(path: Path, **kw: object) -> Storage:
    args = {"cluster_id": CID, "member_id": MID, "name": NAME}
    args.update(kw)
    return Storage.open(str(path), **args)  # type: ignore[arg-type]


def fingerprint(path: Path) -> list[tuple]:
    """Everything observable about a tree: names, sizes, contents, mtimes."""
    out: list[tuple] = []
    for root, dirs, files in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            out.append(("d", os.path.relpath(p, path), os.stat(p).st_mtime_ns))
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            out.append(("f", os.path.relpath(p, path), st.st_size, st.st_mtime_ns, digest))
    return sorted(out)


def ents(first: int, last: int, term: int) -> list[tuple]:
    return [(i, term, 0, b"e%d-t%d" % (i, term)) for i in range(first, last + 1)]


# ---------------------------------------------------------------- identity and refusals


def test_new_dir_is_created_with_identity(tmp_path: Path) -> None:
    d = tmp_path / "m1"
    assert Storage.read_identity(str(d)) is None
    s = open_store(d)
    try:
        assert (d / ID_FILE).is_file()
        assert s.initial_state() == ((0, 0, 0), None, [])
    finally:
        s.close()
    ident = Storage.read_identity(str(d))
    assert ident == {"cluster_id": CID, "member_id": MID, "name": NAME, "format": FORMAT_VERSION}


def test_empty_existing_dir_is_accepted(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    assert Storage.read_identity(str(d)) is None
    s = open_store(d)
    s.close()
    assert Storage.read_identity(str(d))["member_id"] == MID  # type: ignore[index]


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    s = open_store(d)
    s.save((3, MID, 2), ents(1, 5, 3))
    s.sync()
    s.close()
    return d


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"cluster_id": 0xBEEF}, f"belongs to cluster {CID:x}, not beef"),
        ({"member_id": 0x1234, "name": "beta"}, f"belongs to member 'alpha' ({MID:x}), not 'beta' (1234)"),
        ({"name": "beta"}, "belongs to member 'alpha'"),
        ({"member_id": 0x99}, f"({MID:x}), not 'alpha' (99)"),
    ],
)
def test_refuses_other_cluster_or_member_and_changes_nothing(
    existing: Path, kw: dict, message: str
) -> None:
    before = fingerprint(existing)
    with pytest.raises(DataDirError) as ei:
        open_store(existing, **kw)
    assert message in str(ei.value)
    assert fingerprint(existing) == before
    s = open_store(existing)  # the rightful owner still opens it, data intact
    try:
        assert s.initial_state()[2] == ents(1, 5, 3)
    finally:
        s.close()


def test_refuses_newer_format_and_changes_nothing(existing: Path) -> None:
    ident = Storage.read_identity(str(existing))
    assert ident is not None
    ident["format"] = FORMAT_VERSION + 1
    (existing / ID_FILE).write_bytes(msgpack.packb(ident))
    before = fingerprint(existing)
    with pytest.raises(DataDirError, match=f"format version {FORMAT_VERSION + 1}, newer"):
        open_store(existing)
    assert fingerprint(existing) == before


def test_refuses_foreign_non_empty_dir(tmp_path: Path) -> None:
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "notes.txt").write_text("someone else's")
    before = fingerprint(d)
    with pytest.raises(DataDirError, match="not a fastraft data dir"):
        open_store(d)
    with pytest.raises(DataDirError, match="not a fastraft data dir"):
        Storage.read_identity(str(d))
    assert fingerprint(d) == before


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\xc1\xc1garbage", "cannot be decoded"),
        (msgpack.packb([1, 2, 3]), "is not a map"),
        (msgpack.packb({"format": 1, "cluster_id": CID}), "missing or invalid fields"),
        (msgpack.packb({"format": 0, "cluster_id": CID, "member_id": MID, "name": NAME}),
         "missing or invalid fields"),
    ],
)
def test_refuses_corrupt_identity(existing: Path, blob: bytes, message: str) -> None:
    (existing / ID_FILE).write_bytes(blob)
    before = fingerprint(existing)
    with pytest.raises(DataDirError, match="corrupt") as ei:
        open_store(existing)
    assert message in str(ei.value)
    assert fingerprint(existing) == before


def test_refuses_unreadable_identity(tmp_path: Path) -> None:
    d = tmp_path / "odd"
    (d / ID_FILE).mkdir(parents=True)  # a directory where the id file should be
    before = fingerprint(d)
    with pytest.raises(DataDirError, match="unreadable"):
        open_store(d)
    assert fingerprint(d) == before


def test_refuses_a_file_as_data_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(DataDirError, match="not a directory"):
        open_store(f)
    assert f.read_bytes() == b"x"


@pytest.mark.parametrize("kw", [{"cluster_id": 0}, {"member_id": -1}, {"name": ""},
                                {"member_id": 1 << 64}])
def test_bad_arguments_create_nothing(tmp_path: Path, kw: dict) -> None:
    d = tmp_path / "never"
    with pytest.raises(ValueError):
        open_store(d, **kw)
    assert not d.exists()


# ---------------------------------------------------------------- log, hard state


def test_save_and_restart_recovery(tmp_path: Path) -> None:
    d = tmp_path / "m"
    s = open_store(d)
    s.save((1, MID, 0), ents(1, 3, 1))
    s.save((2, 0, 3), ents(4, 6, 2))
    s.save(None, [])  # nothing to do is fine
    s.sync()
    assert s.last_index() == 6
    s.close()
    s = open_store(d)
    try:
        hs, snap, entries = s.initial_state()
        assert hs == (2, 0, 3)
        assert snap is None
        assert entries == ents(1, 3, 1) + ents(4, 6, 2)
        assert s.last_index() == 6
    finally:
        s.close()


def test_conflicting_suffix_is_truncated(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save((1, 0, 0), ents(1, 10, 1))
        # A new leader's entries from index 4 replace ours from 4 on, including 6..10.
        s.save((2, 0, 0), ents(4, 5, 2))
        assert s.initial_state()[2] == ents(1, 3, 1) + ents(4, 5, 2)
        assert s.last_index() == 5
        # Overwriting a middle range with a longer one: nothing of the old tail remains.
        s.save(None, ents(2, 7, 3))
        assert s.initial_state()[2] == ents(1, 1, 1) + ents(2, 7, 3)
    finally:
        s.close()
    s = open_store(tmp_path / "m")
    try:
        assert s.initial_state()[2] == ents(1, 1, 1) + ents(2, 7, 3)
    finally:
        s.close()


def test_non_contiguous_entries_are_refused_and_change_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save((1, 0, 0), ents(1, 3, 1))
        with pytest.raises(ValueError, match="not contiguous"):
            s.save((9, 9, 9), [(4, 1, 0, b"a"), (6, 1, 0, b"b")])
        assert s.initial_state() == ((1, 0, 0), None, ents(1, 3, 1))
    finally:
        s.close()


def test_entry_types_and_binary_data_round_trip(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        e = [(1, 1, 0, b""), (2, 1, 1, msgpack.packb([0, 7, b"ctx"])), (3, 1, 0, bytes(range(256)))]
        s.save(None, e)
        assert s.initial_state()[2] == e
    finally:
        s.close()


# ---------------------------------------------------------------- snapshots


def test_snapshot_matching_term_keeps_following_entries(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save((1, 0, 0), ents(1, 10, 1))
        s.save((1, 0, 6), [], Snap(6, 1, (1, 2, 3), (4,), b"state@6"))
        hs, snap, entries = s.initial_state()
        assert snap == (6, 1, (1, 2, 3), (4,))
        assert entries == ents(7, 10, 1)
        assert s.load_snapshot_data() == b"state@6"
        assert (tmp_path / "m" / "snap" / f"{6:016x}.snap").read_bytes() == b"state@6"
    finally:
        s.close()


def test_snapshot_with_other_term_replaces_whole_log(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save((1, 0, 0), ents(1, 10, 1))
        s.save((3, 0, 8), ents(9, 9, 3), Snap(8, 3, (1,), (), b"leader-state"))
        _hs, snap, entries = s.initial_state()
        assert snap == (8, 3, (1,), ())
        assert entries == ents(9, 9, 3)
        assert s.last_index() == 9
    finally:
        s.close()
    s = open_store(tmp_path / "m")
    try:
        assert s.initial_state() == ((3, 0, 8), (8, 3, (1,), ()), ents(9, 9, 3))
        assert s.load_snapshot_data() == b"leader-state"
    finally:
        s.close()


def test_save_snapshot_compacts_log_and_keeps_newest_files(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        assert s.load_snapshot_data() is None
        s.save((1, 0, 20), ents(1, 20, 1))
        for idx in (4, 8, 12, 16):
            s.save_snapshot(idx, 1, (1, 2), (), b"data%d" % idx)
        _hs, snap, entries = s.initial_state()
        assert snap == (16, 1, (1, 2), ())
        assert entries == ents(17, 20, 1)
        assert s.load_snapshot_data() == b"data16"
        files = sorted(os.listdir(tmp_path / "m" / "snap"))
        assert files == [f"{i:016x}.snap" for i in (8, 12, 16)][-KEEP_SNAPSHOTS:]
        with pytest.raises(ValueError, match="older"):
            s.save_snapshot(10, 1, (1, 2), (), b"old")
        assert s.load_snapshot_data() == b"data16"
    finally:
        s.close()


# ---------------------------------------------------------------- metadata, size


def test_meta_values_persist(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    members = [{"id": 1, "name": "a", "peer_urls": ["http://127.0.0.1:2380"]}]
    s.put_meta("members", members)
    assert s.get_meta("members") == members
    assert s.get_meta("absent", 5) == 5
    s.sync()
    s.close()
    s = open_store(tmp_path / "m")
    try:
        assert s.get_meta("members") == members
        # Node metadata must not collide with storage's own records.
        s.put_meta("hardstate", 1)
        assert s.initial_state()[0] == (0, 0, 0)
    finally:
        s.close()


def test_db_size_counts_data(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        before = s.db_size()
        assert before > 0
        s.save(None, [(i, 1, 0, os.urandom(1024)) for i in range(1, 201)])
        s.sync()
        assert s.db_size() >= before + 200 * 1024
    finally:
        s.close()


def test_closed_storage_refuses_writes(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.save(None, ents(1, 1, 1))


# ---------------------------------------------------------------- kill -9 durability

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from fastraft.storage.logstore import Storage
    from fastraft.storage.mvcc import KV
    s = Storage.open({path!r}, cluster_id={cid}, member_id={mid}, name={name!r})
    kv = KV(s)
    entries = [(i, 2, 0, kv.encode_command("put", {{"key": b"k%d" % i, "value": b"v%d" % i}}))
               for i in range(1, 501)]
    s.save((2, {mid}, 500), entries)
    kv.apply(entries)
    s.sync()
    sys.stdout.write("synced\\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_after_sync_keeps_everything(tmp_path: Path) -> None:
    d = tmp_path / "killed"
    code = _CHILD.format(path=str(d), cid=CID, mid=MID, name=NAME)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert proc.stdout == b"synced\n"
    from fastraft.storage.mvcc import KV

    s = open_store(d)
    try:
        hs, snap, entries = s.initial_state()
        assert hs == (2, MID, 500)
        assert snap is None
        assert [e[0] for e in entries] == list(range(1, 501))
        kv = KV(s)
        assert kv.applied == 500
        assert kv.revision == 501
        assert kv.range(b"k", b"l", count_only=True)["count"] == 500
        assert kv.range(b"k250")["kvs"][0]["value"] == b"v250"
    finally:
        s.close()


def test_refuses_a_log_that_lost_committed_entries_and_changes_nothing(tmp_path: Path) -> None:
    """The hard state says entries up to 5 were committed but the log ends at 2 (its tables
    lost, as a partly truncated MANIFEST leaves it): refused before the read-write open."""
    import rocksdict

    d = tmp_path / "m"
    s = open_store(d)
    s.save((1, MID, 5), ents(1, 5, 1))
    s.sync()
    s.close()
    db_path = str(d / "db")
    cfs = rocksdict.Rdict.list_cf(db_path, rocksdict.Options(raw_mode=True))
    db = rocksdict.Rdict(db_path, rocksdict.Options(raw_mode=True),
                         column_families={n: rocksdict.Options(raw_mode=True) for n in cfs})
    log = db.get_column_family("log")
    for i in (3, 4, 5):
        del log[i.to_bytes(8, "big")]
    log.close()
    db.close()
    before = [(p, h) for p, h in ((x[1], x[-1]) for x in fingerprint(d) if x[0] == "f")]
    with pytest.raises(DataDirError, match="ends at 2 .* up to 5 were committed"):
        open_store(d)
    assert [(x[1], x[-1]) for x in fingerprint(d) if x[0] == "f"] == before
