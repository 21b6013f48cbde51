#!/usr/bin/env python3
"""Where an offline pass's cycles go, measured: each phase of the pass run twice.

    python scripts/phase_costs.py [--backend c-fp32] [--variant avx512] [--streams 128]
                                  [--tokens 1000] [--rounds 60] [--json out.json]

The kernel is built once per phase with -DMG_REPEAT_PHASE=MG_PH_<phase> -DMG_REPEAT_TIMES=2
(kernels/mg_common.h): that phase then runs twice a token, reading the same inputs and
writing the same outputs, so the tokens do not change (checked: every build's checksum must
equal the others'). The baseline is the same build with no phase repeated
(-DMG_REPEAT_PHASE=0): it keeps the hooks' compiler barriers, which the build as it ships
does not have, so that one is timed too ("shipped"). All builds run alternately in one
process on one thread, --rounds times; a phase's cost is the min of its build minus the min
of the baseline, in cycles per token (the clock from a dependent add chain, as in
bench_c.py). It is the phase's cost where it runs, beside the rest of the pass: phases
overlap, so the costs need not add up to the total, and the remainder ("rest") holds what no
hook covers (embedding, norms between phases, the driver) and that overlap. A phase the
variant's pass does not hook (its build is the baseline, byte for byte) is reported as such.
The machine may be shared: trust minima over several runs.
"""
from __future__ import annotations

import argparse
import ctypes
import filecmp
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microgpt_bench import machine, native, outputs, peaks  # noqa: E402
from microgpt_bench.backends.c_native import C_BACKENDS, build_kernel, candidate_variants  # noqa: E402
from microgpt_bench.weights import load_weights  # noqa: E402

PHASES = ("QKV", "ATTENTION", "WO", "FC1", "FC2", "LM", "SAMPLER")


def default_variant() -> str:
    """The first variant this CPU runs, in the autotuner's order (the widest vectors first)."""
    return next(name for name, why in candidate_variants().items() if why is None)


def open_build(kernel: str, variant: str, weights: np.ndarray, temperature: float, phase: str):
    """phase: one of PHASES, "baseline" (hooks, no repeat) or "shipped" (no hooks)."""
    if phase == "shipped":
        extra = ()
    else:
        extra = (f"-DMG_REPEAT_PHASE={'0' if phase == 'baseline' else 'MG_PH_' + phase}", "-DMG_REPEAT_TIMES=2")
    lib, info = build_kernel(kernel, variant, extra)
    handle = getattr(lib, f"mg_{kernel}_create")(native.float_ptr(weights), ctypes.c_float(temperature))
    if not handle:
        raise SystemExit(f"mg_{kernel}_create refused the weights")
    run = getattr(lib, f"mg_{kernel}_generate_offline")
    return {"phase": phase, "library": info["library"], "handle": ctypes.c_void_p(handle), "run": run,
            "ns": [], "hooked": True}


def time_round(build: dict, streams: int, tokens: int, seed: int, out: np.ndarray) -> int:
    t0 = time.perf_counter_ns()
    checksum = build["run"](build["handle"], streams, tokens, seed, 1, native.int_ptr(out))
    build["ns"].append((time.perf_counter_ns() - t0) / (streams * tokens))
    if checksum < 0:
        raise SystemExit(f"{build['phase']}: the kernel returned error {checksum}")
    return checksum


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=sorted(C_BACKENDS), default="c-fp32")
    ap.add_argument("--variant", default=None, help="a compiled variant (default: this CPU's widest)")
    ap.add_argument("--streams", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=1000,
                    help="tokens per stream per timed call (short calls: a shared host leaves more quiet ones)")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    for name in ("streams", "tokens", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    kernel, variant = C_BACKENDS[args.backend].kernel, args.variant or default_variant()
    why = candidate_variants().get(variant, f"unknown variant {variant!r}")
    if why:
        ap.error(f"{variant}: {why}")
    weights = np.ascontiguousarray(load_weights(None).flat("c", np.float32))
    try:
        shipped, base, *builds = [open_build(kernel, variant, weights, args.temperature, p)
                                  for p in ("shipped", "baseline", *PHASES)]
    except native.BuildError as exc:
        raise SystemExit(f"build failed: {exc}") from exc
    for b in builds:
        b["hooked"] = not filecmp.cmp(b["library"], base["library"], shallow=False)
    out = np.zeros(args.streams * args.tokens, np.int32)
    sums = {}
    for _ in range(args.rounds):
        for b in [shipped, base, *(b for b in builds if b["hooked"])]:
            sums.setdefault(b["phase"], set()).add(time_round(b, args.streams, args.tokens, args.seed, out))
    if len({s for v in sums.values() for s in v}) != 1:
        raise SystemExit(f"a repeated phase changed the tokens (checksums {sums}): the hook is wrong")
    ghz = machine.estimate_clock_ghz(peaks.measure_peaks())["ghz"]
    total = min(base["ns"]) * ghz
    print(f"{args.backend} {variant}, offline {args.streams} streams x {args.tokens} tokens, one thread, "
          f"min of {args.rounds}; clock {ghz} GHz")
    print(f"{'phase':10} {'cycles/token':>12} {'(medians)':>10}")
    rows = {b["phase"]: {"cycles": min(b["ns"]) * ghz, "cycles_median": float(np.median(b["ns"])) * ghz}
            for b in (shipped, base)}
    for b in builds:
        name = b["phase"].lower()
        if not b["hooked"]:
            print(f"{name:10} {'not hooked in this pass':>23}")
            rows[name] = None
            continue
        extra = (min(b["ns"]) - min(base["ns"])) * ghz
        extra_med = float(np.median(b["ns"]) - np.median(base["ns"])) * ghz
        rows[name] = {"cycles": extra, "cycles_median": extra_med}
        print(f"{name:10} {extra:12.1f} {extra_med:10.1f}")
    rest = total - sum(r["cycles"] for k, r in rows.items() if r and k.upper() in PHASES)
    print(f"{'rest':10} {rest:12.1f}")
    for k in ("baseline", "shipped"):
        print(f"{k:10} {rows[k]['cycles']:12.1f} {rows[k]['cycles_median']:10.1f}")
    if args.json:
        doc = {"backend": args.backend, "variant": variant, "streams": args.streams, "tokens": args.tokens,
               "rounds": args.rounds, "clock_ghz": ghz, "cpu": machine.cpu_model(), "phases": rows, "rest": rest}
        outputs.atomic_write(args.json, lambda fh: fh.write(json.dumps(doc, indent=1).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
