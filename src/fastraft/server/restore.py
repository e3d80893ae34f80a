"""``fastraft snapshot restore``: a new member's data dir built from a backup file.

The file (client/snapfile.py) is checked completely first (its SHA-256, its structure, the
chunks against their end record); nothing is created for a file that fails. Then its chunks are
staged as SST files and ingested into a new KV generation exactly as a snapshot streamed from a
leader is (storage/logstore.py: ``SnapshotStage``, ``prepare_install``, ``save(..., install=)``),
memory bounded by one chunk.

The data dir gets a NEW identity: the members, member ids and cluster id come from the flags
(``--initial-cluster``, ``--initial-cluster-token``), as with etcd's restore; nothing of the old
cluster's membership is kept. Its Raft state is a snapshot at index 1, term 1, whose voters are
the new members (each member of the new cluster restores the same file with its own ``--name``,
so all start from the same snapshot, and the first leader's entries follow it). The store keeps
the file's revision, compact revision and history, so revisions go on where they were (as etcd
keeps them).

The dir is built beside its destination (``DIR.restoring``) and renamed into place only once it
is complete and synced: a restore that fails or is interrupted leaves no ``DIR``. An existing,
non-empty ``DIR`` is never touched.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from fastraft.client.snapfile import SnapshotInfo, iter_chunks, verify_snapshot
from fastraft.config import ServerConfig, build_config
from fastraft.errors import DataDirError, SnapshotFileError
from fastraft.raft.core import Snapshot
from fastraft.server.membership import Member, members_to_wire
from fastraft.storage.logstore import ID_FILE, Install, Storage, fsync_dir
from fastraft.storage.mvcc import KV

__all__ = ["restore_snapshot", "RestoreResult", "RESTORED_INDEX", "RESTORED_TERM"]

# The new cluster's Raft state starts from a snapshot at this index and term (the same on every
# member restored from one file).
RESTORED_INDEX = 1
RESTORED_TERM = 1
_TMP_SUFFIX = ".restoring"


@dataclass(frozen=True)
class RestoreResult:
    cfg: ServerConfig  # the new member's identity (member and cluster ids)
    info: SnapshotInfo  # the file restored


def restore_config(path: str, *, name: str, initial_cluster: str | None,
                   initial_advertise_peer_urls: str | None, data_dir: str | None,
                   initial_cluster_token: str | None) -> ServerConfig:
    """The new member's settings from etcdctl restore's flags (FlagError when one is bad)."""
    flags: dict[str, str | None] = {
        "name": name, "initial-cluster": initial_cluster, "data-dir": data_dir,
        "initial-advertise-peer-urls": initial_advertise_peer_urls,
        "initial-cluster-token": initial_cluster_token,
    }
    if initial_advertise_peer_urls:
        # Only the identity matters here; the member listens where `serve` is told later.
        flags["listen-peer-urls"] = initial_advertise_peer_urls.split(",")[0]
    # The environment is not read: a restore's identity comes from its command line only.
    return build_config(flags, env={}, config_file="")


def restore_snapshot(path: str, cfg: ServerConfig) -> RestoreResult:
    """Build ``cfg.data_dir`` from the snapshot file ``path`` (see the module docstring).

    Raises SnapshotFileError for a bad file and DataDirError when the data dir exists."""
    data_dir = cfg.data_dir
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise DataDirError(f"data dir {data_dir!r} already exists; refusing to overwrite it "
                           f"(restore into a new directory)")
    info = verify_snapshot(path)  # the whole file, before anything is created
    tmp = data_dir.rstrip(os.sep) + _TMP_SUFFIX
    if os.path.exists(tmp):
        if os.path.isdir(tmp) and (not os.listdir(tmp) or ID_FILE in os.listdir(tmp)):
            shutil.rmtree(tmp)  # left by an interrupted restore
        else:
            raise DataDirError(f"{tmp!r} exists and is not a restore in progress; move it away")
    try:
        _build(tmp, path, info, cfg)
        if os.path.exists(data_dir):
            os.rmdir(data_dir)  # empty (checked above): the restored dir takes its place
        os.replace(tmp, data_dir)
        fsync_dir(os.path.dirname(os.path.abspath(data_dir)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RestoreResult(cfg, info)


def _build(tmp: str, path: str, info: SnapshotInfo, cfg: ServerConfig) -> None:
    members = [Member(mid, n, list(urls)) for mid, (n, urls) in cfg.initial_members().items()]
    voters = tuple(m.id for m in members)
    wire = members_to_wire(members)
    st = Storage.open(tmp, cluster_id=cfg.cluster_id, member_id=cfg.member_id, name=cfg.name)
    try:
        stage = st.new_stage()
        meta: bytes | None = None
        try:
            for payload in iter_chunks(path, info):
                try:
                    pairs = KV.parse_chunk(payload)
                    for k, v in pairs:
                        if k == b"m":
                            meta = v
                    stage.add(pairs)
                except ValueError as e:
                    raise SnapshotFileError(f"{path} is corrupt: {e}") from None
            try:
                meta_key, meta_value = KV.install_meta(meta, RESTORED_INDEX)
            except ValueError as e:
                raise SnapshotFileError(f"{path} is corrupt: {e}") from None
            stage.finish()
            st.prepare_install(stage)
        except BaseException:
            st.discard_stage(stage)
            raise
        install = Install(stage.gen, RESTORED_INDEX, meta_key, meta_value, wire)
        snap = Snapshot(RESTORED_INDEX, RESTORED_TERM, voters, ())
        # One batch: the KV generation, its applied index, the members and the snapshot record
        # (the install a streamed snapshot uses), with the hard state the snapshot implies.
        st.save((RESTORED_TERM, 0, RESTORED_INDEX), [], snap, install=install)
        st.activate_kv(stage.gen)
        st.put_meta("cluster_token", cfg.initial_cluster_token)
        st.put_meta("bootstrap_conf", [list(voters), []])
        st.put_meta("restored_from", {"cluster_id": info.header.cluster_id,
                                      "member_id": info.header.member_id,
                                      "index": info.header.index,
                                      "revision": info.header.revision})
        st.sync()
    finally:
        st.close()
