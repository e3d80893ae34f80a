"""What a member keeps on disk and serves from it: the raft log store, the MVCC key-value
state machine, and watches over its revisions.

``logstore`` is the raft log, hard state and snapshots in RocksDB; ``mvcc`` is the revisioned
key-value store the log is applied to; ``watch`` streams its changes to watchers.
"""
