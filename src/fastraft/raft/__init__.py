"""The Raft rules as a deterministic state machine: no I/O, no clock (etcd-io/raft style).

``core`` holds the rules (elections, replication, ReadIndex and leases, single-server membership
changes); the per-entry work (log, progress, quorum) is the Cython extension ``fastraft._core``,
which keeps its top-level place in the build and is re-exported here.
"""

from fastraft._core import Log, ProgressTracker, ProposalBatch
from fastraft.raft import core as _core_rules
from fastraft.raft.core import *  # noqa: F403  (the public names of core, listed in its __all__)

__all__ = [*_core_rules.__all__, "Log", "ProgressTracker", "ProposalBatch"]
