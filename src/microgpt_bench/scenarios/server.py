"""server: Poisson arrivals into continuous batching (MLPerf's Server), the highest rate whose
p99 per-name latency stays within a bound.

Each load point sends at least `requests` requests, and enough for its schedule to last
100 bounds and 0.1 s (point_requests), as a Poisson process at an offered rate (names/s),
the schedule drawn before the run (server.poisson_arrivals, seeded by the job's seed); request
i generates one name with seed stream_seed(seed, i). The backend serves them (Backend.serve:
native loops in C for c-fp32/c-q412, the Python loop over lanes() elsewhere) and latency runs
from each request's *scheduled* arrival to its last token. The bracketing search
(server.max_sustained_rate) doubles or halves the rate until the bound is bracketed, then
bisects; every point's request count and curve (offered rate, achieved names/s and tok/s,
mean, p50, p99, p99.9) is kept. The FPGA, modelled as a single server with its cycle model
(server.fpga_load_point), runs the same schedules.

The gate: the offline kernels' logits (as the offline scenario), then batch invariance of a
short load point with every request arriving at once (queue never empty): each request's
name must be the offline scenario's for its seed. The row's tok/s is the achieved tok/s at
the sustained rate.
"""
from __future__ import annotations

import math

from .base import Scenario

DEFAULTS = {"rate_start": 2000.0, "latency_bound_s": 1e-3, "requests": 3000, "lanes": None}
MIN_REQUESTS = 1000          # a p99 over fewer requests rests on fewer than 10 of them
MAX_REQUESTS = 1_000_000
MAX_POINT_S = 10.0           # the search never halves to a rate whose minimum schedule lasts longer
INVARIANCE_REQUESTS = 256    # the gate's short load point
MIN_POINT_S = 0.1            # a load point's schedule lasts at least this long ...
MIN_POINT_BOUNDS = 100       # ... and this many latency bounds (an overload of 1% then shows)
MAX_POINT_REQUESTS = 2_000_000


def settings(cfg_or_job) -> dict:
    extra = getattr(cfg_or_job, "extra", None)
    given = (extra if extra is not None else cfg_or_job).get("server") or {}
    return {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


class Server(Scenario):
    name = "server"
    description = "Poisson arrivals, continuous batching: the highest names/s with p99 latency within the bound"
    offered_as = "server"
    allows_custom_gate = False

    def validate(self, cfg):
        s = settings(cfg)
        rate, bound, n, lanes = s["rate_start"], s["latency_bound_s"], s["requests"], s["lanes"]
        return [
            (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0,
             f"--rate-start must be a finite number of names/s > 0, got {rate!r}"),
            (isinstance(bound, (int, float)) and math.isfinite(bound) and 1e-6 <= bound <= 10,
             f"--latency-bound must be in 0.001..10000 ms, got {bound * 1e3 if isinstance(bound, (int, float)) else bound!r} ms"),
            (isinstance(n, int) and MIN_REQUESTS <= n <= MAX_REQUESTS,
             f"--requests must be an integer in {MIN_REQUESTS}..{MAX_REQUESTS} per load point, got {n!r}"),
            (lanes is None or (isinstance(lanes, int) and 1 <= lanes <= 4096),
             f"--lanes must be an integer in 1..4096, got {lanes!r}"),
            (not isinstance(rate, (int, float)) or not isinstance(n, int) or n / max(rate, 1e-300) <= MAX_POINT_S,
             f"--rate-start {rate!r} names/s with --requests {n!r} makes a load point last over {MAX_POINT_S:g} s"),
        ]

    def job_fields(self, cfg):
        return {"streams": 1, "threads": cfg.threads, "server": settings(cfg)}

    def probe_logits(self, backend, probe):
        return backend.logits_offline(probe)

    def tag(self, row):
        srv = row.get("server") or {}
        return f"server {srv.get('lanes', '?')}L x{srv.get('threads', row.get('threads', 1))}t"

    def row_key(self, row):
        srv = row.get("server") or {}
        return (self.name, int(srv.get("lanes") or 1), int(srv.get("threads") or row.get("threads") or 1))

    def table_note(self):
        return "server rows: tok/s achieved at the highest Poisson rate whose p99 name latency met the bound"

    def measure(self, backend, job):
        from .. import server
        from ..histogram import LogHistogram
        from ..talos import FPGA_MHZ
        from .base import MeasurementError

        s = settings(job)
        threads = threads_for(backend, job["threads"])
        lanes = s["lanes"] or backend.serve_lanes()
        seed = job["seed"]
        invariance = batch_invariance(backend, seed, lanes, threads)
        if not invariance["passed"]:
            raise MeasurementError(f"batch invariance: {invariance['differ']} of {invariance['requests']} served "
                                   "names differ from the offline scenario's for the same seeds")
        seeds = server.request_seeds(seed, s["requests"])
        bound, start = s["latency_bound_s"], s["rate_start"]
        floor = s["requests"] / MAX_POINT_S
        all_seeds = {}

        def point(rate):
            n = point_requests(rate, s["requests"], bound)
            if n not in all_seeds:
                all_seeds[n] = server.request_seeds(seed, n)
            res = backend.serve(server.poisson_arrivals(rate, n, seed), all_seeds[n], lanes, threads)
            hist = LogHistogram()
            hist.record(res.latency_ns)  # the percentiles are exact; the histogram keeps the distribution
            return {"offered_names_per_s": rate, **res.summary(), "histogram_ns": hist.to_dict()}

        best, points = server.max_sustained_rate(point, bound, start, min_rate=floor)
        fpga = fpga_search(backend.params, job["temperature"], seeds, bound, start, seed,
                           job.get("fpga_mhz") or FPGA_MHZ, floor)
        fields = {"server": {"latency_bound_s": bound, "requests_per_point": len(seeds), "lanes": lanes,
                             "threads": threads,
                             "rate_start": start, "sustained_names_per_s": best,
                             "points": [p.summary for p in points], "batch_invariance": invariance, "fpga": fpga}}
        if best is None:
            low = min(points, key=lambda p: p.rate)
            raise MeasurementError(f"no offered rate down to {low.rate:.3g} names/s kept p99 within "
                                   f"{bound * 1e3:g} ms (p99 {low.p99_s * 1e3:.3g} ms there)")
        at = next(p.summary for p in points if p.rate == best)
        fields["server"]["sustained_tok_s"] = at["achieved_tok_s"]
        return {**fields, "tokens_per_repeat": at["tokens"], "repeats_tok_s": [at["achieved_tok_s"]],
                "checksum_verified": invariance}


def point_requests(rate: float, requests: int, bound_s: float) -> int:
    """Requests in a load point at `rate`: at least `requests`, and enough for the schedule to
    last MIN_POINT_BOUNDS bounds (and MIN_POINT_S). A fixed count would let an overloaded
    server pass: its whole backlog could drain within the bound once the schedule ends, while
    over a long enough schedule the queue of an overloaded server grows past any bound."""
    return int(min(MAX_POINT_REQUESTS, max(requests, math.ceil(rate * max(MIN_POINT_S, MIN_POINT_BOUNDS * bound_s)))))


def threads_for(backend, threads: int) -> int:
    """The Python loop (Backend.serve) serves from one thread; native loops take the job's."""
    from ..backends.base import Backend
    return 1 if type(backend).serve is Backend.serve else threads


def batch_invariance(backend, seed: int, lanes: int, threads: int) -> dict:
    """Serve INVARIANCE_REQUESTS requests all arriving at once; each name must be the first
    name of stream i of generate_offline(seed): nothing lost, nothing changed by batching."""
    import numpy as np

    from .. import server
    n = INVARIANCE_REQUESTS
    res = backend.serve(np.zeros(n), server.request_seeds(seed, n), lanes, threads)
    want = [server.first_name(row) for row in backend.generate_offline(n, 16, seed)]
    differ = sum(a != b for a, b in zip(res.names, want)) + abs(len(res.names) - len(want))
    return {"requests": n, "differ": differ, "passed": differ == 0 and bool(np.all(res.latency_ns >= 0))}


def fpga_search(params, temperature, seeds, bound, start, seed, mhz, floor) -> dict:
    """The modelled FPGA's curve and sustained rate over the same schedules (server.fpga_load_point)."""
    from .. import server
    steps = server.fpga_name_steps(params, temperature, seeds)
    best, points = server.max_sustained_rate(lambda r: {"offered_names_per_s": r,
                                                        **server.fpga_load_point(r, steps, mhz, seed)},
                                             bound, start, min_rate=floor)
    at = next((p.summary for p in points if p.rate == best), None)
    return {"mhz": mhz, "sustained_names_per_s": best, "sustained_tok_s": at["achieved_tok_s"] if at else None,
            "points": [p.summary for p in points]}
