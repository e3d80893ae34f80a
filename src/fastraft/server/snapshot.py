"""A member's snapshot data: the format of ``Snapshot.data`` the node reads and writes.

Snapshot data = 8-byte magic + 8-byte index + msgpack ``[members, kv snapshot data]``; a
streamed snapshot that is staged locally carries a *staged marker* instead (never sent).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import msgpack

from fastraft.server.membership import Member, members_from_wire, members_to_wire
from fastraft.storage.logstore import Install

__all__ = ["STAGED_MAGIC", "encode_snapshot", "decode_snapshot", "staged_marker"]

# Snapshot data = 8-byte magic + 8-byte index + msgpack [members, kv snapshot data]. The index in
# the header lets the sender check the stored data matches the snapshot it is asked to send.
_SNAP_MAGIC = b"FRSNAP01"
_SNAP_HDR = struct.Struct(">8sQ")
# Snapshot.data of a streamed snapshot that is staged and ingested here (magic + generation):
# what the core carries through its ready to the install, never sent anywhere.
STAGED_MAGIC = b"FRSTAGED"


def encode_snapshot(index: int, members: Iterable[Member], kv_data: bytes) -> bytes:
    return _SNAP_HDR.pack(_SNAP_MAGIC, index) + msgpack.packb(
        [members_to_wire(members), kv_data], use_bin_type=True)


def decode_snapshot(data: bytes) -> tuple[int, list[Member], bytes]:
    """Inverse of encode_snapshot; raises ValueError on anything else."""
    if len(data) < _SNAP_HDR.size:
        raise ValueError("snapshot data is too short")
    magic, index = _SNAP_HDR.unpack_from(data)
    if magic != _SNAP_MAGIC:
        raise ValueError("not a fastraft node snapshot")
    try:
        members, kv_data = msgpack.unpackb(data[_SNAP_HDR.size:], raw=False)
    except Exception as e:  # msgpack raises several types on garbage
        raise ValueError(f"snapshot data is corrupt ({e})") from None
    if not isinstance(members, dict) or not isinstance(kv_data, bytes):
        raise ValueError("snapshot data has the wrong shape")
    return index, members_from_wire(members), kv_data


def staged_marker(install: Install) -> bytes:
    return STAGED_MAGIC + struct.pack(">QQ", install.gen, install.index)
