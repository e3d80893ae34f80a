"""The member's HTTP door (``--listen-metrics-urls``): health and readiness checks, and metrics.

* ``/health`` (as etcd's): ``{"health": "true", "reason": ""}`` with 200 when the member sees a
  leader and a linearizable read (a ReadIndex round confirmed by a quorum, then applied) succeeds
  within one election timeout; ``"false"`` with the reason and 503 otherwise. ``?serializable=true``
  skips the read (the member's local view only), as etcd's.
* ``/readyz``: 200 ``ok`` when the member is a voter, sees a leader and has applied what the leader
  had committed when asked (a ReadIndex: applied >= the read index, waited for at most an election
  timeout). A learner, or a member more than ``--readyz-max-lag`` entries behind that read index,
  is not ready: 503 with the reason.
* ``/livez``: 200 ``ok`` while the member's event loop answers.
* ``/metrics``: Prometheus text format (server/metrics.py).

The checks use the node's public face only: ``status()``, ``reads.read(...)``, ``raft``/``kv``
indexes.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from fastraft.errors import FastraftError, NoLeaderError
from fastraft.net.httpserver import HttpServer, Response, Route
from fastraft.server.metrics import CONTENT_TYPE, member_registry, render

if TYPE_CHECKING:
    from fastraft.server.node import Node

__all__ = ["MemberHttp"]


class _NotReady(Exception):
    pass


class MemberHttp:
    """The routes of one member, and the HTTP server that serves them."""

    def __init__(self, node: Node, max_lag: int) -> None:
        self.node = node
        self.max_lag = max_lag
        self.registry = member_registry(node)
        routes: dict[str, Route] = {"/health": self.health, "/readyz": self.readyz,
                                    "/livez": self.livez, "/metrics": self.metrics}
        self.server = HttpServer(routes)

    async def start(self, addrs: list[tuple[str, int]]) -> None:
        await self.server.start(addrs)

    async def stop(self) -> None:
        await self.server.stop()

    # ------------------------------------------------------------------ checks
    def _read(self, on_index: asyncio.Future[int] | None = None) -> asyncio.Future[None]:
        """A linearizable read of nothing: done when one would be servable here."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(err: FastraftError | None) -> None:
            if fut.done():
                return
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)

        def index(i: int) -> None:
            if on_index is not None and not on_index.done():
                on_index.set_result(i)

        self.node.reads.read(loop, done, timeout=self.node.service.check_timeout, on_index=index)
        return fut

    def _stopping(self) -> bool:
        return not self.node.serving

    async def health(self, query: str) -> Response:
        node = self.node
        ok, reason = True, ""
        if self._stopping():
            ok, reason = False, "STOPPING"
        elif node.raft is not None and node.raft.leader == 0:
            ok, reason = False, "RAFT NO LEADER"
        elif "serializable=true" not in query.split("&"):
            try:
                await self._read()
            except FastraftError as e:
                ok, reason = False, e.message
        if ok:
            node.stats.health_ok += 1
        else:
            node.stats.health_failed += 1
        body = json.dumps({"health": "true" if ok else "false", "reason": reason},
                          separators=(",", ":")).encode()
        return Response(200 if ok else 503, body + b"\n", "application/json")

    async def readyz(self, query: str) -> Response:
        try:
            await self._ready()
        except (_NotReady, FastraftError) as e:
            why = e.message if isinstance(e, FastraftError) else str(e)
            return Response(503, f"readyz check failed: {why}\n".encode())
        return Response(200, b"ok\n")

    async def _ready(self) -> None:
        node = self.node
        if self._stopping():
            raise _NotReady("the member is stopping")
        st = node.status()
        if st["is_learner"]:
            raise _NotReady("the member is a learner (not promoted yet)")
        if not st["leader"]:
            raise NoLeaderError("no leader")
        loop = asyncio.get_running_loop()
        index: asyncio.Future[int] = loop.create_future()
        read = self._read(index)
        # Whichever comes first: the read served (caught up), or the leader's read index showing
        # that we are far behind (then there is no point waiting for the apply).
        first: list[asyncio.Future[Any]] = [index, read]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if index.done() and not read.done():
            kv = node.kv
            lag = index.result() - (kv.applied if kv is not None else 0)
            if lag > self.max_lag:
                read.cancel()
                raise _NotReady(f"applied index is {lag} entries behind the leader's commit "
                                f"index {index.result()} (more than --readyz-max-lag "
                                f"{self.max_lag})")
        if not index.done():
            index.cancel()
        await read

    def livez(self, query: str) -> Response:
        return Response(200, b"ok\n")

    def metrics(self, query: str) -> Response:
        return Response(200, render(self.registry), CONTENT_TYPE)
