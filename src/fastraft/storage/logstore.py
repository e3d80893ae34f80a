"""Durable storage of one member: the raft log, hard state, metadata and snapshots.

Layout of a data directory::

    <data_dir>/fastraft.id          msgpack {format, cluster_id, member_id, name}; written first,
                                    atomically, so a half-created dir is still recognised as ours
    <data_dir>/db/                  one RocksDB (rocksdict, raw mode) with column families:
        log    8-byte big-endian index -> msgpack [term, type, data]
        meta   utf-8 key -> msgpack value ("hardstate" = [term, vote, commit],
               "snapshot" = [index, term, voters, learners], plus the node's own keys)
        kv     the MVCC state machine (layout: storage/mvcc.py); after a snapshot received
               from a leader was installed, ``kv.<generation>`` instead: meta "kv_gen" names
               the live one (see "Installing a received snapshot")
    <data_dir>/snap/<index:016x>.snap   snapshot data, written durably before its metadata
    <data_dir>/snap/stage-<gen>/        SST files of a snapshot being received (never live)

Installing a received snapshot (streamed in chunks by net/snapstream.py): the chunks are written as
SST files into a staging dir (``SnapshotStage``; bounded memory, the live state untouched),
ingested into a NEW column family ``kv.<gen>`` once the stream's checksum was verified
(``prepare_install``), and made live by ONE WriteBatch (``save(..., install=...)``) that
switches meta "kv_gen", writes the new KV's applied index, the member list, the snapshot
record and the log truncation together. A crash before that batch is durable leaves the old
state; after it, the new one. At open, column families and staging dirs that are not live are
removed (``_drop_stale``).

Writes (``save``) never fsync: the host calls ``sync()`` (``flush_wal(True)``, which releases the
GIL, FACTS.md) once per ready, typically in a worker thread, so one fsync covers a whole batch.

Options chosen for a WAL-heavy, fsync-per-batch workload:

* ``create_if_missing`` / ``create_missing_column_families``: a new member and a newer layout
  with an extra column family both open without a manual step.
* 64 MiB write buffer, 3 buffers: log appends and KV puts land in the memtable; fewer, larger
  flushes keep compaction work (and its CPU on a 2-core box) down.
* ``max_total_wal_size`` 256 MiB: with several column families a rarely written one (meta) would
  otherwise pin old WAL files forever; this forces its flush and bounds WAL disk use and replay.
* ``max_background_jobs`` 2: one per core; flushes must keep up with appends.
* ``bytes_per_sync`` 1 MiB: SST writes are synced incrementally instead of one large stall.
* ``keep_log_file_num`` 3: RocksDB's info LOG files otherwise accumulate in the data dir.
* LZ4 compression: cheap on CPU; raft entries and values often compress.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
import rocksdict

from fastraft.errors import DataDirError

FORMAT_VERSION = 1

ID_FILE = "fastraft.id"
DB_DIR = "db"
SNAP_DIR = "snap"
COLUMN_FAMILIES = ("log", "meta", "kv")
KV_GEN_KEY = b"kv_gen"  # meta: generation of the live KV column family (absent: 0 = "kv")
STAGE_PREFIX = "stage-"
# SST files of a staged snapshot are cut at this size: bounded files, many ingested at once.
STAGE_FILE_BYTES = 64 << 20
KEEP_SNAPSHOTS = 3  # newest snapshot files kept; older ones are useless once a newer one is durable

_IDX = struct.Struct(">Q")
_MAX_INDEX_KEY = b"\xff" * 9  # sorts after every 8-byte index key


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in ``path`` durable (the directory's own fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that after a crash the file is either absent or complete."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def _db_options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_write_buffer_size(64 << 20)
    opts.set_max_write_buffer_number(3)
    opts.set_max_total_wal_size(256 << 20)
    opts.set_max_background_jobs(2)
    opts.set_bytes_per_sync(1 << 20)
    opts.set_keep_log_file_num(3)
    opts.set_compression_type(rocksdict.DBCompressionType.lz4())
    return opts


def _cf_options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.set_write_buffer_size(64 << 20)
    opts.set_compression_type(rocksdict.DBCompressionType.lz4())
    return opts


def kv_cf_name(gen: int) -> str:
    """The column family holding KV generation ``gen``."""
    return "kv" if gen == 0 else f"kv.{gen}"


# What an operator can do about a data dir refused as damaged (said once, in every such error).
DAMAGED_HINT = ("nothing was changed; restore the data dir from a backup, or move it aside and "
                "re-add this member (fastractl member remove, then member add, and start it on "
                "an empty data dir with --initial-cluster-state existing)")


def _one_line(e: BaseException) -> str:
    """RocksDB's message on one line (some carry newlines)."""
    return " ".join(str(e).split())


def _damaged(data_dir: str, detail: str) -> DataDirError:
    return DataDirError(f"data dir {data_dir!r} is damaged: {detail}; {DAMAGED_HINT}")


def _open_error(data_dir: str, e: BaseException) -> DataDirError:
    """Why RocksDB did not open: the disk's state (full, read-only, permissions: fix that and
    start again) or the database's (damaged)."""
    msg = _one_line(e)
    if "No space left on device" in msg:
        return DataDirError(f"data dir {data_dir!r}: cannot open the database: {msg}; free "
                            f"space on its file system and start again")
    if any(w in msg for w in ("Read-only file system", "Permission denied", "os error")):
        return DataDirError(f"data dir {data_dir!r}: cannot open the database: {msg}")
    return _damaged(data_dir, f"cannot open the database: {msg}")


def _iter_status(it: Any, data_dir: str) -> None:
    """Raise DataDirError if ``it`` stopped on a read error (an invalid iterator also means
    "the end": only its status tells the two apart)."""
    try:
        it.status()
    except Exception as e:  # rocksdict raises a plain Exception with RocksDB's status
        raise _damaged(data_dir, f"reading the database failed: {_one_line(e)}") from None


def _check_writable(data_dir: str) -> None:
    """A member must persist every write: refuse a data dir it cannot write (a read-only
    mount, wrong ownership) at start, not at its first write."""
    for p in (data_dir, os.path.join(data_dir, DB_DIR), os.path.join(data_dir, SNAP_DIR)):
        if os.path.isdir(p) and not os.access(p, os.W_OK | os.X_OK):
            ro = False
            try:
                ro = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
            except OSError:
                pass
            raise DataDirError(
                f"data dir {data_dir!r} is not writable ({p}: "
                f"{'a read-only file system' if ro else 'permission denied'}); a member must "
                f"persist what it acknowledges: make it writable by this user and start again")


def _check_db(data_dir: str, db_path: str) -> None:
    """Refuse a damaged database BEFORE the read-write open, which would change it: RocksDB
    recovers from a truncated MANIFEST by forgetting the tables it no longer lists and then
    deletes them, and with CURRENT missing it creates a new empty database beside the old
    files. A member that silently came back empty would forget its votes and acknowledged
    entries (a Raft safety violation), so these are errors, found with a read-only open that
    writes nothing."""
    if not os.path.exists(db_path):
        return  # a creation that crashed before the DB was made (the id is written first)
    if not os.path.isdir(db_path):
        raise _damaged(data_dir, f"{DB_DIR} is not a directory")
    try:
        names = os.listdir(db_path)
    except OSError as e:
        raise DataDirError(f"data dir {data_dir!r} is unreadable: {DB_DIR}: {e}") from None
    tables = {n for n in names if n.endswith(".sst")}
    wals = [n for n in names if n.endswith(".log") and n[:-4].isdigit()]
    if "CURRENT" not in names:
        if tables or wals:
            raise _damaged(data_dir, f"{DB_DIR}/CURRENT is missing but the database has data "
                                     f"files ({len(tables)} tables, {len(wals)} logs)")
        return  # RocksDB stopped while creating an empty database: creating it again is safe
    ro_opts = rocksdict.Options(raw_mode=True)
    try:
        cfs = rocksdict.Rdict.list_cf(db_path, rocksdict.Options(raw_mode=True))
        db = rocksdict.Rdict(db_path, ro_opts,
                             column_families={n: rocksdict.Options(raw_mode=True) for n in cfs},
                             access_type=rocksdict.AccessType.read_only())
    except Exception as e:  # corruption, missing files: RocksDB says which
        raise _open_error(data_dir, e) from None
    handles: list[Any] = []
    try:
        live = {os.path.basename(f["name"]) for f in db.live_files()}
        lost = sorted(tables - live)
        meta = None
        if "meta" in cfs:
            meta = db.get_column_family("meta")
            handles.append(meta)
        has_state = meta is not None and any(
            meta.get(k) is not None for k in (b"hardstate", b"snapshot", b"n/cluster_token"))
        if lost and not has_state:
            # (Tables left by a crash mid-flush are not listed either, but then the state
            # written before them is.)
            raise _damaged(data_dir, f"its MANIFEST lists none of the member's state and not "
                                     f"{len(lost)} table files beside it ({', '.join(lost[:3])}"
                                     f"{', ...' if len(lost) > 3 else ''}): truncated or "
                                     f"replaced")
        if meta is not None and "log" in cfs:
            hs_raw = meta.get(b"hardstate")
            snap_raw = meta.get(b"snapshot")
            commit = msgpack.unpackb(hs_raw)[2] if hs_raw is not None else 0
            snap_index = msgpack.unpackb(snap_raw)[0] if snap_raw is not None else 0
            log_cf = db.get_column_family("log")
            handles.append(log_cf)
            it = log_cf.iter()
            it.seek_to_last()
            last = _IDX.unpack(it.key())[0] if it.valid() else 0
            if not it.valid():
                _iter_status(it, data_dir)
            del it
            # The entries up to the commit index were durable before the commit index was
            # (the same WAL, in order), and compaction keeps them in the snapshot.
            if commit > max(last, snap_index):
                raise _damaged(data_dir, f"the raft log ends at {last} (snapshot at "
                                         f"{snap_index}) but entries up to {commit} were "
                                         f"committed: log entries are lost")
    except DataDirError:
        raise
    except Exception as e:
        raise _damaged(data_dir, f"reading the database failed: {_one_line(e)}") from None
    finally:
        for h in handles:
            h.close()
        db.close()


def _check_identity(raw: Any, path: str) -> dict:
    """Return the identity dict decoded from the id file, or raise DataDirError if malformed."""
    if not isinstance(raw, dict):
        raise DataDirError(f"data dir {path!r} is corrupt: {ID_FILE} is not a map")
    fmt = raw.get("format")
    cid = raw.get("cluster_id")
    mid = raw.get("member_id")
    name = raw.get("name")
    ok = (
        isinstance(fmt, int) and not isinstance(fmt, bool) and fmt >= 1
        and isinstance(cid, int) and not isinstance(cid, bool)
        and isinstance(mid, int) and not isinstance(mid, bool)
        and isinstance(name, str)
    )
    if not ok:
        raise DataDirError(f"data dir {path!r} is corrupt: {ID_FILE} has missing or invalid fields")
    return {"cluster_id": cid, "member_id": mid, "name": name, "format": fmt}


class Storage:
    """One member's durable state. Create with :meth:`Storage.open`."""

    def __init__(self, data_dir: str, db: rocksdict.Rdict, identity: dict) -> None:
        self.data_dir = data_dir
        self.identity = identity
        self.db = db
        self._wopts = rocksdict.WriteOptions()
        self._wopts.sync = False  # durability comes from sync(), once per batch
        self._snap_dir = os.path.join(data_dir, SNAP_DIR)
        self._closed = False
        # Told the seconds each sync() (WAL fsync) and write() (a KV batch) took: the member's
        # disk metrics (server/stats.py). Once per batch, never per entry.
        self.on_sync_seconds: Callable[[float], None] | None = None
        self.on_write_seconds: Callable[[float], None] | None = None
        raw_gen = db.get_column_family("meta").get(KV_GEN_KEY)
        self.kv_gen: int = msgpack.unpackb(raw_gen) if raw_gen is not None else 0
        self._next_gen = self.kv_gen
        # "kv" in these maps is always the LIVE generation's family.
        self._cfs = {name: db.get_column_family(name) for name in ("log", "meta")}
        self._handles = {name: db.get_column_family_handle(name) for name in ("log", "meta")}
        self._cfs["kv"] = db.get_column_family(kv_cf_name(self.kv_gen))
        self._handles["kv"] = db.get_column_family_handle(kv_cf_name(self.kv_gen))
        self._drop_stale()
        # The last stored log index (0 = none): lets save() delete a conflicting suffix only
        # when there is one, instead of writing a range tombstone on every append.
        self._last_index = 0
        it = self._cfs["log"].iter()
        it.seek_to_last()
        if it.valid():
            self._last_index = _IDX.unpack(it.key())[0]
        else:
            _iter_status(it, data_dir)
        del it

    # ----------------------------------------------------------------- opening

    @staticmethod
    def read_identity(data_dir: str) -> dict | None:
        """The identity recorded in ``data_dir`` (cluster_id, member_id, name, format).

        None when the directory does not exist or is empty. Raises DataDirError when it is
        non-empty but not a (readable) fastraft data dir. Never modifies anything.
        """
        if not os.path.exists(data_dir):
            return None
        if not os.path.isdir(data_dir):
            raise DataDirError(f"data dir {data_dir!r} is not a directory; point --data-dir at "
                               f"this member's data dir or at a new path")
        try:
            names = os.listdir(data_dir)
        except OSError as e:
            raise DataDirError(f"data dir {data_dir!r} is unreadable: {e}") from None
        if not names:
            return None
        id_path = os.path.join(data_dir, ID_FILE)
        if ID_FILE not in names:
            etcd = ("; it looks like an etcd data dir (member/wal): fastraft cannot read etcd "
                    "data" if os.path.isdir(os.path.join(data_dir, "member", "wal")) else "")
            raise DataDirError(
                f"data dir {data_dir!r} is not empty and is not a fastraft data dir "
                f"(no {ID_FILE}{etcd}); refusing to use it: point --data-dir at this member's "
                f"data dir or at a new or empty directory"
            )
        try:
            with open(id_path, "rb") as f:
                blob = f.read()
        except OSError as e:
            raise DataDirError(f"data dir {data_dir!r} is unreadable: {ID_FILE}: {e}") from None
        try:
            raw = msgpack.unpackb(blob, raw=False)
        except Exception as e:  # msgpack raises several unrelated types on garbage
            raise DataDirError(f"data dir {data_dir!r} is corrupt: {ID_FILE} cannot be decoded ({e})") from None
        return _check_identity(raw, data_dir)

    @classmethod
    def open(cls, data_dir: str, *, cluster_id: int, member_id: int, name: str) -> Storage:
        """Open (or create) the data dir of member ``member_id`` of cluster ``cluster_id``.

        A refused directory (foreign, corrupt, another cluster or member, newer format) raises
        DataDirError and is left untouched: every check happens before anything is written.
        """
        for label, v in (("cluster_id", cluster_id), ("member_id", member_id)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 1 << 64:
                raise ValueError(f"{label} must be a non-zero 64-bit unsigned integer, got {v!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        ident = cls.read_identity(data_dir)
        if ident is not None:
            if ident["format"] > FORMAT_VERSION:
                raise DataDirError(
                    f"data dir {data_dir!r} has format version {ident['format']}, newer than "
                    f"this fastraft supports ({FORMAT_VERSION}); upgrade fastraft"
                )
            if ident["cluster_id"] != cluster_id:
                raise DataDirError(
                    f"data dir {data_dir!r} belongs to cluster {ident['cluster_id']:x}, "
                    f"not {cluster_id:x}: check --initial-cluster and "
                    f"--initial-cluster-token, or use another --data-dir"
                )
            if ident["member_id"] != member_id or ident["name"] != name:
                raise DataDirError(
                    f"data dir {data_dir!r} belongs to member {ident['name']!r} "
                    f"({ident['member_id']:x}), not {name!r} ({member_id:x}): check --name, "
                    f"--initial-advertise-peer-urls and --data-dir (each member has its own)"
                )
            # An id file without a DB is a creation that crashed midway (the id is written
            # first): nothing was ever stored, so creating the DB below is safe. A DB that is
            # there must be whole: checked before anything is written.
            _check_writable(data_dir)
            _check_db(data_dir, os.path.join(data_dir, DB_DIR))
        else:
            ident = {"cluster_id": cluster_id, "member_id": member_id, "name": name,
                     "format": FORMAT_VERSION}
            os.makedirs(data_dir, exist_ok=True)
            _write_durably(os.path.join(data_dir, ID_FILE), msgpack.packb(ident))
        os.makedirs(os.path.join(data_dir, SNAP_DIR), exist_ok=True)
        db_path = os.path.join(data_dir, DB_DIR)
        try:
            # RocksDB opens only with every family it has listed: KV generations included.
            existing = (rocksdict.Rdict.list_cf(db_path, rocksdict.Options(raw_mode=True))
                        if os.path.exists(os.path.join(db_path, "CURRENT")) else [])
            cfs = {name_: _cf_options() for name_ in COLUMN_FAMILIES}
            for name_ in existing:
                if name_.startswith("kv."):
                    cfs[name_] = _cf_options()
            db = rocksdict.Rdict(db_path, _db_options(), column_families=cfs)
        except Exception as e:  # rocksdict reports corruption/lock problems as plain exceptions
            raise _open_error(data_dir, e) from None
        return cls(data_dir, db, ident)

    # ----------------------------------------------------------------- access for storage/mvcc.py

    def column_family(self, name: str) -> rocksdict.Rdict:
        """The Rdict of one column family (storage/mvcc.py reads its own family through this)."""
        return self._cfs[name]

    def cf_handle(self, name: str) -> Any:
        """The ColumnFamily handle to use in a WriteBatch."""
        return self._handles[name]

    def write(self, batch: rocksdict.WriteBatch) -> None:
        """Write a batch with sync disabled (made durable by the next ``sync()``)."""
        t = time.perf_counter()
        self.db.write(batch, self._wopts)
        if self.on_write_seconds is not None:
            self.on_write_seconds(time.perf_counter() - t)

    # ----------------------------------------------------------------- received snapshots

    def _drop_stale(self) -> None:
        """Remove KV generations that are not live and staging dirs (left by a transfer that
        was cut, refused, or crashed before its install was durable)."""
        live = kv_cf_name(self.kv_gen)
        for name in rocksdict.Rdict.list_cf(self.db.path(), rocksdict.Options(raw_mode=True)):
            if (name == "kv" or name.startswith("kv.")) and name != live:
                self.db.drop_column_family(name)
        if os.path.isdir(self._snap_dir):
            for n in os.listdir(self._snap_dir):
                if n.startswith(STAGE_PREFIX):
                    shutil.rmtree(os.path.join(self._snap_dir, n), ignore_errors=True)

    def new_stage(self) -> SnapshotStage:
        """An empty staging area for a snapshot being received (one at a time)."""
        self._check_open()
        # A new generation per transfer: a cut transfer's files or family never collide with
        # the next one's.
        self._next_gen = gen = max(self._next_gen, self.kv_gen) + 1
        path = os.path.join(self._snap_dir, f"{STAGE_PREFIX}{gen}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return SnapshotStage(gen, path)

    def prepare_install(self, stage: SnapshotStage) -> None:
        """Ingest a finished stage into a new (not yet live) KV column family ``kv.<gen>``.

        The files are moved into the DB; nothing the live state reads changes. Runs in a worker
        thread (RocksDB is thread-safe; the loop goes on serving)."""
        self._check_open()
        if not stage.finished:
            raise ValueError("the snapshot stage is not finished")
        name = kv_cf_name(stage.gen)
        if name in rocksdict.Rdict.list_cf(self.db.path(), rocksdict.Options(raw_mode=True)):
            self.db.drop_column_family(name)  # an earlier attempt at this generation
        cf = self.db.create_column_family(name, _cf_options())
        try:
            if stage.files:
                io = rocksdict.IngestExternalFileOptions()
                io.set_move_files(True)
                cf.ingest_external_file(list(stage.files), io)
        finally:
            cf.close()
        stage.ingested = True

    def discard_stage(self, stage: SnapshotStage) -> None:
        """Drop a stage that will not be installed: its files and, if ingested, its family."""
        stage.abort()
        if stage.ingested:
            self.discard_gen(stage.gen)

    def discard_gen(self, gen: int) -> None:
        """Drop KV generation ``gen`` unless it is live (an ingested but unused snapshot)."""
        if self._closed or gen == self.kv_gen:
            return
        name = kv_cf_name(gen)
        if name in rocksdict.Rdict.list_cf(self.db.path(), rocksdict.Options(raw_mode=True)):
            self.db.drop_column_family(name)

    def activate_kv(self, gen: int) -> None:
        """After an install's batch is durable: read and write generation ``gen`` from now on,
        and drop the old one (open iterators over it stay valid until they go)."""
        self._check_open()
        if gen == self.kv_gen:
            return
        old_name = kv_cf_name(self.kv_gen)
        old_cf = self._cfs["kv"]
        self._cfs["kv"] = self.db.get_column_family(kv_cf_name(gen))
        self._handles["kv"] = self.db.get_column_family_handle(kv_cf_name(gen))
        self.kv_gen = gen
        old_cf.close()
        self.db.drop_column_family(old_name)
        shutil.rmtree(os.path.join(self._snap_dir, f"{STAGE_PREFIX}{gen}"), ignore_errors=True)
        # Generations staged before this one and never installed (replaced in flight).
        for name in rocksdict.Rdict.list_cf(self.db.path(), rocksdict.Options(raw_mode=True)):
            if name.startswith("kv.") and int(name[3:]) < gen:
                self.db.drop_column_family(name)

    # ----------------------------------------------------------------- raft state

    def initial_state(self) -> tuple[tuple[int, int, int], tuple | None, list[tuple]]:
        """(hard_state, snapshot_meta, entries after the snapshot) as persisted."""
        meta = self._cfs["meta"]
        hs_raw = meta.get(b"hardstate")
        hard_state: tuple[int, int, int] = (0, 0, 0)
        if hs_raw is not None:
            term, vote, commit = msgpack.unpackb(hs_raw)
            hard_state = (term, vote, commit)
        snap = self.snapshot_meta()
        first = snap[0] + 1 if snap else 1
        entries: list[tuple] = []
        it = self._cfs["log"].iter()
        it.seek(_IDX.pack(first))
        expect = first
        while it.valid():
            index = _IDX.unpack(it.key())[0]
            term, typ, data = msgpack.unpackb(it.value())
            if entries and index != expect:
                raise DataDirError(
                    f"data dir {self.data_dir!r} is corrupt: raft log has a gap before index {index}"
                )
            entries.append((index, term, typ, data))
            expect = index + 1
            it.next()
        _iter_status(it, self.data_dir)  # a read error is not the end of the log
        del it
        return hard_state, snap, entries

    def snapshot_meta(self) -> tuple | None:
        """(index, term, voters, learners) of the newest snapshot, or None."""
        raw = self._cfs["meta"].get(b"snapshot")
        if raw is None:
            return None
        index, term, voters, learners = msgpack.unpackb(raw)
        return (index, term, tuple(voters), tuple(learners))

    def last_index(self) -> int:
        """Index of the last stored log entry (0 when the log is empty)."""
        return self._last_index

    def save(self, hard_state: tuple | None, entries: list[tuple], snapshot: Any = None,
             install: Install | None = None) -> None:
        """Persist one ready's hard state, entries and snapshot in one batch (not synced).

        The snapshot's data file is written durably first, so that the metadata naming it is
        never durable without it. With ``install`` (a received snapshot already ingested by
        ``prepare_install``) no file is written: the same batch switches the live KV generation
        and writes its applied index and the member list, so the switch is atomic.
        """
        self._check_open()
        log_h = self._handles["log"]
        meta_h = self._handles["meta"]
        wb = rocksdict.WriteBatch(raw_mode=True)
        last = self._last_index
        if install is not None:
            if snapshot is None or install.index != snapshot.index:
                raise ValueError("an install must come with the snapshot it installs")
            new_h = self.db.get_column_family_handle(kv_cf_name(install.gen))
            wb.put(install.kv_meta_key, install.kv_meta, new_h)
            wb.put(KV_GEN_KEY, msgpack.packb(install.gen), meta_h)
            wb.put(b"n/members", msgpack.packb(install.members, use_bin_type=True), meta_h)
        if snapshot is not None:
            index, term = snapshot.index, snapshot.term
            if snapshot.data is not None and install is None:
                self._write_snapshot_file(index, snapshot.data)
            stored = self._cfs["log"].get(_IDX.pack(index))
            if stored is not None and msgpack.unpackb(stored)[0] == term:
                # Our log agrees with the snapshot at its index: keep what follows (§7).
                wb.delete_range(_IDX.pack(0), _IDX.pack(index + 1), log_h)
                last = max(last, index)
            else:
                wb.delete_range(_IDX.pack(0), _MAX_INDEX_KEY, log_h)
                last = index
            wb.put(b"snapshot", msgpack.packb(
                [index, term, list(snapshot.voters), list(snapshot.learners)]), meta_h)
        if entries:
            first_index = entries[0][0]
            prev = first_index - 1
            for e in entries:
                index, term, typ, data = e
                if index != prev + 1:
                    raise ValueError(f"entries are not contiguous: {index} follows {prev}")
                wb.put(_IDX.pack(index), msgpack.packb([term, typ, data]), log_h)
                prev = index
            if last > prev:
                # §5.3: entries from first_index on replace ours; drop our longer conflicting tail.
                wb.delete_range(_IDX.pack(prev + 1), _MAX_INDEX_KEY, log_h)
            last = prev
        if hard_state is not None:
            term, vote, commit = hard_state
            wb.put(b"hardstate", msgpack.packb([term, vote, commit]), meta_h)
        if not wb.is_empty():
            self.write(wb)
        self._last_index = last
        if snapshot is not None:
            # Until the next sync() the durable metadata may still name the previous snapshot;
            # KEEP_SNAPSHOTS >= 2 keeps its file.
            self._prune_snapshot_files(snapshot.index)

    def sync(self) -> None:
        """Make everything saved so far durable (fsync of the WAL; releases the GIL)."""
        self._check_open()
        t = time.perf_counter()
        self.db.flush_wal(True)
        if self.on_sync_seconds is not None:
            self.on_sync_seconds(time.perf_counter() - t)

    # ----------------------------------------------------------------- snapshots

    def _snap_path(self, index: int) -> str:
        return os.path.join(self._snap_dir, f"{index:016x}.snap")

    def _write_snapshot_file(self, index: int, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"snapshot data must be bytes, got {type(data).__name__}")
        _write_durably(self._snap_path(index), bytes(data))

    def _prune_snapshot_files(self, keep_index: int) -> None:
        names = sorted(n for n in os.listdir(self._snap_dir) if n.endswith(".snap"))
        # Never delete the file the durable metadata points at, even if it is not the newest name.
        keep = set(names[-KEEP_SNAPSHOTS:]) | {f"{keep_index:016x}.snap"}
        for n in names:
            if n not in keep:
                os.unlink(os.path.join(self._snap_dir, n))
        for n in os.listdir(self._snap_dir):
            if n.endswith(".tmp"):  # left by a crash during _write_durably
                os.unlink(os.path.join(self._snap_dir, n))

    def save_snapshot(self, index: int, term: int, voters: tuple, learners: tuple,
                      data: bytes) -> None:
        """Record a snapshot taken locally at ``index`` and drop log entries up to it (durable)."""
        self._check_open()
        self._check_snapshot_index(index)
        self._write_snapshot_file(index, data)
        self._record_snapshot(index, term, voters, learners)
        self.sync()
        self._prune_snapshot_files(index)

    def save_snapshot_meta(self, index: int, term: int, voters: tuple, learners: tuple) -> None:
        """Record a snapshot taken locally at ``index`` WITHOUT a data file; drop the log up to it.

        For a state machine that lives in this same DB (storage/mvcc.py): its state at ``index`` is
        already stored, so nothing is copied. Not synced: it becomes durable with the next
        ``sync()``, and because it follows the KV writes up to ``index`` in the one WAL, a
        durable record implies a durable state at ``index`` (never a log gap without it). The
        host serializes the state only when a follower needs it (``has_snapshot_file`` is then
        False for this index)."""
        self._check_open()
        self._check_snapshot_index(index)
        self._record_snapshot(index, term, voters, learners)
        self._prune_snapshot_files(index)

    def has_snapshot_file(self, index: int) -> bool:
        """True when snapshot data for ``index`` is stored in a file (a received snapshot)."""
        return os.path.exists(self._snap_path(index))

    def _check_snapshot_index(self, index: int) -> None:
        snap = self.snapshot_meta()
        if snap is not None and index < snap[0]:
            raise ValueError(f"snapshot index {index} is older than the stored snapshot {snap[0]}")

    def _record_snapshot(self, index: int, term: int, voters: tuple, learners: tuple) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        wb.put(b"snapshot", msgpack.packb([index, term, list(voters), list(learners)]),
               self._handles["meta"])
        wb.delete_range(_IDX.pack(0), _IDX.pack(index + 1), self._handles["log"])
        self.write(wb)
        self._last_index = max(self._last_index, index)

    def load_snapshot_data(self) -> bytes | None:
        """The data of the snapshot the metadata names (to send to a follower), or None."""
        snap = self.snapshot_meta()
        if snap is None:
            return None
        try:
            with open(self._snap_path(snap[0]), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    # ----------------------------------------------------------------- metadata

    def get_meta(self, key: str, default: Any = None) -> Any:
        raw = self._cfs["meta"].get(b"n/" + key.encode())
        return default if raw is None else msgpack.unpackb(raw, raw=False)

    def put_meta(self, key: str, value: Any) -> None:
        """Store one of the node's own metadata values (not synced: call sync() if it matters)."""
        self._check_open()
        # A prefix keeps node keys apart from storage's own ("hardstate", "snapshot").
        self._cfs["meta"].put(b"n/" + key.encode(), msgpack.packb(value, use_bin_type=True),
                              self._wopts)

    # ----------------------------------------------------------------- misc

    def db_size(self) -> int:
        """Bytes on disk under the data dir (SSTs, WAL, manifests, snapshot files)."""
        total = 0
        for root, _dirs, files in os.walk(self.data_dir):
            for n in files:
                try:
                    total += os.stat(os.path.join(root, n)).st_size
                except FileNotFoundError:  # RocksDB deleted it while we walked
                    pass
        return total

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("storage is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._cfs:
            return
        for cf in self._cfs.values():
            cf.close()
        self._cfs.clear()
        self._handles.clear()
        self.db.close()

    @staticmethod
    def destroy(data_dir: str) -> None:
        """Remove a data dir completely (tests, `member remove` cleanup)."""
        shutil.rmtree(data_dir, ignore_errors=True)


class Install:
    """What ``save`` writes, with a snapshot, to make a staged KV generation live."""

    __slots__ = ("gen", "index", "kv_meta_key", "kv_meta", "members")

    def __init__(self, gen: int, index: int, kv_meta_key: bytes, kv_meta: bytes,
                 members: dict[str, dict[str, Any]]) -> None:
        self.gen = gen
        self.index = index
        self.kv_meta_key = kv_meta_key  # the KV's own record of its applied index (storage/mvcc.py)
        self.kv_meta = kv_meta
        self.members = members


class SnapshotStage:
    """SST files of a snapshot being received: keys arrive in ascending order (a RocksDB
    iterator on the sender), so they stream straight into SstFileWriters, cut every
    STAGE_FILE_BYTES. Memory stays bounded (a writer holds one block and its index)."""

    def __init__(self, gen: int, path: str) -> None:
        self.gen = gen
        self.path = path
        self.files: list[str] = []
        self.finished = False
        self.ingested = False
        self._writer: Any = None
        self._file_bytes = 0
        self._last_key: bytes | None = None

    def add(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Append pairs; keys must ascend strictly across calls (ValueError otherwise)."""
        if self.finished:
            raise ValueError("the snapshot stage is finished")
        last = self._last_key
        for k, v in pairs:
            if last is not None and k <= last:
                raise ValueError("snapshot keys are not in ascending order")
            last = k
            if self._writer is None:
                self._writer = rocksdict.SstFileWriter(options=_cf_options())
                path = os.path.join(self.path, f"{len(self.files):06d}.sst")
                self._writer.open(path)
                self.files.append(path)
                self._file_bytes = 0
            self._writer[k] = v
            self._file_bytes += len(k) + len(v)
            if self._file_bytes >= STAGE_FILE_BYTES:
                self._writer.finish()
                self._writer = None
        self._last_key = last

    def finish(self) -> None:
        """Close the last file (SstFileWriter.finish syncs it)."""
        if self._writer is not None:
            self._writer.finish()
            self._writer = None
        self.finished = True

    def abort(self) -> None:
        """Drop what was staged (a cut, stalled or refused transfer)."""
        self._writer = None
        self.finished = True
        shutil.rmtree(self.path, ignore_errors=True)
