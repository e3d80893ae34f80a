"""Helpers for the wire tests: run a coroutine on asyncio or uvloop, bounded polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a project dependency
    uvloop = None

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


def run_on(kind: str, coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    """Run ``coro`` on a fresh loop of ``kind``; the whole test is bounded by ``timeout``."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.005,
                tick: Callable[[], Any] | None = None) -> None:
    """Poll ``cond`` (calling ``tick`` before each check) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            r = tick()
            if isinstance(r, Awaitable):
                await r
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
