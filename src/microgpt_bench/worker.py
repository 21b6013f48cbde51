"""The measurement engine: one backend in one scenario, run in its own process by the harness.

    python -m microgpt_bench.worker JOB.json RESULT.json

The job names the backend, the weights, the scenario (scenarios/) and the timing
settings. The worker builds the backend, runs the correctness gate, and only if
the gate passes calibrates and times the scenario's window. Every timed window's
checksum must equal the checksum of the same tokens generated untimed, and the
rate must be one the machine can reach; otherwise the row is failed, not
published. It writes one JSON object to RESULT.json (not stdout, which backends
and frameworks may print to).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from typing import Callable

import numpy as np

from . import scenarios
from .backends import Unavailable, backend_class
from .machine import clock_beside
from .power import meter_for
from .weights import load_weights

# max abs logit error allowed vs the float64 reference, by a backend's precision
GATE_TOLERANCE = {"fp64": 1e-9, "fp32": 1e-4, "q412": 0.15, "talos": 0.6}
# A token is ~3,600 multiply-adds; no core does it in fewer cycles than this, so a
# faster rate means the timed loop skipped work (or the clock estimate is wrong).
MIN_CYCLES_PER_TOKEN = 50
MIN_WINDOW_S = 0.010     # shorter windows are timer noise, not a measurement
MIN_TOKENS = 100         # the smallest window calibration starts from
VERIFY_MAX_TOKENS = 16_000_000  # windows up to this size are checksum-verified as timed

Clock = Callable[[], int]  # nanoseconds, monotonic


# defined beside Scenario so that a scenario's own measurement raises the class this module catches
# (run as `python -m microgpt_bench.worker`, this module is __main__, not microgpt_bench.worker)
from .scenarios.base import MeasurementError  # noqa: E402


def correctness_gate(backend, probe: list[list[int]], reference: list[np.ndarray],
                     scenario: str | scenarios.Scenario | None = None) -> dict:
    """Max abs logit error over every position of every probe sequence."""
    if not isinstance(scenario, scenarios.Scenario):
        scenario = scenarios.get(scenario)
    custom = backend.custom_gate(probe, reference) if scenario.allows_custom_gate else None
    if custom is not None:
        return custom
    got = scenario.probe_logits(backend, probe)
    errors = [float(np.max(np.abs(np.asarray(g, np.float64) - r))) for g, r in zip(got, reference)]
    tolerance = getattr(backend, "gate_tolerance", None) or GATE_TOLERANCE[backend.precision]
    worst = max(errors)
    return {"max_abs_error": worst, "tolerance": tolerance, "passed": bool(worst <= tolerance),
            "positions": sum(len(s) for s in probe)}


def timed_window(scenario, backend, job: dict, tokens: int, clock: Clock) -> tuple[float, int]:
    """(seconds, checksum) of one timed window of `tokens` tokens."""
    t0 = clock()
    checksum = scenario.timed(backend, job, tokens)
    return (clock() - t0) * 1e-9, int(checksum)


def calibrate(scenario, backend, job: dict, clock: Clock) -> int:
    """Token count whose timed window lasts about job['seconds'] (after a warm-up)."""
    unit = scenario.unit(job)
    tokens = max(unit, job.get("min_tokens", MIN_TOKENS) // unit * unit)
    warm, _ = timed_window(scenario, backend, job, tokens, clock)  # warm-up: caches, JIT, page faults
    target = job["seconds"]
    fastest = warm / tokens  # seconds a token in the quickest window so far
    while True:
        elapsed, _ = timed_window(scenario, backend, job, tokens, clock)
        fastest = min(fastest, elapsed / tokens)
        if elapsed >= target / 5 or tokens >= job["max_tokens"]:
            break
        tokens = min(job["max_tokens"], tokens * max(2, int(target / 5 / max(elapsed, 1e-6))))
    tokens = int(tokens * target / max(elapsed, 1e-9))
    # a calibration window slowed by another process must not leave windows under the minimum
    # (rounded first: float noise must not add or drop a token)
    tokens = max(tokens, math.ceil(round(2 * MIN_WINDOW_S / max(fastest, 1e-12), 6)))
    return max(unit, min(job["max_tokens"], tokens // unit * unit))


def check_windows(scenario, backend, job: dict, tokens: int, windows: list[tuple[float, int]]) -> dict:
    """Raise MeasurementError unless the windows are long enough, at a possible rate, and computed
    what they count (checksum vs the untimed generation); returns how the checksum was verified."""
    shortest = min(s for s, _ in windows)
    if shortest < MIN_WINDOW_S:
        raise MeasurementError(f"timed window of {shortest * 1e3:.3g} ms is below {MIN_WINDOW_S * 1e3:g} ms "
                               f"even at {tokens:,} tokens (raise max_tokens, or the loop skips work)")
    ghz = job.get("clock_ghz")
    if ghz and type(backend).device == "cpu":  # the class's: torch keeps a torch.device on the instance
        cycles = ghz * 1e9 * job["threads"] * shortest / tokens
        if cycles < MIN_CYCLES_PER_TOKEN:
            raise MeasurementError(f"{cycles:.3g} cycles a token a core at {ghz:.2f} GHz is physically impossible "
                                   f"(a token is ~3,600 multiply-adds; floor {MIN_CYCLES_PER_TOKEN})")
    checked, got = tokens, [c for _, c in windows]
    if tokens > VERIFY_MAX_TOKENS:  # too many to hold untimed: verify one window of a size that fits
        unit = scenario.unit(job)
        checked = max(unit, VERIFY_MAX_TOKENS // unit * unit)
        got = [scenario.timed(backend, job, checked)]
    expected = scenario.checksum(backend, job, checked)
    wrong = [c for c in got if c != expected]
    if wrong:
        raise MeasurementError(f"timed window checksum {wrong[0]} != {expected} from generate() for the same "
                               f"{checked:,} tokens: the timed loop did not compute the tokens it counts")
    return {"tokens": checked, "windows": len(got), "checksum": expected}


def measure(scenario, backend, job: dict, clock: Clock = time.perf_counter_ns) -> dict:
    tokens = calibrate(scenario, backend, job, clock)
    meter = meter_for(job["backend"], job.get("threads", 1))  # measured power, else the default
    meter.start()
    windows = [timed_window(scenario, backend, job, tokens, clock) for _ in range(job["repeats"])]
    power = meter.stop()
    verified = check_windows(scenario, backend, job, tokens, windows)
    return {"tokens_per_repeat": tokens, "repeats_tok_s": [tokens / s for s, _ in windows],
            "checksum": windows[0][1], "checksum_verified": verified, "power": power}


def run_job(job: dict) -> dict:
    scenario = scenarios.get(job["scenario"])
    result = {"backend": job["backend"], "scenario": scenario.name}
    cls = backend_class(job["backend"])
    result.update(description=cls.description, precision=cls.precision, precomputes=cls.precomputes)
    reason = cls.availability() or scenario.unavailable_reason(cls)
    if reason:
        return {**result, "status": "unavailable", "reason": reason}
    sampler = job.get("sampler", "xorshift32")
    greedy = sampler == "argmax" or (job["temperature"] == 0 and cls.greedy_at_zero_temperature)
    if greedy and "argmax" not in cls.samplers:
        return {**result, "status": "unavailable", "reason": "no greedy (argmax) decoding in this backend"}
    params = load_weights(job["weights"], job.get("order", "c"))
    t0 = time.perf_counter()
    try:
        backend = cls.create(params, job["temperature"], sampler)
    except Unavailable as exc:
        return {**result, "status": "unavailable", "reason": str(exc)}
    result["setup_seconds"] = time.perf_counter() - t0
    reference = [np.asarray(r) for r in job["reference_logits"]]
    gate = correctness_gate(backend, job["probe"], reference, scenario)
    result["gate"] = gate
    result["info"] = backend.info()
    if not gate["passed"]:
        why = gate.get("failure") or f"max logit error {gate['max_abs_error']:.3g} > {gate['tolerance']:g}"
        return {**result, "status": "failed", "reason": f"correctness gate: {why}"}
    if job.get("accuracy") and scenario.measures_accuracy:
        from .accuracy import measure_accuracy
        acc = job["accuracy"]
        result["accuracy"] = measure_accuracy(backend, acc["sequences"], [np.asarray(x) for x in acc["logits"]],
                                              job["temperature"])
    def timing():
        return scenario.measure(backend, job) or measure(scenario, backend, job)

    try:
        # a CPU row's clock beside its timing: results.summarise counts its cycles with it
        measured, clock = clock_beside(timing) if cls.device == "cpu" else (timing(), None)
    except MeasurementError as exc:
        return {**result, "status": "failed", "reason": f"timing rejected: {exc}"}
    result.update(measured)
    if clock:
        result["clock_ghz"] = clock
    result.update(scenario.after_timing(backend, job, measured))
    result["info"] = backend.info()  # after the run: some backends report what ran
    backend.close()
    return {**result, "status": "ok"}


def pin_cpus(job: dict) -> None:
    """--cpu LIST: run this worker (and the threads it starts) on those CPUs only."""
    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path) as fh:
        job = json.load(fh)
    try:
        pin_cpus(job)
        result = run_job(job)
    except Exception as exc:  # reported as the row's reason; the harness goes on
        result = {"backend": job.get("backend"), "scenario": job.get("scenario"), "status": "failed",
                  "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
