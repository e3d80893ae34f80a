"""A member: the raft node loop that joins the core, storage and network, and what it serves.

``kvservice`` takes client requests from any front end and gives back their results; ``node``
runs the ready loop and applies committed entries; ``reads`` serves linearizable reads
(ReadIndex rounds);
``membership`` holds the cluster's member records; ``join`` discovers a cluster to join;
``snapshotter`` takes, streams, receives and installs snapshots; ``snapshot``, ``syncer`` and
``wait`` are the node's snapshot encoding, fsync thread and pending-request records.
"""
