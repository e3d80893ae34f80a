"""Read contexts of a member (server/node.py): unique across its runs."""

from __future__ import annotations

from pathlib import Path

from inprocess_member import InProcessMember  # tests/ is on pytest's pythonpath

from fastraft import Client


def test_read_contexts_are_not_reused_by_a_restarted_member(tmp_path: Path) -> None:
    """A member numbers its linearizable reads, and the leader answers a context: if a later run
    of the member reused a context, the leader's late answer to a read of the earlier run could
    answer the new read with an old (stale) read index. Contexts never repeat across runs."""
    d = tmp_path / "m"
    ports = None
    runs: list[list[bytes]] = []
    for _ in range(2):
        m = InProcessMember(d, ports=ports)
        ports = m.ports
        m.start()
        try:
            raft = m.node.raft
            assert raft is not None
            real = raft.read_index
            ctxs: list[bytes] = []

            def spy(ctx: bytes, real=real, ctxs=ctxs) -> None:
                ctxs.append(ctx)
                real(ctx)

            m.call(lambda: setattr(raft, "read_index", spy))
            with Client(m.endpoint, timeout=10.0) as c:
                c.put(b"k", b"v")
                for _ in range(3):
                    assert c.get(b"k").kvs[0].value == b"v"
            runs.append(ctxs)
        finally:
            m.stop()
    assert runs[0] and runs[1]
    assert not set(runs[0]) & set(runs[1])
