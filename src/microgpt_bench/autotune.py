"""Run-time choice of the native kernels' compiled variant (a planner, as FFTW's).

Every variant this CPU can run (AVX-512, AVX2 with and without EVEX encodings,
scalar; NEON on Arm) is built side by side as its own library. On first use on
a CPU each one passes the gate (logits within the precision's tolerance of the
float64 reference, and tokens bit-identical to the scalar variant's, single
stream and offline) and is timed briefly, single stream and offline apart, all the
variants in interleaved rounds (a disturbance then falls on every variant). The
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
UNSTABLE_MEDIAN = 0.15  # the chosen's median round over its best - 1 above this: the choice may not hold when quiet


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


def timed_calls(runner) -> dict[str, tuple[Callable[[], object], int]]:
    """Per scenario: one timed call of the runner and the tokens it generates."""
    return {"single-stream": (lambda: runner.timed_generate(SINGLE_TOKENS, 7), SINGLE_TOKENS),
            "offline": (lambda: runner.timed_offline(OFFLINE_STREAMS, OFFLINE_TOKENS, 7, 1),
                        OFFLINE_STREAMS * OFFLINE_TOKENS)}


def time_variants(runners: dict[str, object], timer: Callable[[], float]) -> dict[str, dict | str]:
    """Best-of-REPEATS ns/token per variant, single stream and offline (one thread), with
    every round's figure; or why a variant failed while timed. The variants are timed in
    rounds, each one call of every variant (in an order rotated round by round), not one
    variant's repeats back to back: on a shared machine a disturbance lasting a while then
    slows one round of every variant, which the best of the others discards, where back to
    back it would slow every repeat of one variant and decide the choice."""
    calls = {name: timed_calls(runner) for name, runner in runners.items()}
    times: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SCENARIOS} for n in calls}
    failed: dict[str, str] = {}

    def call(name, fn):
        try:
            fn()
        except Exception as exc:  # a variant that fails while timed is out, not the plan
            failed[name] = f"failed while timed: {type(exc).__name__}: {exc}"

    for name, per_scenario in calls.items():  # warm each once: first-call costs are not the variant's
        for fn, _ in per_scenario.values():
            call(name, fn)
    names = [n for n in calls if n not in failed]
    for round_ in range(REPEATS):
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            for scenario, (fn, tokens) in calls[name].items():
                if name not in failed:
                    t0 = timer()
                    call(name, fn)
                    times[name][scenario].append((timer() - t0) * 1e9 / tokens)
    return {name: failed.get(name) or {**{s: min(t) for s, t in per.items()},
                                       "rounds": {s: [round(x, 3) for x in t] for s, t in per.items()}}
            for name, per in times.items()}


def plan(variants: dict[str, Callable[[], object]], params, precision: str,
         timer: Callable[[], float] = time.perf_counter, reference: str = "scalar") -> dict:
    """Gate each variant (name -> a factory of a runner, or a string: why it is
    unavailable), time those that pass together; the fastest per scenario."""
    measured: dict[str, dict | str] = {}
    runners, passed = {}, {}
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
            if why:
                measured[name] = f"failed the gate: {why}"
            else:
                passed[name] = runner
        timed = time_variants(passed, timer) if passed else {}
        measured = {name: timed.get(name, measured.get(name)) for name in variants}
    finally:
        for runner in runners.values():
            getattr(runner, "close", lambda: None)()
    chosen = {}
    for scenario in SCENARIOS:
        ok = {n: m[scenario] for n, m in measured.items() if isinstance(m, dict)}
        chosen[scenario] = min(ok, key=ok.get) if ok else None
    return {"chosen": chosen, "measured": measured, "planned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": load, "cores": os.cpu_count(), "rounds": REPEATS}


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
    noise = chosen_noise(plan)
    if noise is not None and noise > UNSTABLE_MEDIAN:
        return (f"the chosen variant's median round was {100 * noise:.0f}% over its best: "
                "delete its autotune file to replan when quiet")
    return None


def chosen_noise(plan: dict) -> float | None:
    """The chosen variants' worst median round over their best, minus 1 (None for plans
    without rounds): a median, so one disturbed round alone does not count."""
    noise = []
    for scenario, name in (plan.get("chosen") or {}).items():
        got = (plan.get("measured") or {}).get(name)
        rounds = got.get("rounds") if isinstance(got, dict) else None
        rounds = rounds.get(scenario) if isinstance(rounds, dict) else None
        if isinstance(rounds, list) and rounds and all(isinstance(x, (int, float)) and x > 0 for x in rounds):
            noise.append(float(np.median(rounds)) / min(rounds) - 1)
    return max(noise) if noise else None


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
