#!/usr/bin/env python3
"""Quick tokens/s of the Python-framework rows, single-stream and offline.

    python scripts/bench_frameworks.py [--backends torch-eager,jax-jit,...] [--streams 64,256]
                                       [--seconds 1.5] [--repeats 3] [--json out.json]

Each figure is the median of --repeats timed calls, each sized to last about
--seconds; an untimed call of the same shape comes first (compiles that batch
size). Import and compile/JIT warm-up times are reported beside, never counted.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microgpt_bench.weights import load_weights  # noqa: E402

BACKENDS = {
    "torch-eager": "fw_torch:TorchEagerBackend",
    "torch-compile": "fw_torch:TorchCompileBackend",
    "torch-cuda": "fw_torch:TorchCudaBackend",
    "jax-jit": "fw_jax:JaxJitBackend",
    "mlx-cpu": "fw_mlx:MlxCpuBackend",
    "mlx-gpu": "fw_mlx:MlxGpuBackend",
    "numba": "fw_numba:NumbaBackend",
}
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "data" / "talos" / "weights_only.npy"


def load(name):
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(f"microgpt_bench.backends.{module}"), cls)


def rate(fn, work_per_unit, seconds, repeats):
    """Median units/s of fn(units); units grown until one call lasts ~seconds."""
    units = 16
    while True:
        t = time.perf_counter()
        fn(units)
        dt = time.perf_counter() - t
        if dt >= seconds / 4 or units >= 1 << 24:
            break
        units *= 4 if dt < seconds / 40 else 2
    units = max(1, int(units * seconds / max(dt, 1e-9)))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(units)
        rates.append(units * work_per_unit / (time.perf_counter() - t))
    return statistics.median(rates), units


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--streams", default="64,256")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    params = load_weights(args.weights)
    streams = [int(s) for s in args.streams.split(",") if s]
    rows = []
    for name in [n.strip() for n in args.backends.split(",") if n.strip()]:
        cls = load(name)
        reason = cls.availability()
        if reason is not None:
            print(f"{name:14s} unavailable: {reason}", flush=True)
            rows.append({"backend": name, "unavailable": reason})
            continue
        b = cls(params)
        b.timed_generate(64, 42)
        single, n = rate(lambda k: b.timed_generate(k, 42), 1, args.seconds, args.repeats)
        row = {"backend": name, "single_tok_s": single, "single_tokens": n}
        for s in streams:
            b.timed_offline(s, 4, 42)   # untimed: compiles this batch size
            r, tps = rate(lambda k: b.timed_offline(s, k, 42), s, args.seconds, args.repeats)
            row[f"offline{s}_tok_s"] = r
        row["info"] = b.info()
        rows.append(row)
        off = "  ".join(f"offline x{s}: {row[f'offline{s}_tok_s']:>11,.0f}" for s in streams)
        info = row["info"]
        print(f"{name:14s} single: {single:>9,.0f} tok/s  {off}   [{info['version']}; {info['device']}; "
              f"import {info['import_seconds'] or 0:.2f}s, warm-up {info['warmup_seconds']:.2f}s]",
              flush=True)
        b.close()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
