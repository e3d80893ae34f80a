"""A single-member Node running in this process on its own uvloop thread (tests, benchmarks).

Real storage (fsync), real client server on loopback: what a member does, minus the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from fastraft.config import build_config
from fastraft.server.node import Node

T = TypeVar("T")


def free_port() -> int:
    # The config wants real port numbers: let the OS pick one (tiny race, loopback only).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InProcessMember:
    """``start()``, talk to ``endpoint`` with a Client, ``call(fn)`` to inspect the node on its
    loop thread, ``stop()``. The data dir survives stop(): to restart, start a new one on it
    with the same ``ports``."""

    def __init__(self, data_dir: Path, *, snapshot_count: int = 10000,
                 ports: tuple[int, int] | None = None, name: str = "solo",
                 initial_cluster: str | None = None,
                 max_response_bytes: int | None = None) -> None:
        # The member's identity derives from its peer URL: a restart must reuse ``ports``.
        # ``initial_cluster`` (name=peer URL,...): one member of a cluster of several, each
        # an InProcessMember of its own; default: a cluster of this member alone.
        self.ports = ports or (free_port(), free_port())
        client = f"http://127.0.0.1:{self.ports[0]}"
        peer = f"http://127.0.0.1:{self.ports[1]}"
        self.cfg = build_config({
            "name": name, "data-dir": str(data_dir),
            "listen-client-urls": client, "advertise-client-urls": client,
            "listen-peer-urls": peer, "initial-advertise-peer-urls": peer,
            "initial-cluster": initial_cluster or f"{name}={peer}",
            "snapshot-count": str(snapshot_count),
            # Fast timings as in tests/node: the lone member elects itself after ~0.5 s.
            "heartbeat-interval": "50", "election-timeout": "500",
            **({"max-response-bytes": str(max_response_bytes)} if max_response_bytes else {}),
        }, env={})
        self.loop = uvloop.new_event_loop()
        self.node = Node(self.cfg)
        self.endpoint = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(timeout)
        assert self.node.server is not None
        self.endpoint = f"127.0.0.1:{self.node.server.addrs[0][1]}"

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the node's loop thread (its state is only consistent there)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self.loop.close()
