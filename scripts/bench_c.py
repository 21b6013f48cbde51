#!/usr/bin/env python3
"""The C kernels on every vector path, through the engine (gate, own worker process, checksums).

    python scripts/bench_c.py [--paths avx512,avx2,scalar] [-- RUN OPTIONS]

For each path, MICROGPT_BENCH_SIMD=<path> (the workers build that path; one the
compiler or CPU cannot do is an "unavailable" row) and then
`microgpt-bench run --backends c-fp32,c-q412 --scenario both --json results/c-<path>.json`
plus any RUN OPTIONS (e.g. --streams 64 --threads 2 --seconds 1). The other
benchmarks are plain `microgpt-bench run` commands (see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from microgpt_bench.cli import main as cli_main  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", default="avx512,avx2,scalar", help="MICROGPT_BENCH_SIMD values, comma-separated")
    ap.add_argument("run_options", nargs=argparse.REMAINDER, help="after --: options for microgpt-bench run")
    args = ap.parse_args(argv)
    extra = [a for a in args.run_options if a != "--"]
    worst = 0
    for path in filter(None, args.paths.split(",")):
        os.environ["MICROGPT_BENCH_SIMD"] = path  # inherited by every worker process
        print(f"== vector path {path}", flush=True)
        worst = max(worst, cli_main(["run", "--backends", "c-fp32,c-q412", "--scenario", "both",
                                     "--json", f"results/c-{path}.json", *extra]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
