"""Benchmark regression gate: fails when a hot path got slower than its saved baseline.

    python bench/gate.py            # full run, compare with bench/baseline.json (exit 1 on regression)
    python bench/gate.py --short    # fewer rounds (what CI runs)
    python bench/gate.py --save     # measure and write a new baseline

Shared machines are noisy and differ from each other, so absolute medians are not compared.
Each benchmark's median is divided by the median of `test_calibration` (a fixed pure-Python
workload) measured in the same run, and that ratio is compared with the baseline's ratio; the
disk-bound ones (the end-to-end put, mostly one fsync) are divided by `test_calibration_disk` (a
4 KiB append + fdatasync) instead, since CI machines' disks differ more than their CPUs. A
benchmark regresses when its ratio exceeds the baseline's by more than --margin (default 50%:
run-to-run drift of the ratios on this 2-core machine was measured well below that, see
bench/RESULTS.md; a real regression of the kind the gate exists for, such as a per-entry path
falling back to Python, is a factor of 2 or more).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BASELINE = BENCH / "baseline.json"
CALIBRATION = "test_calibration"
DISK_CALIBRATION = "test_calibration_disk"
# Benchmarks whose time is mostly a disk sync: normalised by the disk calibration instead.
DISK_BOUND = ("test_put_end_to_end",)


def run_benchmarks(short: bool) -> dict[str, float]:
    """Run bench/ under pytest-benchmark; return {benchmark name: median seconds}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", str(BENCH), "-q", "-p", "no:cacheprovider",
               "--benchmark-enable", f"--benchmark-json={out}"]
        if short:
            cmd += ["--benchmark-max-time=0.2", "--benchmark-min-rounds=20"]
        proc = subprocess.run(cmd, cwd=BENCH.parent, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"gate: the benchmarks failed to run (pytest exit {proc.returncode})")
        data = json.loads(out.read_text())
    return {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}


def ratios(medians: dict[str, float]) -> dict[str, float]:
    for c in (CALIBRATION, DISK_CALIBRATION):
        if c not in medians:
            raise SystemExit(f"gate: {c} did not run; cannot normalise")
    out = {}
    for name, m in sorted(medians.items()):
        if name in (CALIBRATION, DISK_CALIBRATION):
            continue
        disk = name.startswith(DISK_BOUND)
        out[name] = m / medians[DISK_CALIBRATION if disk else CALIBRATION]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="fewer rounds per benchmark (CI)")
    ap.add_argument("--save", action="store_true", help=f"write a new baseline to {BASELINE.name}")
    ap.add_argument("--margin", type=float, default=0.5,
                    help="allowed slowdown of a normalised median, as a fraction (default 0.5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs that --save takes the median of")
    args = ap.parse_args(argv)
    if args.margin <= 0:
        ap.error("--margin must be > 0")

    if args.save:
        # The baseline is the per-benchmark median over several runs, so that one noisy run does
        # not become the yardstick.
        raw = [run_benchmarks(args.short) for _ in range(max(1, args.repeat))]
        runs = [ratios(m) for m in raw]
        now = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
        BASELINE.write_text(json.dumps({
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "calibration_median_s": statistics.median(m[CALIBRATION] for m in raw),
            "ratios": now,
        }, indent=2) + "\n")
        print(f"gate: baseline of {len(now)} benchmarks written to {BASELINE}")
        return 0

    medians = run_benchmarks(args.short)
    now = ratios(medians)
    if not BASELINE.exists():
        print(f"gate: no baseline at {BASELINE}; run with --save first", file=sys.stderr)
        return 2
    base = json.loads(BASELINE.read_text())["ratios"]
    failed = []
    print(f"{'benchmark':<48} {'median':>10} {'ratio':>9} {'baseline':>9} {'change':>8}")
    for name, r in now.items():
        b = base.get(name)
        if b is None:
            print(f"{name:<48} {medians[name] * 1e6:>8.2f}µs {r:>9.3f} {'(new)':>9}")
            continue
        change = r / b - 1
        flag = "  REGRESSED" if change > args.margin else ""
        print(f"{name:<48} {medians[name] * 1e6:>8.2f}µs {r:>9.3f} {b:>9.3f} {change:>+7.0%}{flag}")
        if flag:
            failed.append(name)
    missing = sorted(set(base) - set(now))
    for name in missing:
        print(f"{name:<48} missing from this run (in the baseline)")
    if failed or missing:
        print(f"gate: FAILED: {len(failed)} regressed beyond {args.margin:.0%}, {len(missing)} missing",
              file=sys.stderr)
        return 1
    print(f"gate: ok ({len(now)} benchmarks within {args.margin:.0%} of the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
