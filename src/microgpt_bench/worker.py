"""One backend's measurement, run in its own process by the harness.

    python -m microgpt_bench.worker JOB.json RESULT.json

The job names the backend, the weights, the scenario and the timing settings.
The worker builds the backend, runs the correctness gate, and only if the gate
passes calibrates and times the generation loop. It writes one JSON object to
RESULT.json (not stdout, which backends and frameworks may print to).
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np

from .backends import Unavailable, backend_class
from .power import meter_for
from .weights import load_weights

# max abs logit error allowed vs the float64 reference, by a backend's precision
GATE_TOLERANCE = {"fp64": 1e-9, "fp32": 1e-4, "q412": 0.15, "talos": 0.6}


def correctness_gate(backend, probe: list[list[int]], reference: list[np.ndarray], scenario: str) -> dict:
    """Max abs logit error over every position of every probe sequence."""
    custom = backend.custom_gate(probe, reference) if scenario != "offline" else None
    if custom is not None:
        return custom
    if scenario == "offline":
        got = backend.logits_offline(probe)
    else:
        got = [backend.logits(seq) for seq in probe]
    errors = [float(np.max(np.abs(np.asarray(g, np.float64) - r))) for g, r in zip(got, reference)]
    tolerance = getattr(backend, "gate_tolerance", None) or GATE_TOLERANCE[backend.precision]
    worst = max(errors)
    return {"max_abs_error": worst, "tolerance": tolerance, "passed": bool(worst <= tolerance),
            "positions": sum(len(s) for s in probe)}


def _timed_call(backend, job: dict, tokens: int) -> float:
    """Seconds for one timed window of `tokens` tokens (offline: spread over the streams)."""
    seed = job["seed"]
    if job["scenario"] == "offline":
        per_stream = max(1, tokens // job["streams"])
        t0 = time.perf_counter()
        backend.timed_offline(job["streams"], per_stream, seed, job["threads"])
        return time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.timed_generate(tokens, seed)
    return time.perf_counter() - t0


def calibrate(backend, job: dict) -> int:
    """Token count whose timed window lasts about job['seconds'] (after a warm-up)."""
    unit = job["streams"] if job["scenario"] == "offline" else 1
    tokens = max(unit, job.get("min_tokens", 100) // unit * unit)
    _timed_call(backend, job, tokens)  # warm-up: caches, JIT, page faults
    target = job["seconds"]
    while True:
        elapsed = _timed_call(backend, job, tokens)
        if elapsed >= target / 5 or tokens >= job["max_tokens"]:
            break
        tokens = min(job["max_tokens"], tokens * max(2, int(target / 5 / max(elapsed, 1e-6))))
    tokens = int(tokens * target / max(elapsed, 1e-9))
    return max(unit, min(job["max_tokens"], tokens // unit * unit))


def measure(backend, job: dict) -> dict:
    tokens = calibrate(backend, job)
    per_repeat = tokens if job["scenario"] != "offline" else tokens // job["streams"] * job["streams"]
    meter = meter_for(job["backend"], job.get("threads", 1))  # measured power, else the default
    meter.start()
    rates = [per_repeat / _timed_call(backend, job, per_repeat) for _ in range(job["repeats"])]
    return {"tokens_per_repeat": per_repeat, "repeats_tok_s": rates, "power": meter.stop()}


def run_job(job: dict) -> dict:
    result = {"backend": job["backend"], "scenario": job["scenario"]}
    cls = backend_class(job["backend"])
    result.update(description=cls.description, precision=cls.precision, precomputes=cls.precomputes)
    reason = cls.availability()
    if reason:
        return {**result, "status": "unavailable", "reason": reason}
    if job["scenario"] not in cls.scenarios:
        return {**result, "status": "unavailable", "reason": f"no {job['scenario']} scenario"}
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
    gate = correctness_gate(backend, job["probe"], reference, job["scenario"])
    result["gate"] = gate
    result["info"] = backend.info()
    if not gate["passed"]:
        why = gate.get("failure") or f"max logit error {gate['max_abs_error']:.3g} > {gate['tolerance']:g}"
        return {**result, "status": "failed", "reason": f"correctness gate: {why}"}
    if job.get("accuracy"):
        from .accuracy import measure_accuracy
        acc = job["accuracy"]
        result["accuracy"] = measure_accuracy(backend, acc["sequences"], [np.asarray(x) for x in acc["logits"]],
                                              job["temperature"])
    result.update(measure(backend, job))
    result["info"] = backend.info()  # after the run: some backends report what ran
    backend.close()
    return {**result, "status": "ok"}


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path) as fh:
        job = json.load(fh)
    try:
        result = run_job(job)
    except Exception as exc:  # reported as the row's reason; the harness goes on
        result = {"backend": job.get("backend"), "scenario": job.get("scenario"), "status": "failed",
                  "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
