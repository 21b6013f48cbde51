#!/usr/bin/env python3
"""Single-stream tokens per CPU second of c-fp32 and the browser rows, side by side.

    python scripts/bench_cpu_time.py [--backends c-fp32,wasm-wasmtime,wasm-chromium,js-chromium]
                                     [--seconds 0.4] [--repeats 5]

On a machine shared with other jobs, wall-clock windows swing with the load; the CPU
time the loop itself used swings far less. Each backend's timed_generate() window is
charged the CPU time of the processes that ran it: this process for the in-process
rows (c-fp32, wasm-wasmtime), every process of the row's own Chromium (found by its
profile directory in /proc) for the browser rows. Windows are interleaved across the
backends; the median of --repeats is printed, with the ratio to the first backend.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microgpt_bench.backends import backend_class, parse_backend_list  # noqa: E402
from microgpt_bench.weights import load_weights  # noqa: E402


def browser_cpu_seconds(profile: str) -> float:
    """utime + stime of every live process whose command line names the profile directory."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if profile.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:  # the process ended meanwhile
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_clock(backend):
    profile = getattr(backend, "_profile", None)
    return (lambda: browser_cpu_seconds(profile)) if profile else time.process_time


def tokens_for(backend, seconds: float) -> int:
    """A window of about `seconds` (wall time of a warm call), after a warm-up."""
    backend.timed_generate(20_000, 1)
    t0 = time.perf_counter()
    backend.timed_generate(20_000, 1)
    return max(20_000, int(20_000 * seconds / max(time.perf_counter() - t0, 1e-6)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="c-fp32,wasm-wasmtime,wasm-chromium,js-chromium")
    ap.add_argument("--seconds", type=float, default=0.4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = load_weights()
    rows = []
    for name in parse_backend_list(args.backends):
        cls = backend_class(name)
        reason = cls.availability()
        if reason:
            print(f"{name:15s} unavailable: {reason}")
            continue
        backend = cls(params)
        rows.append((name, backend, cpu_clock(backend), tokens_for(backend, args.seconds), []))
    for _ in range(args.repeats):
        for _, backend, clock, n, rates in rows:
            t0 = clock()
            backend.timed_generate(n, 1)
            rates.append(n / max(clock() - t0, 1e-9))
    base = statistics.median(rows[0][4]) if rows else 1.0
    for name, backend, _, n, rates in rows:
        med = statistics.median(rates)
        print(f"{name:15s} {med:12,.0f} tok per CPU second (min {min(rates):,.0f}, max {max(rates):,.0f}; "
              f"{n:,} tokens a window)  {med / base:.0%}")
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
