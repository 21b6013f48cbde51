"""The benchmark harness: one subprocess per backend, correctness gate, timing, results.

Each (backend, scenario) runs in a fresh `python -m microgpt_bench.worker`
process with BLAS and OpenMP pinned to the thread count the scenario gives its
job (one, unless the scenario spreads streams over threads). A crash, a hang (per-row timeout) or a failed
gate turns into a row with the reason; the other rows still run.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import scenarios
from .backends import backend_class
from .model import BOS, encode, reference_logits
from .procs import run_isolated
from .results import new_results, summarise
from .weights import WeightsError, load_weights, shipped_weights_path
from .worker import MIN_WINDOW_S

# Probe for the correctness gate: names of several lengths, every position;
# the last one fills all 16 cache slots.
PROBE_NAMES = ["kelyn", "emma", "xavier", "zoe", "abcdefghijklmno"]
PROBE = [[BOS] + encode(n) for n in PROBE_NAMES]

# calibration (~1 window), the untimed checksum generation (~1), the latency pass and its check (~2)
OVERHEAD_WINDOWS = 4

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")


@dataclass
class RunConfig:
    backends: list[str]
    weights: str | None = None
    order: str = "c"
    temperature: float = 0.5
    sampler: str = "xorshift32"  # the timed loop's: xorshift32, or argmax (greedy decoding)
    seed: int = 42
    seconds: float = 1.0
    repeats: int = 5
    scenario: str = scenarios.DEFAULT
    streams: int = 1
    threads: int = 1
    timeout: float = 300.0
    max_tokens: int = 2_000_000_000
    accuracy: bool = False
    label: str | None = None
    latency: bool = True
    cpus: list[int] | None = None
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """ValueError with a one-line message for the first setting that cannot work."""
        scenario = scenarios.get(self.scenario)  # an unknown name raises here
        checks = [
            (self.seconds >= 2 * MIN_WINDOW_S, f"--seconds must be >= {2 * MIN_WINDOW_S:g} (windows under "
                                               f"{MIN_WINDOW_S:g} s are rejected as timer noise), got {self.seconds}"),
            (self.repeats >= 1, f"--repeats must be >= 1, got {self.repeats}"),
            (self.sampler in ("xorshift32", "argmax"), f"--sampler must be xorshift32 or argmax, got {self.sampler!r}"),
            (1 <= self.seed <= 0xFFFFFFFF, f"--seed must be in 1..4294967295 (xorshift32), got {self.seed}"),
            (self.streams >= 1, f"--streams must be >= 1, got {self.streams}"),
            (1 <= self.threads <= 4 * (os.cpu_count() or 1) and self.threads <= 1024,
             f"--threads must be in 1..{4 * (os.cpu_count() or 1)} on this machine, got {self.threads}"),
            (self.timeout > 0, f"--timeout must be > 0, got {self.timeout}"),
            (self.timeout >= self.needed_seconds(),
             f"--timeout {self.timeout:g} s cannot hold a row's timing: --seconds x (--repeats + "
             f"{OVERHEAD_WINDOWS}) = {self.needed_seconds():g} s (calibration, checksum and latency passes "
             "included); raise --timeout or lower --seconds/--repeats"),
            (not self.cpus or set(self.cpus) <= available_cpus(),
             f"--cpu {self.cpus} is not a subset of this process's CPUs {sorted(available_cpus())}"),
            *scenario.validate(self),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for name in self.backends:  # each backend's own temperature range (talos-emu: Q8.8)
            try:
                backend_class(name).validate_temperature(self.temperature)
            except ValueError as exc:
                raise ValueError(f"--temperature for {name}: {exc}") from None
            except ImportError:
                pass  # an optional framework missing: its row says so

    def needed_seconds(self) -> float:
        """Least time one row's timing takes: the repeats plus about OVERHEAD_WINDOWS more windows."""
        return self.seconds * (self.repeats + OVERHEAD_WINDOWS)


def available_cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def capped_threads(fields: dict, backend: str) -> dict:
    """A scenario's job fields with the threads capped by the backend's max_threads, so that
    a row records (and per-core figures count) the threads it really runs on."""
    try:
        cap = getattr(backend_class(backend), "max_threads", None)
    except (ImportError, AttributeError, ValueError):  # missing or unknown: its worker says so
        cap = None
    if cap and fields.get("threads", 1) > cap:
        return {**fields, "threads": cap}
    return fields


def make_job(cfg: RunConfig, backend: str, reference, clock_ghz: float | None = None) -> dict:
    return {"backend": backend, "weights": cfg.weights, "order": cfg.order, "temperature": cfg.temperature,
            "sampler": cfg.sampler,
            "seed": cfg.seed, "seconds": cfg.seconds, "repeats": cfg.repeats, "scenario": cfg.scenario,
            **capped_threads(scenarios.get(cfg.scenario).job_fields(cfg), backend),
            "max_tokens": cfg.max_tokens, "probe": PROBE,
            "reference_logits": [r.tolist() for r in reference], "clock_ghz": clock_ghz,
            "latency": cfg.latency, "cpus": cfg.cpus, **cfg.extra}


def run_worker(job: dict, timeout: float) -> dict:
    """Run one job in a subprocess; crashes and hangs become failed rows.

    The worker runs in its own session (procs.run_isolated): a timeout or an
    interrupt ends it and any children it started; its output is kept as a tail only."""
    with tempfile.TemporaryDirectory(prefix="microgpt-bench-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "microgpt_bench.worker", str(job_path), str(result_path)]
        base = {"backend": job["backend"], "scenario": job["scenario"], "status": "failed"}
        done = run_isolated(cmd, timeout, env=worker_env(job["threads"]), workdir=tmp)
        if done.timed_out:
            return {**base, "reason": f"timed out after {timeout:g} s (hung or far too slow); killed"}
        if result_path.exists():
            try:
                return json.loads(result_path.read_text())
            except json.JSONDecodeError:
                pass
        return {**base, "reason": f"worker crashed ({done.how()}): {done.last_lines()}"}


def check_weights_arithmetic(params, reference, source: str) -> None:
    """Weights that overflow the arithmetic would fail every row's gate with a NaN error,
    blaming the backends: name the weights instead, before any row runs."""
    if not all(np.all(np.isfinite(r)) for r in reference):
        raise WeightsError(f"{source}: the float64 reference's logits are NaN or infinite: "
                           "the weights overflow the model's arithmetic")
    from .backends.numpy_backend import NumpyBackend  # the float32 forward pass, in-process

    with np.errstate(all="ignore"):
        backend = NumpyBackend(params)
        finite = all(np.all(np.isfinite(backend.logits(seq))) for seq in PROBE)
    if not finite:
        raise WeightsError(f"{source}: the weights overflow float32 arithmetic (the probe's float32 logits "
                           "are NaN or infinite); no float32 backend can run them")


def run_benchmark(cfg: RunConfig, machine: dict, progress=None) -> dict:
    """Run every requested backend; returns the results document."""
    cfg.validate()
    params = load_weights(cfg.weights, cfg.order)
    reference = [reference_logits(params, seq) for seq in PROBE]
    weights = str(Path(cfg.weights).resolve()) if cfg.weights else str(shipped_weights_path())
    check_weights_arithmetic(params, reference, weights)
    config = {"backends": cfg.backends, "weights": weights, "order": cfg.order, "temperature": cfg.temperature,
              "seed": cfg.seed, "sampler": cfg.sampler, "seconds": cfg.seconds, "repeats": cfg.repeats,
              "timeout": cfg.timeout, "probe": PROBE_NAMES, "cpus": cfg.cpus}
    if cfg.accuracy and scenarios.get(cfg.scenario).measures_accuracy:
        from .accuracy import STEPS, reference_contexts
        seqs, logits = reference_contexts(params, cfg.temperature)
        cfg.extra["accuracy"] = {"sequences": seqs, "logits": [x.tolist() for x in logits]}
        config["accuracy"] = {"steps": STEPS, "contexts": "float64 reference generation, xorshift32 seed 42"}
    results = new_results(machine, config)
    clock = (machine.get("clock") or {}).get("ghz")
    eta = RowTimeEstimate(len(cfg.backends))
    for i, name in enumerate(cfg.backends, 1):
        job = make_job(cfg, name, reference, clock)
        if progress:
            progress(f"[{i}/{len(cfg.backends)}] {name} ({cfg.scenario}) ...{eta.text()}")
        t0 = time.perf_counter()
        row = run_worker(job, cfg.timeout)
        row.update(streams=job["streams"], threads=job["threads"], wall_seconds=time.perf_counter() - t0)
        eta.done(row)
        results["rows"].append(summarise(row, clock))
        if progress:
            progress("    " + row_status(row))
    return results


class RowTimeEstimate:
    """Time left in a run: the mean wall time of the rows that ran so far times the rows left
    (rows that could not run take no time and are not counted as ones that will)."""

    def __init__(self, total: int):
        self.left, self.timed, self.seconds = total, 0, 0.0

    def done(self, row: dict) -> None:
        self.left -= 1
        if row.get("status") != "unavailable":
            self.timed += 1
            self.seconds += row.get("wall_seconds", 0.0)

    def text(self) -> str:
        if not self.timed or not self.left:
            return ""
        return f"  (about {self.seconds / self.timed * self.left:.0f} s left)"


def row_status(row: dict) -> str:
    if row.get("status") == "unavailable":
        from .table import short_reason
        return f"not run here: {short_reason(row.get('reason', ''))}"
    if row.get("status") != "ok":
        return f"{row.get('status', 'failed').upper()}: {row.get('reason', '')}"
    gate = row["gate"]
    how = gate["method"] if gate.get("method") else f"max err {gate['max_abs_error']:.2g}"
    text = f"gate ok ({how}), {row['tok_s']['median']:,.0f} tok/s"
    if row.get("unstable"):
        text += f"  [unstable: spread {row['tok_s']['spread']:.0%}]"
    return text
