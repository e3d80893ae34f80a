"""Fixtures that run real members as child processes on 127.0.0.1 (stopped by PID).

Every member is ``python -m fastraft serve ...`` (the installed package, never ``src/`` on the
path) with its own data dir under pytest's tmp_path and free loopback ports. Teardown sends
SIGTERM by PID, waits (bounded), then SIGKILLs; the members' logs are printed when a test fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fastraft.tools.localcluster import LocalCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def make_cluster(tmp_path, request) -> Iterator[Callable[..., LocalCluster]]:
    """make_cluster(n, **kw) -> a started LocalCluster of n members with a leader elected.

    Fast timings (50 ms heartbeat, 500 ms election timeout) keep the tests short. ``kw`` goes
    to LocalCluster (e.g. ``extra_args=["--snapshot-count", "50"]``); ``start=False`` returns it
    unstarted.
    """
    made: list[LocalCluster] = []

    def make(n: int = 3, *, start: bool = True, **kw: object) -> LocalCluster:
        lc = LocalCluster(n, str(tmp_path / f"c{len(made)}"), **kw)  # type: ignore[arg-type]
        made.append(lc)
        if start:
            lc.start()
            for m in lc.members:
                lc.wait_ready(m.name)
            lc.wait_leader(timeout=15)
        return lc

    yield make
    failed = getattr(request.node, "rep_call", None)
    for lc in made:
        lc.close()
        if failed is not None and failed.failed:
            for m in lc.members:
                print(f"----- {m.name} log (last 4000 chars) -----")
                print(m.log_text()[-4000:])
