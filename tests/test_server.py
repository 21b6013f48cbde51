"""The server scenario's machinery: load generator, continuous batching, the FPGA's queue, the search."""
import numpy as np
import pytest

from microgpt_bench import server, talos
from microgpt_bench.backends.numpy_backend import NumpyBackend
from microgpt_bench.model import BOS
from microgpt_bench.samplers import stream_seed
from microgpt_bench.weights import load_weights


@pytest.fixture(scope="module")
def params():
    return load_weights()


class FakeClock:
    """A clock that advances only when the server does work: `step_ns` per batched step, plus
    whatever an idle wait asks for. Tests never depend on the machine's speed."""

    def __init__(self, step_ns):
        self.now, self.step_ns = 0, step_ns

    def __call__(self):
        return self.now


class ClockedLanes:
    """Wraps lanes so that each step costs a known time on a fake clock."""

    def __init__(self, lanes, clock):
        self.inner, self.clock, self.n_lanes = lanes, clock, lanes.n_lanes

    def start(self, lane, seed):
        self.inner.start(lane, seed)

    def step(self, lanes):
        self.clock.now += self.clock.step_ns
        return self.inner.step(lanes)


def fake_wait(monkeypatch, clock):
    monkeypatch.setattr(server, "_wait_until", lambda _clock, deadline: setattr(clock, "now", max(clock.now, deadline)))


def test_poisson_schedule_is_seeded_and_has_the_rate():
    a = server.poisson_arrivals(1000.0, 20_000, seed=3)
    assert np.array_equal(a, server.poisson_arrivals(1000.0, 20_000, seed=3))
    assert not np.array_equal(a, server.poisson_arrivals(1000.0, 20_000, seed=4))
    gaps = np.diff(np.concatenate([[0.0], a]))
    assert np.all(gaps > 0) and abs(gaps.mean() - 1e-3) < 3e-5      # exponential, mean 1/rate
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05                # coefficient of variation 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_rates_are_refused(bad):
    with pytest.raises(ValueError, match="rate"):
        server.poisson_arrivals(bad, 10, 1)


@pytest.mark.parametrize("n_lanes", [1, 3, 16])
def test_every_request_completes_once_with_its_offline_name(params, monkeypatch, n_lanes):
    """Batch invariance under a queue that never empties: each request's name is the first name
    the offline scenario's stream i generates (seed stream_seed(seed, i))."""
    backend = NumpyBackend(params, 0.5)
    n = 60
    seeds = server.request_seeds(42, n)
    clock = FakeClock(step_ns=50_000)
    fake_wait(monkeypatch, clock)
    arrivals = server.poisson_arrivals(1e6, n, seed=1)  # far more than the lanes serve: a long queue
    res = server.serve(ClockedLanes(backend.lanes(n_lanes), clock), arrivals, seeds, clock=clock)
    offline = backend.generate_offline(n, 16, 42)
    assert [server.first_name(row) for row in offline] == res.names
    assert np.all(res.latency_ns > 0) and len(res.names) == n
    assert res.busy_lane_steps == sum(len(name) for name in res.names)
    # work-conserving: no lane idles while requests wait, so the steps are the tokens spread over
    # the lanes plus at most the drain of the last names (16 steps)
    assert res.steps <= -(-res.busy_lane_steps // n_lanes) + 16


def test_latency_counts_the_queue_from_the_scheduled_arrival(params, monkeypatch):
    """One lane, a step of 1 ms, every request arriving at once: request k waits for all
    before it, and its latency says so (no coordinated omission)."""
    backend = NumpyBackend(params, 0.5)
    n = 5
    clock = FakeClock(step_ns=1_000_000)
    fake_wait(monkeypatch, clock)
    arrivals = np.full(n, 1e-9)
    res = server.serve(ClockedLanes(backend.lanes(1), clock), arrivals, server.request_seeds(7, n), clock=clock)
    steps = np.cumsum([len(name) for name in res.names])
    assert np.array_equal(res.latency_ns, steps * 1_000_000)


def test_an_idle_server_waits_for_the_schedule(params, monkeypatch):
    backend = NumpyBackend(params, 0.5)
    clock = FakeClock(step_ns=1_000)
    fake_wait(monkeypatch, clock)
    arrivals = np.array([0.001, 0.5, 1.0])  # far apart: each request finds the server idle
    res = server.serve(ClockedLanes(backend.lanes(4), clock), arrivals, server.request_seeds(7, 3), clock=clock)
    assert np.array_equal(res.latency_ns, np.array([len(n) * 1_000 for n in res.names]))
    assert res.wall_s > 0.99


def test_the_fpga_queue_meets_pollaczek_khinchine(params):
    """At utilisation 0.5 the simulated mean sojourn is within 3% of the M/G/1 value computed
    from the same service times (the names the emulator generates for the requests)."""
    steps = server.fpga_name_steps(params, 0.5, server.request_seeds(42, 20_000))
    service = np.array([server.fpga_name_seconds(int(k), talos.FPGA_MHZ) for k in steps])
    rate = 0.5 / service.mean()
    arrivals = server.poisson_arrivals(rate, len(service), seed=11)
    sojourn = server.simulate_single_server(arrivals, service)
    assert np.all(sojourn >= service - 1e-15)
    assert abs(sojourn.mean() / server.pollaczek_khinchine_mean(rate, service) - 1) < 0.03


def test_fpga_name_time_is_the_cycle_model():
    # TALOS-V2's own test: seed 2, "kelyn" + BOS, 6 steps in 5,508 board cycles
    assert server.fpga_name_seconds(6, 56.25) == pytest.approx(5508 / 56.25e6)
    assert server.fpga_name_seconds(1, 1.0) == pytest.approx(868e-6)


def test_single_server_is_fifo_and_work_conserving():
    arrivals = np.array([0.0, 0.1, 0.2, 5.0])
    service = np.array([1.0, 1.0, 1.0, 1.0])
    assert np.allclose(server.simulate_single_server(arrivals, service), [1.0, 1.9, 2.8, 1.0])


def test_search_brackets_then_bisects_to_the_bound():
    """A fake system whose p99 grows with load (M/M/1-like, capacity 1000/s)."""
    def measure(rate):
        rho = min(rate / 1000.0, 0.999999)
        return {"p99_ns": 1e9 * (1e-4 / (1 - rho))}
    best, points = server.max_sustained_rate(measure, bound_s=1e-3, start_rate=50.0, refinements=8)
    assert 880 < best <= 900  # p99 = 1 ms at rho = 0.9
    assert all(p.p99_s <= 1e-3 for p in points if p.rate <= best)
    assert any(p.p99_s > 1e-3 for p in points)


def test_search_from_above_halves_until_it_passes():
    best, points = server.max_sustained_rate(lambda r: {"p99_ns": 2e6 if r > 100 else 1e5}, 1e-3, 1000.0, 3)
    assert 50 < best <= 100 and points[0].rate == 1000.0


def test_fpga_load_curve_blows_up_at_its_capacity(params):
    steps = server.fpga_name_steps(params, 0.5, server.request_seeds(42, 3000))
    capacity = 1.0 / np.mean([server.fpga_name_seconds(int(n), 56.25) for n in steps])
    light = server.fpga_load_point(0.1 * capacity, steps, 56.25, seed=5)
    heavy = server.fpga_load_point(0.95 * capacity, steps, 56.25, seed=5)
    assert light["utilisation"] == pytest.approx(0.1, rel=1e-9)
    assert light["p50_ns"] < 2 * np.median(steps) * 1e9 * 1100 / 56.25e6  # barely queued
    assert heavy["p99_ns"] > 5 * light["p99_ns"]                          # the queue builds
    best, _ = server.max_sustained_rate(lambda r: server.fpga_load_point(r, steps, 56.25, 5), 1e-3,
                                        0.5 * capacity)
    assert 0.5 * capacity <= best < capacity
