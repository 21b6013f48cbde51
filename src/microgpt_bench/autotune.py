"""Run-time choice of the native kernels' compiled variant (a planner, as FFTW's).

Every variant this CPU can run (AVX-512, AVX2 with and without EVEX encodings,
scalar; NEON on Arm) is built side by side as its own library. On first use on
a CPU each one passes the gate (logits within the precision's tolerance of the
float64 reference, and tokens bit-identical to the scalar variant's, single
stream and offline) and is timed briefly, single stream and offline apart. The
fastest that passed is remembered per CPU signature, kernel source and compiler
in the cache directory, and used; a new CPU (or a changed source or compiler)
is planned afresh. A variant that fails the gate is recorded and never chosen.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import model, native
from .samplers import stream_seed

SCENARIOS = ("single-stream", "offline")
GATE_TOLERANCE = {"fp32": 1e-4, "q412": 0.15}  # as worker.GATE_TOLERANCE
GATE_SEQUENCES = ["emma", "olivia", "isabella", "x", "maximilianjonas"]
SINGLE_TOKENS, OFFLINE_STREAMS, OFFLINE_TOKENS, REPEATS = 20_000, 64, 300, 5


def gate_sequences() -> list[list[int]]:
    return [([model.BOS] + model.encode(n))[: model.BLOCK_SIZE] for n in GATE_SEQUENCES]


def gate(runner, reference_runner, params, precision: str) -> str | None:
    """None when the variant passes, else why not."""
    worst = 0.0
    for seq in gate_sequences():
        worst = max(worst, float(np.abs(runner.logits(seq) - model.reference_logits(params, seq)).max()))
    if not worst <= GATE_TOLERANCE[precision]:
        return f"max logit error {worst:.3g} > {GATE_TOLERANCE[precision]:g}"
    if reference_runner is not None:
        if runner.generate(3000, 42) != reference_runner.generate(3000, 42):
            return "tokens differ from the scalar variant's"
        if runner.generate(500, 9, "python") != reference_runner.generate(500, 9, "python"):
            return "python-sampler tokens differ from the scalar variant's"
    off = runner.generate_offline(19, 200, 5, 1)
    if any(off[i].tolist() != runner.generate(200, stream_seed(5, i)) for i in range(19)):
        return "an offline stream differs from its single-stream run"
    return None


def time_variant(runner, timer: Callable[[], float]) -> dict:
    """Best-of-REPEATS ns/token, single stream and offline (one thread)."""
    def best(fn, tokens):
        fn()
        times = []
        for _ in range(REPEATS):
            t0 = timer()
            fn()
            times.append(timer() - t0)
        return min(times) * 1e9 / tokens

    return {"single-stream": best(lambda: runner.timed_generate(SINGLE_TOKENS, 7), SINGLE_TOKENS),
            "offline": best(lambda: runner.timed_offline(OFFLINE_STREAMS, OFFLINE_TOKENS, 7, 1),
                            OFFLINE_STREAMS * OFFLINE_TOKENS)}


def plan(variants: dict[str, Callable[[], object]], params, precision: str,
         timer: Callable[[], float] = time.perf_counter, reference: str = "scalar") -> dict:
    """Gate and time each variant (name -> a factory of a runner, or a string: why it is
    unavailable); the fastest passing one per scenario."""
    measured: dict[str, dict | str] = {}
    runners = {}
    load = load_average()  # before this process adds its own: whether others competed
    try:
        if reference in variants and not isinstance(variants[reference], str):
            runners[reference] = variants[reference]()
        for name, make in variants.items():
            if isinstance(make, str):
                measured[name] = f"unavailable: {make}"
                continue
            try:
                runner = runners.get(name) or runners.setdefault(name, make())
                why = gate(runner, None if name == reference else runners.get(reference), params, precision)
            except Exception as exc:  # a variant that cannot even run is failed, not fatal
                why = f"{type(exc).__name__}: {exc}"
            measured[name] = f"failed the gate: {why}" if why else time_variant(runner, timer)
    finally:
        for runner in runners.values():
            getattr(runner, "close", lambda: None)()
    chosen = {}
    for scenario in SCENARIOS:
        ok = {n: m[scenario] for n, m in measured.items() if isinstance(m, dict)}
        chosen[scenario] = min(ok, key=ok.get) if ok else None
    return {"chosen": chosen, "measured": measured, "planned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": load, "cores": os.cpu_count()}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def busy_note(plan: dict) -> str | None:
    """A warning when the plan was timed on a machine that other work kept busy (its
    figures, and so its choice, may not hold on a quiet one)."""
    load, cores = plan.get("load_average"), plan.get("cores") or 1
    if isinstance(load, (int, float)) and load >= max(1.0, 0.5 * cores):
        return f"planned under load {load:g} on {cores} cores: delete its autotune file to replan when quiet"
    return None


def cpu_signature() -> str:
    return native.cpu_signature()


def cache_file(kernel: str, sources: list[Path], compiler: str, others: list[str] = ()) -> Path:
    """The plan's file: per CPU, kernel source, compiler (and version) and the other compilers tried."""
    digest = hashlib.sha256(cpu_signature().encode())
    for src in sources:
        digest.update(src.read_bytes())
    for cc in (compiler, *others):
        digest.update(cc.encode())
        digest.update(native.compiler_version(cc).encode())
    return native.cache_dir() / f"autotune-{kernel}-{digest.hexdigest()[:16]}.json"


def cached_plan(path: Path, make_plan: Callable[[], dict]) -> tuple[dict, bool]:
    """(the plan, whether it came from the cache); a new plan is written atomically."""
    try:
        got = json.loads(path.read_text())
        if isinstance(got, dict) and isinstance(got.get("chosen"), dict) and got.get("cpu") == cpu_signature():
            return got, True
    except (OSError, json.JSONDecodeError):
        pass
    got = {**make_plan(), "cpu": cpu_signature()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(got, fh, indent=1)
    os.replace(tmp, path)
    return got, False
