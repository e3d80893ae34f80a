"""The backup file (client/snapfile.py) on its own: written as FILE.part and renamed only when
committed; every kind of bad file refused with a message saying what is wrong; `fastractl
snapshot status` on good and bad files. No member needed (client-only code)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from fastraft.client import snapfile
from fastraft.client.snapfile import SnapshotHeader, SnapshotWriter, verify_snapshot
from fastraft.ctl import cli
from fastraft.errors import SnapshotFileError


def _chunk(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(msgpack.packb(x, use_bin_type=True) for kv in pairs for x in kv)


CHUNKS = [_chunk([(b"ca", b"rec-a"), (b"cb", b"rec-b")]),
          _chunk([(b"cc", b"rec-c"), (b"i\x00x", b"hist"), (b"m", msgpack.packb([9, 42, 0]))])]


def _write(path: Path, chunks: list[bytes] = CHUNKS, commit: bool = True) -> SnapshotWriter:
    w = SnapshotWriter(str(path))
    w.header(SnapshotHeader(1, 2, 9, 3, 42, 0, 1.0))
    for c in chunks:
        w.chunk(c)
    sha = hashlib.sha256(b"".join(chunks)).digest()
    w.end(len(chunks), sum(map(len, chunks)), sha, {"2": {"name": "n1"}})
    if commit:
        w.commit()
    return w


def _refit(path: Path, body: bytes) -> None:
    """Rewrite ``path`` with ``body`` and a correct trailing digest (a well-formed tampering)."""
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_a_committed_file_reads_back(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    _write(p)
    assert not os.path.exists(str(p) + ".part")
    info = verify_snapshot(str(p))
    assert (info.header.revision, info.header.index, info.total_keys) == (42, 9, 3)
    assert info.records == 5 and info.chunks == 2 and info.total_size == p.stat().st_size
    assert list(snapfile.iter_chunks(str(p), info)) == CHUNKS


def test_nothing_but_the_part_file_until_commit_and_abort_removes_it(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    w = _write(p, commit=False)
    assert not p.exists() and os.path.exists(str(p) + ".part")
    w.abort()
    assert not p.exists() and not os.path.exists(str(p) + ".part")
    with pytest.raises(RuntimeError), SnapshotWriter(str(p)) as w2:
        w2.chunk(b"x")
        raise RuntimeError("cut")
    assert not p.exists() and not os.path.exists(str(p) + ".part")


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("foreign", "not a fastraft snapshot file"),
    ("empty", "not a fastraft snapshot file"),
    ("flipped", "SHA-256 does not match"),
    ("cut", "SHA-256 does not match"),
    ("version", "format version 2"),
    ("no_end", "no end record"),
    ("after_end", "data after the end record"),
    ("chunk_mismatch", "do not match its end record"),
    ("bad_chunk", "undecodable chunk"),
])
def test_bad_files_are_refused(tmp_path: Path, case: str, message: str) -> None:
    p = tmp_path / "s.db"
    _write(p)
    data = p.read_bytes()
    body = data[:-32]
    frames = []
    pos = 0
    while pos < len(body):
        n = int.from_bytes(body[pos:pos + 4], "big")
        frames.append(body[pos:pos + 4 + n])
        pos += 4 + n
    head, *chunks, end = frames
    if case == "missing":
        p.unlink()
    elif case == "foreign":
        p.write_bytes(b"SQLite format 3\x00" + bytes(4096))
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "flipped":
        p.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    elif case == "cut":
        p.write_bytes(data[:-100])
    elif case == "version":
        h = msgpack.packb([snapfile.MAGIC, 2, 1, 2, 9, 3, 42, 0, 1.0])
        _refit(p, len(h).to_bytes(4, "big") + h + b"".join(chunks) + end)
    elif case == "no_end":
        _refit(p, head + b"".join(chunks))
    elif case == "after_end":
        _refit(p, body + chunks[0])
    elif case == "chunk_mismatch":
        _refit(p, head + chunks[0] + end)
    elif case == "bad_chunk":
        junk = b"C\xc1\xc1"
        _refit(p, head + len(junk).to_bytes(4, "big") + junk + end)
    with pytest.raises(SnapshotFileError) as ei:
        verify_snapshot(str(p))
    assert message in ei.value.message


def test_status_command(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    _write(p)
    r = CliRunner().invoke(cli, ["snapshot", "status", str(p), "-w", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"hash": verify_snapshot(str(p)).hash, "revision": 42,
                                    "totalKey": 3, "totalSize": p.stat().st_size}
    r = CliRunner().invoke(cli, ["snapshot", "status", str(p)])
    assert r.stdout.split(", ")[1:3] == ["42", "3"]
    p.write_bytes(p.read_bytes()[:-1])
    r = CliRunner().invoke(cli, ["snapshot", "status", str(p)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "corrupt" in r.output
