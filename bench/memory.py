"""Memory of a member after loading N keys: RSS against the raw data size.

    python bench/memory.py                      # 3-member local cluster, 1,000,000 keys of 256 B
    python bench/memory.py --keys 100000 --members 1

Starts a LocalCluster (heartbeat 100 ms, election 1 s, as `fastraft cluster`) in a temporary
directory, writes ``--keys`` distinct keys (``key/%010d``) of ``--value-size`` bytes through the
AsyncClient, ``--window`` puts in flight, with a progress line; waits until every member has
applied everything, then prints each member's RSS (VmRSS, and the peak VmHWM) from /proc and
the ratio to the raw data size (keys + values). Every process it starts is stopped by PID; the
whole run is bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time

from fastraft import AsyncClient
from fastraft.tools.localcluster import LocalCluster


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024  # reported in kB
    return out


async def load(endpoints: str, keys: int, value_size: int, window: int, deadline: float) -> float:
    value = b"v" * value_size
    started = time.monotonic()
    async with AsyncClient(endpoints, timeout=30.0) as c:
        done = 0
        last_print = 0.0
        while done < keys:
            if time.monotonic() > deadline:
                raise TimeoutError(f"loading took longer than allowed ({done:,} keys written)")
            n = min(window, keys - done)
            await asyncio.gather(*(c.put(b"key/%010d" % (done + i), value) for i in range(n)))
            done += n
            now = time.monotonic()
            if now - last_print >= 1.0 or done == keys:
                last_print = now
                rate = done / max(now - started, 1e-9)
                print(f"\r  loaded {done:>11,} / {keys:,} keys   {rate:>9,.0f} puts/s",
                      end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--window", type=int, default=512, help="puts in flight")
    ap.add_argument("--max-seconds", type=float, default=1200.0, help="bound on the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    a = ap.parse_args()
    if a.keys < 1 or a.value_size < 0 or a.window < 1 or not 1 <= a.members <= 9:
        ap.error("--keys and --window must be >= 1, --value-size >= 0, --members 1..9")
    deadline = time.monotonic() + a.max_seconds
    base = tempfile.mkdtemp(prefix="fastraft-memory-")
    lc = LocalCluster(a.members, base, heartbeat_ms=100, election_ms=1000)
    try:
        lc.start()
        leader = lc.wait_leader(timeout=30.0)
        print(f"cluster of {a.members} in {base}; leader {leader}", file=sys.stderr)
        took = asyncio.run(load(lc.endpoints, a.keys, a.value_size, a.window, deadline))
        target = (lc.status(leader) or {}).get("raft_applied_index", 0)
        for m in lc.members:  # followers apply asynchronously: wait (bounded) before measuring
            while (lc.status(m.name) or {}).get("raft_applied_index", 0) < target:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{m.name} did not apply index {target} in time")
                time.sleep(0.2)
        raw = a.keys * (len(b"key/%010d" % 0) + a.value_size)
        print(f"loaded {a.keys:,} keys of {a.value_size} B in {took:.1f} s "
              f"({a.keys / took:,.0f} puts/s); raw data {raw / 2**20:,.1f} MiB")
        for m in lc.members:
            assert m.proc is not None
            st = proc_status(m.proc.pid)
            role = "leader" if m.name == leader else "follower"
            print(f"  {m.name} ({role}): RSS {st['VmRSS'] / 2**20:,.1f} MiB "
                  f"({st['VmRSS'] / raw:.2f}x raw), peak {st['VmHWM'] / 2**20:,.1f} MiB "
                  f"({st['VmHWM'] / raw:.2f}x raw)")
        return 0
    finally:
        lc.close()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
