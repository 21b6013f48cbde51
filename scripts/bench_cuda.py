#!/usr/bin/env python3
"""Standalone benchmark of the CUDA backends: gate, then tok/s (median of repeats) and power.

  python scripts/bench_cuda.py [--weights PATH] [--variants cuda-naive,...] [--repeats 5]
                               [--seconds 1.0] [--json FILE] [--clock-log FILE]

Weights: PATH (any format weights.load_weights reads), else the package's default weights,
else --random (Gaussian, std 0.08: fine for timing, the gate still runs against float64).
Each variant: the correctness gate (logits of probe names at every position within 1e-4 of
model.reference_logits), a calibration run, then --repeats timed runs of about --seconds each;
nvidia-smi samples power.draw and clocks.sm every 100 ms during the timed runs.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

from microgpt_bench.backends import cuda
from microgpt_bench.model import BLOCK_SIZE, BOS, TENSOR_SHAPES, Params, encode, reference_logits
from microgpt_bench.weights import WeightsError, load_weights

VARIANTS = {"cuda-naive": cuda.CudaNaiveBackend, "cuda-graph": cuda.CudaGraphBackend,
            "cuda-persistent": cuda.CudaPersistentBackend, "cuda-offline": cuda.CudaOfflineBackend}
PROBES = ["emma", "olivia", "alexandrina", "x", "maximilianjosep", "kana"]


class PowerSampler:
    """nvidia-smi --query-gpu=power.draw,clocks.sm -lms 100 in the background."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = None
        self.thread = None

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=power.draw,clocks.sm",
                                          "--format=csv,noheader,nounits", "-i", "0", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                p, c = (float(v) for v in line.split(","))
                self.samples.append((p, c))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.thread.join(timeout=5)

    def summary(self) -> dict:
        if not self.samples:
            return {"power_w_median": None, "sm_clock_mhz_median": None, "n_samples": 0}
        return {"power_w_median": statistics.median(p for p, _ in self.samples),
                "power_w_max": max(p for p, _ in self.samples),
                "sm_clock_mhz_median": statistics.median(c for _, c in self.samples),
                "n_samples": len(self.samples)}


def gate(backend) -> float:
    seqs = [([BOS] + encode(n))[:BLOCK_SIZE] for n in PROBES]
    worst = 0.0
    for s in seqs:
        worst = max(worst, float(np.abs(backend.logits(s) - reference_logits(backend.params, s)).max()))
    if isinstance(backend, cuda.CudaOfflineBackend):
        for s, got in zip(seqs, backend.logits_offline(seqs)):
            worst = max(worst, float(np.abs(got - reference_logits(backend.params, s)).max()))
    return worst


def bench_single(backend, seconds: float, repeats: int, seed: int):
    n = {"cuda-naive": 500, "cuda-graph": 5000}.get(backend.name, 50_000)
    backend.timed_generate(n, seed)  # warm-up (graph capture, module load)
    while True:
        t0 = time.perf_counter()
        backend.timed_generate(n, seed)
        dt = time.perf_counter() - t0
        if dt > 0.2 * seconds:
            break
        n *= 4
    n = max(1, int(n * seconds / dt))
    rates = []
    with PowerSampler() as power:
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.timed_generate(n, seed)
            rates.append(n / (time.perf_counter() - t0))
    return {"tokens_per_run": n, "rates": rates, "tok_s_median": statistics.median(rates), **power.summary()}


def bench_offline(backend, seconds: float, repeats: int, seed: int, waves: int):
    streams = backend.offline_capacity() * waves
    tps = 64
    backend.timed_offline(streams, tps, seed)
    while True:
        t0 = time.perf_counter()
        backend.timed_offline(streams, tps, seed)
        dt = time.perf_counter() - t0
        if dt > 0.2 * seconds:
            break
        tps *= 4
    tps = max(1, int(tps * seconds / dt))
    rates = []
    with PowerSampler() as power:
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.timed_offline(streams, tps, seed)
            rates.append(streams * tps / (time.perf_counter() - t0))
    return {"streams": streams, "tokens_per_stream": tps, "rates": rates,
            "tok_s_median": statistics.median(rates), **power.summary()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="weights file (default: the package's default weights)")
    ap.add_argument("--random", action="store_true", help="random weights (timing only)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--waves", type=int, default=4, help="offline: streams = resident warps x waves")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--clock-log", help="write `nvidia-smi -q -d CLOCK` here")
    args = ap.parse_args(argv)

    reason = cuda.cuda_availability()
    if reason:
        print(f"CUDA backends unavailable: {reason}", file=sys.stderr)
        return 2
    if args.random:
        rng = np.random.default_rng(0)
        params = Params({n: rng.normal(0.0, 0.08, size=s) for n, s in TENSOR_SHAPES.items()})
        source = "random (numpy default_rng(0), std 0.08)"
    else:
        try:
            params, source = load_weights(args.weights), args.weights or "package default"
        except WeightsError as exc:
            print(f"{exc}\n(pass --weights PATH, e.g. the TALOS weights_only.npy, or --random)", file=sys.stderr)
            return 2

    results = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "weights": source,
               "repeats": args.repeats, "seconds": args.seconds, "variants": {}}
    try:
        results["clocks_before"] = subprocess.run(["nvidia-smi", "-q", "-d", "CLOCK"], capture_output=True,
                                                  text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        results["clocks_before"] = ""
    with PowerSampler() as idle:
        time.sleep(1.0)
    results["idle"] = idle.summary()

    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        backend = VARIANTS[name](params, args.temperature)
        try:
            if "device" not in results:
                results["device"] = backend.info()
            err = gate(backend)
            if name == "cuda-offline":
                row = bench_offline(backend, args.seconds, args.repeats, args.seed, args.waves)
            else:
                row = bench_single(backend, args.seconds, args.repeats, args.seed)
            row["gate_max_abs_error"] = err
            row["gate_pass"] = err < 1e-4
            results["variants"][name] = row
        finally:
            backend.close()
        print(f"{name:16s} {row['tok_s_median']:>15,.0f} tok/s  gate {err:.1e}  "
              f"power {row.get('power_w_median')} W  sm {row.get('sm_clock_mhz_median')} MHz", flush=True)

    if args.clock_log:
        with open(args.clock_log, "w") as fh:
            fh.write(results["clocks_before"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    dev = results.get("device", {})
    print(f"\n{dev.get('device')}  cc {dev.get('compute_capability')}  {dev.get('sms')} SMs  driver "
          f"{dev.get('driver_version')} (CUDA {dev.get('driver_cuda')})  max SM clock {dev.get('max_sm_clock_mhz')} MHz")
    print(f"idle power {results['idle'].get('power_w_median')} W; weights: {source}")
    print(f"{'variant':16s} {'tok/s (median)':>15s} {'runs':>5s} {'power W':>8s} {'SM MHz':>7s}")
    for name, row in results["variants"].items():
        print(f"{name:16s} {row['tok_s_median']:>15,.0f} {len(row['rates']):>5d} "
              f"{row.get('power_w_median') or 0:>8.1f} {row.get('sm_clock_mhz_median') or 0:>7.0f}")
    print(f"command: {results['command']}")
    return 0 if all(r["gate_pass"] for r in results["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
