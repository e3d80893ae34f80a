"""The NFQUEUE delayer: one-way delay for the PACELC lab (this kernel has no ``tc netem``).

Runs inside one lab host's namespace (``ip netns exec``), where an nftables rule (netns.py,
:meth:`Lab.queue`) hands every packet the host sends to the other members to NFQUEUE ``--queue``.
Each packet is *retained* (netfilterqueue's ``Packet.retain``: the verdict is given later) and
accepted once its delay has passed: ``--delay-ms`` plus a uniform ``±--jitter-ms``. Packets
leave in the order they came (a packet is never released before the one queued ahead of it), as
a link that delays does not reorder; so with jitter the spread of one packet's delay is narrower
than asked when packets are close together.

One select loop: the queue's netlink socket for arrivals, the head of a FIFO for departures.
On SIGTERM/SIGINT every held packet is accepted at once and the stats (packets, held delay
p50/max in ms) are written to ``--stats`` as JSON, for the report to show that the delay
asked for is the delay applied.

    python -m fastraft.tools.pacelc.delayer --queue 1 --delay-ms 20 [--jitter-ms 2] \
        [--seed 1] [--stats FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import select
import signal
import sys
import time
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hold NFQUEUE packets for a one-way delay")
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", default=None)
    a = ap.parse_args(argv)
    if a.delay_ms < 0 or a.jitter_ms < 0 or a.jitter_ms > a.delay_ms:
        ap.error("need 0 <= --jitter-ms <= --delay-ms")
    try:
        from netfilterqueue import NetfilterQueue
    except ImportError:
        print("delayer: needs netfilterqueue: pip install 'fastraft[lab]' "
              "(built against libnetfilter-queue-dev)", file=sys.stderr)
        return 2

    rng = random.Random(a.seed)
    held: collections.deque[tuple[float, float, Any]] = collections.deque()
    holds: list[float] = []
    stop = False
    last_due = 0.0

    def arrived(pkt: Any) -> None:
        nonlocal last_due
        pkt.retain()  # the verdict comes later, from the loop below
        now = time.monotonic()
        d = a.delay_ms + (rng.uniform(-a.jitter_ms, a.jitter_ms) if a.jitter_ms else 0.0)
        due = max(now + d / 1000.0, last_due)  # FIFO: never ahead of the packet before
        last_due = due
        held.append((due, now, pkt))

    def release(now: float, everything: bool = False) -> None:
        while held and (everything or held[0][0] <= now):
            _, t_in, pkt = held.popleft()
            pkt.accept()
            holds.append((time.monotonic() - t_in) * 1000.0)

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    nfq = NetfilterQueue()
    # max_len: packets the kernel queues for us before dropping (a few seconds of peer traffic).
    nfq.bind(a.queue, arrived, max_len=65536)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while not stop:
            now = time.monotonic()
            release(now)
            wait = max(0.0, held[0][0] - now) if held else 0.2
            try:
                r, _, _ = select.select([fd], [], [], wait)
            except InterruptedError:
                continue
            if r:
                nfq.run(block=False)
    finally:
        release(0.0, everything=True)
        nfq.unbind()
        if a.stats:
            holds.sort()
            n = len(holds)
            stats = {"queue": a.queue, "delay_ms": a.delay_ms, "jitter_ms": a.jitter_ms,
                     "packets": n,
                     "held_p50_ms": holds[n // 2] if n else None,
                     "held_max_ms": holds[-1] if n else None}
            with open(a.stats, "w", encoding="utf-8") as f:
                json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
