"""The server scenario's machinery: Poisson load, continuous batching, the FPGA as a queue.

MLPerf's Server scenario: requests arrive as a Poisson process at rate lambda (names/s),
the whole schedule drawn before the run from a seeded RNG; each request generates one
name (BOS to BOS, or 16 tokens) with its own xorshift32 state, stream_seed(seed, i), so
request i's name is what the offline scenario's stream i generates first. Latency runs
from the request's *scheduled* arrival to its last token, never from when the system
picked it up: a server that falls behind is charged for the queue it built (the wrk2 /
HdrHistogram rule against coordinated omission).

Continuous batching (vLLM's idea): waiting requests queue FIFO; at every step boundary
the free lanes of a batched kernel are filled from the queue, every busy lane advances
one token, and a finished name frees its lane at once.

The FPGA is modelled as what it is, one server with a fixed service time per step: the
same arrival schedule into a FIFO single-server queue whose service time for a name is
its cycle model (868 + 20*pos board cycles a step, at 56.25 MHz) for the name the
emulator generates for that request. simulate_single_server runs that queue event by
event; pollaczek_khinchine_mean is the M/G/1 formula the tests hold it to.
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .model import BLOCK_SIZE, BOS
from .samplers import stream_seed

FPGA_BOARD_CYCLES_BASE = 868  # the core's 866 + 20*pos, plus 2 back to back on the board
FPGA_CYCLES_PER_POS = 20
DEFAULT_LATENCY_BOUND_S = 1e-3


# ------------------------------------------------------------------ load generator


def poisson_arrivals(rate: float, n_requests: int, seed: int) -> np.ndarray:
    """Scheduled arrival times (s from the start) of n_requests at rate names/s: exponential
    gaps from a seeded generator, the whole schedule fixed before the run."""
    if not rate > 0 or not np.isfinite(rate):
        raise ValueError(f"the arrival rate must be a finite number > 0 names/s, got {rate}")
    if n_requests < 1:
        raise ValueError(f"at least one request is needed, got {n_requests}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n_requests)
    return np.cumsum(gaps)


def request_seeds(seed: int, n_requests: int) -> np.ndarray:
    return np.array([stream_seed(seed, i) for i in range(n_requests)], dtype=np.uint32)


MAX_SCHEDULE_S = 3600.0  # a schedule longer than an hour is a mistake, not a benchmark


def check_schedule(arrivals_s, seeds) -> tuple[np.ndarray, np.ndarray]:
    """(arrival ns as int64, seeds as uint32) of a valid schedule; ValueError (one line) else:
    at least one request, finite non-decreasing times in 0..1 h, one nonzero seed each."""
    arr = np.asarray(arrivals_s, dtype=np.float64)
    sd = np.asarray(seeds)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"the arrival schedule must be a non-empty 1-d sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > MAX_SCHEDULE_S:
        raise ValueError(f"arrival times must be finite and in 0..{MAX_SCHEDULE_S:g} s")
    if np.any(np.diff(arr) < 0):
        raise ValueError("arrival times must be in order (non-decreasing)")
    if sd.shape != arr.shape or sd.dtype.kind not in "iu" or np.any(sd <= 0) or np.any(sd > 0xFFFFFFFF):
        raise ValueError(f"one seed in 1..{0xFFFFFFFF} per request is needed ({arr.size} requests)")
    return (np.ascontiguousarray(np.round(arr * 1e9), dtype=np.int64),
            np.ascontiguousarray(sd, dtype=np.uint32))


def check_threads(threads, most: int = 64) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= most:
        raise ValueError(f"threads must be an integer in 1..{most}, got {threads!r}")
    return int(threads)


# ------------------------------------------------------------ continuous batching


class Lanes(Protocol):
    """A batched kernel as the server drives it: `n_lanes` independent streams."""

    n_lanes: int

    def start(self, lane: int, seed: int) -> None:
        """Begin a name in this lane: BOS at position 0, its own xorshift32 state."""

    def step(self, lanes: np.ndarray) -> np.ndarray:
        """Advance those lanes one token each (the full forward pass and the sampler)."""


@dataclass
class ServeResult:
    arrivals_s: np.ndarray        # scheduled arrival of each request
    latency_ns: np.ndarray        # scheduled arrival -> last token, per request
    names: list[list[int]]        # each request's tokens (its name and the closing BOS)
    wall_s: float                 # first arrival to last completion
    steps: int                    # batched steps run
    busy_lane_steps: int          # tokens generated (one per busy lane per step)

    @property
    def tokens(self) -> int:
        return self.busy_lane_steps

    def summary(self) -> dict:
        lat = self.latency_ns.astype(np.float64)
        span = max(self.wall_s, 1e-12)
        return {"requests": len(lat), "tokens": self.tokens, "achieved_names_per_s": len(lat) / span,
                "achieved_tok_s": self.tokens / span, "mean_ns": float(lat.mean()),
                **{f"p{q:g}_ns": float(np.percentile(lat, q)) for q in (50, 90, 99, 99.9)},
                "max_ns": float(lat.max()), "steps": self.steps,
                "mean_busy_lanes": self.busy_lane_steps / max(self.steps, 1)}


def serve(lanes: Lanes, arrivals_s: np.ndarray, seeds: np.ndarray,
          clock: Callable[[], int] = time.perf_counter_ns) -> ServeResult:
    """Run the schedule through continuous batching on `lanes`, timing with `clock` (ns)."""
    arrivals_ns, seeds = check_schedule(arrivals_s, seeds)
    n = len(arrivals_ns)
    latency = np.full(n, -1, np.int64)
    names: list[list[int]] = [[] for _ in range(n)]
    queue: deque[int] = deque()
    free = list(range(lanes.n_lanes - 1, -1, -1))
    busy: dict[int, int] = {}  # lane -> request
    arrived = done = steps = busy_steps = 0
    t0 = clock() - int(arrivals_ns[0])  # the first request arrives now
    while done < n:
        now = clock() - t0
        while arrived < n and arrivals_ns[arrived] <= now:
            queue.append(arrived)
            arrived += 1
        while free and queue:
            lane, request = free.pop(), queue.popleft()
            lanes.start(lane, int(seeds[request]))
            busy[lane] = request
        if not busy:  # idle until the next scheduled arrival
            _wait_until(clock, t0 + int(arrivals_ns[arrived]))
            continue
        stepping = np.fromiter(busy, dtype=np.int64, count=len(busy))
        tokens = lanes.step(stepping)
        now = clock() - t0
        steps += 1
        busy_steps += len(stepping)
        for lane, token in zip(stepping.tolist(), np.asarray(tokens).tolist()):
            request = busy[lane]
            names[request].append(token)
            if token == BOS or len(names[request]) == BLOCK_SIZE:
                latency[request] = now - arrivals_ns[request]
                del busy[lane]
                free.append(lane)
                done += 1
    wall = (clock() - t0 - arrivals_ns[0]) / 1e9
    return ServeResult(np.asarray(arrivals_s), latency, names, float(wall), steps, busy_steps)


def _wait_until(clock: Callable[[], int], deadline_ns: int) -> None:
    """Spin to a deadline, sleeping through all but its last 200 us (sleep overshoots)."""
    while True:
        left = deadline_ns - clock()
        if left <= 0:
            return
        if left > 300_000:
            time.sleep((left - 200_000) / 1e9)


def first_name(tokens) -> list[int]:
    """The first generation of a token stream: up to and including its BOS, or 16 tokens."""
    out = []
    for token in tokens:
        out.append(int(token))
        if token == BOS or len(out) == BLOCK_SIZE:
            break
    return out


# ---------------------------------------------------------------- the FPGA, modelled


def fpga_name_seconds(n_steps: int, mhz: float) -> float:
    """Board time of one name of n_steps steps: sum over pos of 868 + 20*pos cycles."""
    cycles = FPGA_BOARD_CYCLES_BASE * n_steps + FPGA_CYCLES_PER_POS * n_steps * (n_steps - 1) // 2
    return cycles / (mhz * 1e6)


@dataclass(order=True)
class _Event:
    time: float
    kind: int                     # 0: a departure, 1: an arrival (departures first at a tie)
    request: int = field(compare=False)


def simulate_single_server(arrivals_s: np.ndarray, service_s: np.ndarray) -> np.ndarray:
    """Sojourn time (arrival -> done) of each request in a FIFO single-server queue, by
    discrete-event simulation: a heap of arrival and departure events, one server."""
    events = [_Event(float(t), 1, i) for i, t in enumerate(arrivals_s)]
    heapq.heapify(events)
    waiting: deque[int] = deque()
    sojourn = np.zeros(len(arrivals_s))
    busy = False
    while events:
        ev = heapq.heappop(events)
        if ev.kind == 1:
            waiting.append(ev.request)
        else:
            sojourn[ev.request] = ev.time - arrivals_s[ev.request]
            busy = False
        if not busy and waiting:
            request = waiting.popleft()
            heapq.heappush(events, _Event(ev.time + float(service_s[request]), 0, request))
            busy = True
    return sojourn


def pollaczek_khinchine_mean(rate: float, service_s: np.ndarray) -> float:
    """M/G/1 mean sojourn time: E[S] + lambda E[S^2] / (2 (1 - rho)), rho = lambda E[S] < 1."""
    es, es2 = float(np.mean(service_s)), float(np.mean(np.square(service_s)))
    rho = rate * es
    if rho >= 1:
        return float("inf")
    return es + rate * es2 / (2 * (1 - rho))


# ------------------------------------------------------------- the sustained rate


@dataclass
class LoadPoint:
    rate: float
    summary: dict

    @property
    def p99_s(self) -> float:
        return self.summary["p99_ns"] / 1e9


def max_sustained_rate(measure: Callable[[float], dict], bound_s: float, start_rate: float,
                       refinements: int = 5, max_points: int = 24,
                       min_rate: float = 0.0) -> tuple[float | None, list[LoadPoint]]:
    """The largest offered rate whose p99 latency stays within bound_s, the LoadGen way: double
    (or halve) from start_rate until the bound is bracketed, then bisect `refinements` times.
    measure(rate) runs one load point and returns its summary (with p99_ns). Halving stops
    below min_rate (a point's duration is requests / rate). Returns the best passing rate
    (None if even the lowest tried fails) and every point, in the order run."""
    if not bound_s > 0:
        raise ValueError(f"the latency bound must be > 0 s, got {bound_s}")
    if not start_rate > 0 or not np.isfinite(start_rate):
        raise ValueError(f"the starting rate must be a finite number > 0 names/s, got {start_rate}")
    points: list[LoadPoint] = []

    def run(rate: float) -> bool:
        points.append(LoadPoint(rate, measure(rate)))
        return points[-1].p99_s <= bound_s

    good, bad, rate = None, None, start_rate
    while (good is None or bad is None) and len(points) < max_points:
        if run(rate):
            good, rate = rate, rate * 2
        else:
            bad, rate = rate, rate / 2
        if good is not None and bad is not None or rate < min_rate:
            break
    for _ in range(refinements if good and bad else 0):
        mid = (good * bad) ** 0.5  # geometric: rates span decades
        if run(mid):
            good = mid
        else:
            bad = mid
    return good, points


def fpga_name_steps(params, temperature: float, seeds: np.ndarray) -> np.ndarray:
    """Steps (tokens, BOS included) of the name talos-emu generates from each request's seed."""
    from .backends.talos_emu import TalosEmuBackend, TalosEmuPyBackend

    try:
        emu = TalosEmuBackend(params, temperature)
    except Exception:  # no C compiler: the Python core gives the same names, slower
        emu = TalosEmuPyBackend(params, temperature)
    try:
        return np.array([len(first_name(emu.generate(BLOCK_SIZE, int(s)))) for s in seeds])
    finally:
        emu.close()


def fpga_load_point(rate: float, name_steps: np.ndarray, mhz: float, seed: int) -> dict:
    """One load point of the modelled FPGA: the schedule into its single-server queue, each
    request served for its name's board time."""
    service = np.array([fpga_name_seconds(int(n), mhz) for n in name_steps])
    arrivals = poisson_arrivals(rate, len(service), seed)
    sojourn = simulate_single_server(arrivals, service)
    span = float((arrivals + sojourn).max() - arrivals[0] + service[0])
    lat = sojourn * 1e9
    return {"requests": len(service), "tokens": int(np.sum(name_steps)), "achieved_names_per_s": len(service) / span,
            "achieved_tok_s": float(np.sum(name_steps)) / span, "mean_ns": float(lat.mean()),
            **{f"p{q:g}_ns": float(np.percentile(lat, q)) for q in (50, 90, 99, 99.9)},
            "max_ns": float(lat.max()), "utilisation": rate * float(service.mean())}
