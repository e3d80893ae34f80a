"""Installing a received snapshot (storage/logstore.py, "Installing a received snapshot"):
staged SST
files, ingest into a new KV generation, and one WriteBatch that switches to it.

A child process does the install and dies (``os._exit``: no close, no flush, as kill -9) at
each step; the data dir, reopened, holds either the whole old state or the whole new one (KV
generation, the KV's applied index and keys, the member list, the snapshot record, the log),
and nothing staged is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import rocksdict

from fastraft.storage.mvcc import KV
from fastraft.raft.core import Snapshot
from fastraft.storage.logstore import Install, Storage

CID, MID = 7, 9
OLD_MEMBERS = {"9": {"name": "m", "peer_urls": [], "client_urls": [], "is_learner": False}}
NEW_MEMBERS = {**OLD_MEMBERS,
               "a": {"name": "n", "peer_urls": [], "client_urls": [], "is_learner": False}}
SNAP_INDEX = 1000

CHILD = r"""
import os, sys
import msgpack
from fastraft.storage.mvcc import KV
from fastraft.raft.core import Snapshot
from fastraft.storage.logstore import Install, Storage
src, dst, point = sys.argv[1], sys.argv[2], sys.argv[3]
s = Storage.open(src, cluster_id=1, member_id=2, name="src")
chunks = list(KV(s).snapshot_chunks(KV(s).snapshot_view(), chunk_bytes=4096))
s.close()
st = Storage.open(dst, cluster_id=7, member_id=9, name="m")
stage = st.new_stage()
meta = None
for i, c in enumerate(chunks):
    pairs = KV.parse_chunk(c)
    meta = dict(pairs).get(b"m", meta)
    stage.add(pairs)
    if point == "staging" and i == len(chunks) // 2:
        os._exit(0)
stage.finish()
st.prepare_install(stage)
if point == "ingested":
    os._exit(0)
key, value = KV.install_meta(meta, 1000)
members = {"9": {"name": "m", "peer_urls": [], "client_urls": [], "is_learner": False},
           "a": {"name": "n", "peer_urls": [], "client_urls": [], "is_learner": False}}
st.save((3, 9, 1000), [], Snapshot(1000, 3, (9, 10), (), b"FRSTAGED"),
        Install(stage.gen, 1000, key, value, members))
if point == "saved":
    os._exit(0)
st.sync()
if point == "synced":
    os._exit(0)
st.activate_kv(stage.gen)
os._exit(0)
"""


def _prepare(tmp_path: Path) -> tuple[str, str]:
    src = str(tmp_path / "src")
    s = Storage.open(src, cluster_id=1, member_id=2, name="src")
    kv = KV(s)
    kv.apply([(i + 1, 1, 0, kv.encode_command("put", {"key": b"new/%04d" % i, "value": b"v" * 300}))
              for i in range(300)])
    s.sync()
    s.close()
    dst = str(tmp_path / "dst")
    st = Storage.open(dst, cluster_id=CID, member_id=MID, name="m")
    kv = KV(st)
    st.save((2, 9, 50), [(i, 2, 0, b"") for i in range(1, 51)])
    kv.apply([(i, 2, 0, kv.encode_command("put", {"key": b"old/%02d" % i, "value": b"x"}))
              for i in range(1, 51)])
    st.put_meta("members", OLD_MEMBERS)
    st.sync()
    st.close()
    return src, dst


def _read(dst: str) -> dict[str, Any]:
    st = Storage.open(dst, cluster_id=CID, member_id=MID, name="m")
    try:
        kv = KV(st)
        hs, snap, entries = st.initial_state()
        return {"gen": st.kv_gen, "applied": kv.applied, "members": st.get_meta("members"),
                "keys": kv.range(b"\x00", b"\x00", count_only=True)["count"],
                "first": kv.range(b"\x00", b"\x00", limit=1)["kvs"][0]["key"],
                "snap": snap, "log": len(entries), "hs": hs,
                "cfs": sorted(n for n in rocksdict.Rdict.list_cf(
                    st.db.path(), rocksdict.Options(raw_mode=True)) if n.startswith("kv")),
                "staged": [n for n in os.listdir(os.path.join(dst, "snap"))
                           if n.startswith("stage-")]}
    finally:
        st.close()


OLD = {"gen": 0, "applied": 50, "members": OLD_MEMBERS, "keys": 50, "first": b"old/01",
       "snap": None, "log": 50, "hs": (2, 9, 50), "cfs": ["kv"], "staged": []}
NEW = {"gen": 1, "applied": SNAP_INDEX, "members": NEW_MEMBERS, "keys": 300,
       "first": b"new/0000", "snap": (SNAP_INDEX, 3, (9, 10), ()), "log": 0,
       "hs": (3, 9, SNAP_INDEX), "cfs": ["kv.1"], "staged": []}


@pytest.mark.parametrize("point,expect", [("staging", OLD), ("ingested", OLD), ("saved", NEW),
                                          ("synced", NEW), ("activated", NEW)])
def test_a_crash_at_any_step_of_an_install_leaves_the_old_or_the_new_state(
        tmp_path: Path, point: str, expect: dict) -> None:
    src, dst = _prepare(tmp_path)
    assert _read(dst) == OLD
    r = subprocess.run([sys.executable, "-c", CHILD, src, dst, point], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    # "saved": the batch was written (not fsynced) before the process died; the OS still has
    # it. After a power cut it could be gone: then the old state, never a mix.
    assert _read(dst) == expect
    assert _read(dst) == expect  # and stays so on the next open (the cleanup was durable)


def test_install_needs_its_snapshot_and_an_ingested_stage(tmp_path: Path) -> None:
    _src, dst = _prepare(tmp_path)
    st = Storage.open(dst, cluster_id=CID, member_id=MID, name="m")
    try:
        stage = st.new_stage()
        stage.add([(b"m", msgpack.packb([5, 2, 0]))])
        with pytest.raises(ValueError):
            st.prepare_install(stage)  # not finished
        with pytest.raises(ValueError):
            stage.add([(b"c", b"")])  # keys must ascend ("c" < "m")
        stage.finish()
        st.prepare_install(stage)
        inst = Install(stage.gen, SNAP_INDEX, *KV.install_meta(msgpack.packb([5, 2, 0]),
                                                               SNAP_INDEX), NEW_MEMBERS)
        with pytest.raises(ValueError):
            st.save(None, [], None, inst)
        with pytest.raises(ValueError):
            st.save(None, [], Snapshot(SNAP_INDEX + 1, 3, (9,), (), b"x"), inst)
        st.discard_stage(stage)
    finally:
        st.close()
    assert _read(dst) == OLD
