"""The Raft rules as a deterministic state machine: no I/O, no clock (etcd-io/raft style).

``core`` holds the rules (elections, replication, ReadIndex and leases, single-server membership
changes); the per-entry work (log, progress, quorum) is the Cython extension ``fastraft._core``,
which keeps its top-level place in the build and is re-exported here.
"""

from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_ADD_VOTER,
    CC_PROMOTE,
    CC_REMOVE,
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
    Config,
    Message,
    MsgType,
    Raft,
    ReadState,
    Ready,
    Snapshot,
)

__all__ = [
    "CC_ADD_LEARNER",
    "CC_ADD_VOTER",
    "CC_PROMOTE",
    "CC_REMOVE",
    "ENTRY_CONF_CHANGE",
    "ENTRY_NORMAL",
    "Config",
    "Message",
    "MsgType",
    "Raft",
    "ReadState",
    "Ready",
    "Snapshot",
]
