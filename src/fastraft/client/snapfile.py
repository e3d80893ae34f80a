"""The backup file of ``fastractl snapshot save`` / ``status`` and ``fastraft snapshot restore``.

A backup is the same stream of frames a leader sends a follower that needs a snapshot
(net/snapstream.py), written to a file, with a file header in place of the peer hello and a
trailing checksum over the whole file (etcd appends a SHA-256 to its snapshot file the same way)::

    frame(header)       msgpack ["fastraft-backup", 1, cluster_id, member_id, index, term,
                        revision, compact_revision, created_unix_seconds]
    frame(b"C" + ...)   chunks: msgpack of alternating keys and values of the member's KV column
                        family (storage/mvcc.py's layout), keys ascending across the file
    frame(b"E" + ...)   msgpack [chunks, bytes, sha256 of the chunk payloads, members]
                        (snapstream's end frame)
    32 bytes            SHA-256 of every byte before it

``frame`` is a 4-byte big-endian length then the body (net/framing.py). Nothing here imports
``_core``: ``fastractl`` writes and checks these files on a client-only install.

A file is written to ``FILE.part`` and renamed to ``FILE`` only once it is complete, its
checksums are written and it is fsync'd: a cut or failed save leaves no ``FILE``.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from fastraft.errors import SnapshotFileError
from fastraft.net.framing import WireError, frame
from fastraft.net.snapstream import CHUNK, END, encode_end
from fastraft.net.snapstream import decode_end as decode_end_frame

__all__ = ["SnapshotFileError", "SnapshotHeader", "SnapshotInfo", "SnapshotWriter",
           "verify_snapshot", "iter_chunks", "MAGIC", "PART_SUFFIX"]

MAGIC = "fastraft-backup"
VERSION = 1
PART_SUFFIX = ".part"
DIGEST_BYTES = 32
# Refuse a frame length beyond this before reading it: a foreign or corrupt file must not make
# the reader allocate gigabytes. A chunk is ~1 MiB plus at most one value (<= 64 MiB).
MAX_FRAME = 128 << 20
_LEN = struct.Struct(">I")
_READ = 1 << 20


@dataclass(frozen=True)
class SnapshotHeader:
    """Where and when the snapshot was taken: the member's state at ``index`` (its applied
    Raft index), store revision ``revision``."""

    cluster_id: int
    member_id: int
    index: int
    term: int
    revision: int
    compact_revision: int
    created: float

    def encode(self) -> bytes:
        return msgpack.packb([MAGIC, VERSION, self.cluster_id, self.member_id, self.index,
                              self.term, self.revision, self.compact_revision, self.created])


@dataclass
class SnapshotInfo:
    """What ``verify_snapshot`` found (``fastractl snapshot status``'s columns and more)."""

    header: SnapshotHeader
    hash: int  # CRC-32 of the chunk payloads (the HASH column; etcd's is a CRC-32 too)
    total_keys: int  # live keys (the store's current keys, not their history)
    total_size: int  # bytes of the file
    chunks: int
    chunk_bytes: int
    chunk_sha256: bytes
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: int = 0  # every record of the KV layout (current, history, change log, meta)


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64


def decode_header(body: bytes, path: str) -> SnapshotHeader:
    try:
        f = msgpack.unpackb(body, raw=False)
    except Exception:  # msgpack raises several types on garbage
        raise SnapshotFileError(f"{path} is not a fastraft snapshot file") from None
    if not isinstance(f, list) or len(f) != 9 or f[0] != MAGIC:
        raise SnapshotFileError(f"{path} is not a fastraft snapshot file")
    if f[1] != VERSION:
        raise SnapshotFileError(f"{path} has snapshot format version {f[1]!r}; this fastraft "
                                f"reads version {VERSION}")
    if not all(_uint(x) for x in f[2:8]) or not isinstance(f[8], (int, float)):
        raise SnapshotFileError(f"{path} is corrupt: malformed header")
    return SnapshotHeader(f[2], f[3], f[4], f[5], f[6], f[7], float(f[8]))


def decode_end(body: bytes, path: str) -> tuple[int, int, bytes, dict[str, dict[str, Any]]]:
    """The stream's end frame (net/snapstream.py), its errors said of the file."""
    try:
        return decode_end_frame(body)
    except WireError as e:
        raise SnapshotFileError(f"{path} is corrupt: malformed end record ({e.reason})") from None


class SnapshotWriter:
    """Writes one snapshot file: ``FILE.part`` while it is written, ``FILE`` once ``commit``
    has checksummed, fsync'd and renamed it. ``abort`` (or an exception in a ``with`` block)
    removes the part file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.part = path + PART_SUFFIX
        # A stale .part of an earlier save that died is ours to replace.
        self._f: BinaryIO | None = open(self.part, "wb")  # noqa: SIM115 - closed by commit/abort
        self._sha = hashlib.sha256()
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        assert self._f is not None
        self._f.write(data)
        self._sha.update(data)
        self.bytes_written += len(data)

    def header(self, h: SnapshotHeader) -> None:
        self._write(frame(h.encode()))

    def chunk(self, payload: bytes) -> None:
        self._write(_LEN.pack(len(payload) + 1) + bytes([CHUNK]))
        self._write(payload)

    def end(self, chunks: int, nbytes: int, digest: bytes, members: dict[str, dict]) -> None:
        self._write(frame(encode_end(chunks, nbytes, digest, members)))

    def commit(self) -> None:
        f = self._f
        assert f is not None
        f.write(self._sha.digest())
        self.bytes_written += DIGEST_BYTES
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._f = None
        os.replace(self.part, self.path)
        d = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.unlink(self.part)
        except FileNotFoundError:
            pass

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._f is not None:
            self.abort()


def _frames(f: BinaryIO, path: str, limit: int) -> Iterator[bytes]:
    """Frame bodies from the current position up to byte ``limit`` (the trailing digest)."""
    pos = f.tell()
    while pos < limit:
        if limit - pos < _LEN.size:
            raise SnapshotFileError(f"{path} is corrupt: a frame is cut short")
        (n,) = _LEN.unpack(f.read(_LEN.size))
        if n == 0 or n > MAX_FRAME or pos + _LEN.size + n > limit:
            raise SnapshotFileError(f"{path} is corrupt: bad frame length {n} at byte {pos}")
        body = f.read(n)
        if len(body) != n:
            raise SnapshotFileError(f"{path} is truncated")
        pos += _LEN.size + n
        yield body


def _file_digest(f: BinaryIO, size: int) -> bytes:
    sha = hashlib.sha256()
    f.seek(0)
    left = size - DIGEST_BYTES
    while left > 0:
        b = f.read(min(_READ, left))
        if not b:
            break
        sha.update(b)
        left -= len(b)
    return sha.digest()


def _open(path: str) -> tuple[BinaryIO, int]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - the callers close it
    except FileNotFoundError:
        raise SnapshotFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SnapshotFileError(f"{path} is a directory, not a snapshot file") from None
    except OSError as e:
        raise SnapshotFileError(f"cannot read {path}: {e.strerror or e}") from None
    size = os.fstat(f.fileno()).st_size
    head = f.read(_LEN.size + 32)
    f.seek(0)
    if size < _LEN.size + DIGEST_BYTES or MAGIC.encode() not in head:
        f.close()
        raise SnapshotFileError(f"{path} is not a fastraft snapshot file")
    return f, size


def verify_snapshot(path: str) -> SnapshotInfo:
    """Check a snapshot file completely (in one streaming pass after the file checksum, memory
    bounded by one chunk) and describe it. Raises SnapshotFileError saying what is wrong."""
    f, size = _open(path)
    with f:
        if _file_digest(f, size) != _read_tail(f, size):
            raise SnapshotFileError(f"{path} is corrupt: its SHA-256 does not match (the file "
                                    f"was changed or cut after it was written)")
        f.seek(0)
        frames = _frames(f, path, size - DIGEST_BYTES)
        try:
            header = decode_header(next(frames), path)
        except StopIteration:
            raise SnapshotFileError(f"{path} is empty") from None
        crc = 0
        sha = hashlib.sha256()
        n = nbytes = keys = records = 0
        end: tuple[int, int, bytes, dict[str, dict[str, Any]]] | None = None
        for body in frames:
            if end is not None:
                raise SnapshotFileError(f"{path} is corrupt: data after the end record")
            if body[0] == CHUNK:
                payload = memoryview(body)[1:]
                crc = zlib.crc32(payload, crc)
                sha.update(payload)
                n += 1
                nbytes += len(payload)
                k, r = _count(body, path)
                keys += k
                records += r
            elif body[0] == END:
                end = decode_end(body, path)
            else:
                raise SnapshotFileError(f"{path} is corrupt: unknown record type {body[0]}")
        if end is None:
            raise SnapshotFileError(f"{path} is truncated: no end record")
        if (end[0], end[1], end[2]) != (n, nbytes, sha.digest()):
            raise SnapshotFileError(f"{path} is corrupt: its chunks do not match its end record")
    return SnapshotInfo(header, crc, keys, size, n, nbytes, end[2], end[3], records)


def _read_tail(f: BinaryIO, size: int) -> bytes:
    f.seek(size - DIGEST_BYTES)
    return f.read(DIGEST_BYTES)


def _count(body: bytes, path: str) -> tuple[int, int]:
    """(live keys, records) of one chunk (keys and values alternate; live keys start "c")."""
    bio = io.BytesIO(body)
    bio.seek(1)
    up = msgpack.Unpacker(bio, raw=False, read_size=64 * 1024,
                          max_buffer_size=max(len(body), 1 << 20))
    keys = records = 0
    try:
        for i, item in enumerate(up):
            if i % 2 == 0:
                if not isinstance(item, bytes) or not item:
                    raise SnapshotFileError(f"{path} is corrupt: a chunk holds a bad key")
                records += 1
                if item[0] == 0x63:  # b"c": a current record (storage/mvcc.py)
                    keys += 1
    except (msgpack.UnpackException, msgpack.ExtraData, ValueError, TypeError):
        raise SnapshotFileError(f"{path} is corrupt: undecodable chunk") from None
    return keys, records


def iter_chunks(path: str, info: SnapshotInfo) -> Iterator[bytes]:
    """The chunk payloads of a file ``verify_snapshot`` accepted as ``info``; the chunk digest
    is checked again at the end (SnapshotFileError if the file changed in between)."""
    f, size = _open(path)
    with f:
        sha = hashlib.sha256()
        frames = _frames(f, path, size - DIGEST_BYTES)
        next(frames, None)  # the header
        for body in frames:
            if body[0] == CHUNK:
                sha.update(memoryview(body)[1:])
                yield body[1:]
        if sha.digest() != info.chunk_sha256:
            raise SnapshotFileError(f"{path} changed while it was read")
