#!/usr/bin/env python3
"""What an offline pass executes, counted: vector instructions per token, and the bound they set.

    python scripts/vector_ops.py [--backend c-fp32] [--variant avx512] [--streams 32]
                                 [--tokens 20] [--json out.json]

scripts/trace_ops.c single-steps one offline call of the kernel under ptrace (x86-64
Linux) and classes each instruction by its bytes: vector (VEX or EVEX), of those the pure
moves (loads, stores, broadcasts from memory: no vector ALU port), the FMAs and the VNNI
dot products. Two calls, of --tokens and 2 x --tokens tokens a stream, are counted and
differenced, so what each call does once (setup, the thread split) cancels: the figures are
per token of one stream. The counts are exact for the binary and the inputs; they do not
depend on how busy the machine is, only on the tokens (the same seed gives the same ones).

The bound: on a core where every vector ALU instruction needs one of the same two pipes as
the FMAs (Intel's ports 0 and 5 at 512 bits; peak.c's mixed probe tells: `adds_beside_fmas`
near 1.0), no schedule beats (vector ALU instructions per token) / (the mixed probe's
instructions a cycle, the best seen on this CPU). It is printed beside the multiply-add
floor of peaks.py. Where adds have pipes of their own (Zen 4 and 5: the ratio near 1.5)
the bound is looser than printed.
Stepping costs ~25 us an instruction in a VM: the default run takes about a minute.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microgpt_bench import native, outputs, peaks  # noqa: E402
from microgpt_bench.backends.c_native import C_BACKENDS, build_kernel, candidate_variants  # noqa: E402
from microgpt_bench.weights import load_weights  # noqa: E402

COUNTS = ("instructions", "vector", "vector_moves", "fma", "vpdpwssd")


def tracer() -> Path:
    """scripts/trace_ops.c, built in the cache (native.BuildError if it cannot be)."""
    cc = native.find_c_compiler()
    if cc is None:
        raise native.BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    return native.build("trace-ops", [ROOT / "scripts" / "trace_ops.c"], cc, ["-O2", "-std=gnu11"], link=["-ldl"],
                        suffix="")


def count_call(library: str, kernel: str, weights_file: str, streams: int, tokens: int, seed: int) -> dict:
    proc = subprocess.run([str(tracer()), library, f"mg_{kernel}", weights_file, str(streams), str(tokens), str(seed)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"trace_ops exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return json.loads(proc.stdout)


def per_token(kernel: str, variant: str, streams: int, tokens: int, seed: int = 42) -> dict:
    """Counts per token of one stream: the difference of a 2 x tokens and a tokens call;
    with the model's multiply-adds per token of the same tokens (a stream's first tokens are
    the same in both calls)."""
    lib, info = build_kernel(kernel, variant)
    weights = np.ascontiguousarray(load_weights(None).flat("c", np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        wfile = str(Path(tmp) / "weights.f32")
        weights.tofile(wfile)
        short, long = (count_call(info["library"], kernel, wfile, streams, t, seed) for t in (tokens, 2 * tokens))
    extra = streams * tokens
    out = {k: (long[k] - short[k]) / extra for k in COUNTS}
    out["vector_alu"] = out["vector"] - out["vector_moves"]
    handle = ctypes.c_void_p(getattr(lib, f"mg_{kernel}_create")(native.float_ptr(weights), ctypes.c_float(0.5)))
    macs = []
    for t in (tokens, 2 * tokens):
        toks = np.zeros((streams, t), np.int32)
        getattr(lib, f"mg_{kernel}_generate_offline")(handle, streams, t, seed, 1, native.int_ptr(toks))
        macs.append(sum(peaks.macs_of_run(row) for row in toks))
    getattr(lib, f"mg_{kernel}_destroy")(handle)
    out["macs"] = (macs[1] - macs[0]) / extra
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=sorted(C_BACKENDS), default="c-fp32")
    ap.add_argument("--variant", default="avx512")
    ap.add_argument("--streams", type=int, default=32, help="a multiple of the SoA width keeps every lane live")
    ap.add_argument("--tokens", type=int, default=20, help="tokens a stream in the shorter call")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        ap.error("the tracer single-steps x86-64 instructions under Linux ptrace")
    if args.streams < 1 or args.tokens < 1:
        ap.error("--streams and --tokens must be at least 1")
    backend = C_BACKENDS[args.backend]
    why = candidate_variants().get(args.variant, f"unknown variant {args.variant!r}")
    if why:
        ap.error(f"{args.variant}: {why}")
    try:
        counts = per_token(backend.kernel, args.variant, args.streams, args.tokens)
    except (native.BuildError, RuntimeError) as exc:
        raise SystemExit(str(exc)) from exc
    pk = peaks.cached_peaks()
    mac_peak = (pk.get(f"{peaks.PEAK_KIND[backend.precision]}_peak") or {}).get("per_cycle")
    mixed = (pk.get("best_seen") or {}).get("fp32_mixed_ops_per_cycle") or pk.get("fp32_mixed_ops_per_cycle") or {}
    rate = mixed.get(max(mixed, key=int)) if mixed else None
    print(f"{args.backend} {args.variant}, offline {args.streams} streams, per token of one stream "
          f"({args.tokens} -> {2 * args.tokens} tokens a stream):")
    for k in (*COUNTS, "vector_alu", "macs"):
        print(f"  {k:13} {counts[k]:8.1f}")
    doc = {"backend": args.backend, "variant": args.variant, "streams": args.streams, "tokens": args.tokens,
           "per_token": counts, "peaks": pk}
    if rate:
        bound = counts["vector_alu"] / rate
        doc["vector_alu_bound_cycles"] = bound
        line = f"  bound: {counts['vector_alu']:.1f} vector ALU instructions / {rate:g} a cycle = {bound:.1f} cycles/token"
        if mac_peak:
            floor = counts["macs"] / mac_peak
            doc["mac_floor_cycles"] = floor
            line += f", {bound / floor:.2f}x the multiply-add floor ({floor:.1f})"
        print(line)
        adds = pk.get("adds_beside_fmas")
        if adds:
            print(f"  (the mixed probe: {adds['meaning']}, {adds['ratio']:g}x the FMA rate at {adds['width']} bits)")
    if args.json:
        outputs.atomic_write(args.json, lambda fh: fh.write(json.dumps(doc, indent=1).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
