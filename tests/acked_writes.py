"""A writer that records which puts the cluster acknowledged: the promises a fault test checks."""

from __future__ import annotations

import threading

from fastraft import Client
from fastraft.errors import FastraftError


def write_acked(endpoints: list[str], first: int, count: int, acked: list[int],
                stop: threading.Event | None = None) -> None:
    """Put k<i> = v<i> for i in [first, first + count), appending each acknowledged i to
    ``acked``; a put that failed was not acknowledged and promises nothing. Ends early when
    ``stop`` is set."""
    with Client(endpoints, timeout=2.0) as c:
        for i in range(first, first + count):
            if stop is not None and stop.is_set():
                return
            try:
                c.put(b"k%06d" % i, b"v%d" % i)
            except FastraftError:
                continue  # not acknowledged: no promise to check
            acked.append(i)
