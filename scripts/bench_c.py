#!/usr/bin/env python3
"""Tokens/s, ns/token and cycles/token of the native C backends, per vector path.

    python scripts/bench_c.py [--backends c-fp32,c-q412] [--paths avx512,avx2@clang,...]
                              [--tokens 2000000] [--repeats 7]
                              [--streams 32,64] [--threads 1,2] [--offline-tokens 50000]
                              [--weights PATH] [--json out.json] [--original]

Each path is one of the autotuner's compiled variants (avx512, avx2-evex, avx2, scalar,
each also @clang; neon on Arm), every one by default; a variant the compiler or CPU
cannot do is reported and skipped. Single stream: one C call runs --tokens
tokens of the generation loop (xorshift32); the min and the median of --repeats
calls are printed. Offline: N streams of --offline-tokens tokens each, split over
the given thread counts; the min and the median of --repeats calls. cycles/token is ns/token
times the clock a dependent add chain measures just before and after the row's calls (their
mean: machine.measure_clock_ghz; the host may move the clock between rows);
for offline rows it is per core (ns/token * GHz * threads), i.e. what one core
spends on one token. "x floor" is that over the run's floor: its exact
multiply-adds per token over the measured peak (peaks.py). --original also times
scripts/plain_microgpt.c, a plain scalar C port, built with clang -O3
-march=native -ffast-math, and scripts/plain_microgpt_q412.c, its Q4.12 twin: the
yardsticks (rows orig-fp32 and orig-q412). The machine may be shared: trust the
min more than one run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microgpt_bench import cli, machine, native, outputs, peaks  # noqa: E402
from microgpt_bench.backends.base import Unavailable  # noqa: E402
from microgpt_bench.backends.c_native import C_BACKENDS, candidate_variants  # noqa: E402
from microgpt_bench.weights import load_weights  # noqa: E402
from microgpt_bench.results import row_clock_ghz  # noqa: E402

BACKENDS = C_BACKENDS


def csv(text, conv=str):
    return [conv(x) for x in text.split(",") if x.strip()]


def timed(fn, repeats):
    """(best, median) seconds of `repeats` calls after a warm one, and the clock just before
    and after them (the host may move it between rows)."""
    fn()  # warm: page in, caches, branch predictors

    def repeat():
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    out, clock = machine.clock_beside(repeat)
    return min(out), statistics.median(out), clock


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="c-fp32,c-q412")
    ap.add_argument("--paths", default="",
                    help="compiled variants, e.g. avx512,avx2@clang (default: every variant of this architecture)")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="single-stream tokens per timed call")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--streams", default="32,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--offline-tokens", type=int, default=50_000, help="tokens per stream per offline call")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped weights)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--original", action="store_true",
                    help="also time the plain scalar C ports scripts/plain_microgpt.c and plain_microgpt_q412.c, "
                         "built with clang -O3 -march=native -ffast-math")
    args = ap.parse_args(argv)

    params = load_weights(args.weights)
    pk = peaks.measure_peaks()
    clock = machine.estimate_clock_ghz(pk)
    ghz = clock["ghz"]
    print(f"clock: {ghz} GHz ({clock['method']}); weights: {args.weights or 'shipped'}")
    print(f"peaks: {cli.format_peaks(pk)}")
    rows = []
    hdr = (f"{'backend':9} {'variant':15} {'scenario':28} {'tok/s':>14} {'ns/token':>9} {'cyc/token':>10} "
           f"{'(median)':>9} {'x floor':>8} {'GHz':>5}")
    print(hdr)
    print("-" * len(hdr))
    if args.original:
        rows += [original_row(src, label, params, args, ghz) for src, label in ORIGINALS]
    paths = csv(args.paths) if args.paths else list(candidate_variants())
    for path in paths:
        for name in csv(args.backends):
            rows += bench_variant(BACKENDS[name], name, path, params, args, ghz)
    if args.json:
        doc = {"clock": clock, "peaks": pk, "rows": rows}
        outputs.atomic_write(args.json, lambda fh: fh.write(json.dumps(doc, indent=1).encode()))
    return 0


def print_row(r, run_ghz):
    """One row, its cycles at its own clock (the mean of before and after) where it has one."""
    ghz = row_clock_ghz(r) or run_ghz
    per_core = r["ns_token"] * r["threads"]
    r["cycles_token_per_core"] = per_core * ghz if ghz else None
    cyc = f"{per_core * ghz:10.0f}" if ghz else f"{'?':>10}"
    med = f"{r['ns_token_median'] * r['threads'] * ghz:9.0f}" if r.get("ns_token_median") and ghz else f"{'':9}"
    floor = r.get("floor_cycles_per_token")
    share = f"{per_core * ghz / floor:7.2f}x" if floor and ghz else f"{'':8}"
    clock = f"{ghz:5.2f}" if ghz else f"{'?':>5}"
    print(f"{r['backend']:9} {r['path']:15} {r['scenario']:28} {r['tok_s']:14,.0f} {r['ns_token']:9.1f} {cyc} {med} {share} "
          f"{clock}")


def bench_variant(cls, name, path, params, args, ghz):
    why = candidate_variants().get(path, f"unknown variant {path!r}") or cls.availability()
    if not why:
        try:
            b = cls(params, variant=path)
        except (Unavailable, ValueError) as exc:
            why = str(exc)
    if why:
        print(f"{name:8} {path:15} unavailable: {why.splitlines()[0][:100]}")
        return []
    n, rows = args.tokens, []
    best, med, clock = timed(lambda: b.timed_generate(n, args.seed), args.repeats)
    rows.append({"backend": name, "path": path, "simd": b.info()["simd"], "scenario": "single-stream", "streams": 1,
                 "threads": 1, "tok_s": n / best, "ns_token": best / n * 1e9, "ns_token_median": med / n * 1e9,
                 "clock_ghz": clock,
                 "floor_cycles_per_token": b.info().get("floor_cycles_per_token")})
    print_row(rows[-1], ghz)
    for ns in csv(args.streams, int):
        for th in csv(args.threads, int):
            tps = args.offline_tokens
            best_o, med_o, clock = timed(lambda: b.timed_offline(ns, tps, args.seed, th), args.repeats)
            total = ns * tps
            # best and median, as for single stream: on a shared VM the best is the machine's figure
            rows.append({"backend": name, "path": path, "scenario": f"offline {ns} streams x{th}", "streams": ns,
                         "threads": th, "tok_s": total / best_o, "ns_token": best_o / total * 1e9,
                         "ns_token_median": med_o / total * 1e9, "clock_ghz": clock,
                         "floor_cycles_per_token": b.info().get("floor_cycles_per_token")})
            print_row(rows[-1], ghz)
    b.close()
    return rows


# the plain ports (the yardsticks), each beside the tuned backend it is compared with
ORIGINALS = (("plain_microgpt.c", "orig-fp32"), ("plain_microgpt_q412.c", "orig-q412"))


def original_row(source, label, params, args, ghz):
    """scripts/<source>, a plain scalar port, built with clang -O3 -march=native -ffast-math (a yardstick)."""
    cc = shutil.which("clang") or native.find_c_compiler()
    with tempfile.TemporaryDirectory() as tmp:
        exe, weights = Path(tmp) / "plain", Path(tmp) / "w.f32"
        params.flat("c", np.float32).tofile(weights)
        subprocess.run([cc, "-O3", "-march=native", "-ffast-math", "-std=c11", str(ROOT / "scripts" / source),
                        "-o", str(exe), "-lm"], check=True)
        runs, clock = machine.clock_beside(lambda: [
            float(subprocess.run([str(exe), str(weights), str(args.tokens // 4), str(args.seed)], check=True,
                                 capture_output=True, text=True).stdout.split()[0]) for _ in range(args.repeats)])
    row = {"backend": label, "path": Path(cc).name, "scenario": "single-stream (-ffast-math)", "streams": 1,
           "threads": 1, "tok_s": 1e9 / min(runs), "ns_token": min(runs), "ns_token_median": statistics.median(runs),
           "clock_ghz": clock}
    print_row(row, ghz)
    return row


if __name__ == "__main__":
    sys.exit(main())
