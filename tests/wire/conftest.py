"""Fixtures for the wire tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from _wire_helpers import LOOPS, run_on


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Run a coroutine to completion on a fresh asyncio or uvloop loop (bounded in time)."""
    def _run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        return run_on(request.param, coro, timeout)
    return _run
