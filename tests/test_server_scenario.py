"""The server scenario object: its validation, its measurement on a fake clock, its table and chart."""
import subprocess
import sys

import numpy as np
import pytest

from microgpt_bench import scenarios, server, server_report
from microgpt_bench.backends.numpy_backend import NumpyBackend
from microgpt_bench.harness import RunConfig
from microgpt_bench.weights import load_weights
from microgpt_bench.worker import MeasurementError
from test_server import ClockedLanes, FakeClock

STEP_NS = 40_000  # the fake clock's cost of one batched step


@pytest.fixture(scope="module")
def params():
    return load_weights()


def config(**server_opts):
    return RunConfig(backends=["numpy"], scenario="server", extra={"server": server_opts})


@pytest.mark.parametrize("opts, match", [
    ({"rate_start": 0.0}, "--rate-start"), ({"rate_start": float("nan")}, "--rate-start"),
    ({"latency_bound_s": 0.0}, "--latency-bound"), ({"latency_bound_s": float("inf")}, "--latency-bound"),
    ({"requests": 10}, "--requests"), ({"requests": 2.5}, "--requests"), ({"lanes": 0}, "--lanes"),
    ({"rate_start": 100.0, "requests": 3000}, "last over")])
def test_bad_settings_are_refused_with_one_line(opts, match):
    with pytest.raises(ValueError, match=match) as err:
        config(**opts).validate()
    assert "\n" not in str(err.value)


def test_defaults_are_valid_and_reach_the_job():
    cfg = config(requests=None)
    cfg.validate()
    fields = scenarios.get("server").job_fields(cfg)
    assert fields["server"] == {"rate_start": 2000.0, "latency_bound_s": 1e-3, "requests": 3000, "lanes": None}


@pytest.mark.parametrize("args, message", [(["--rate-start", "-5"], "--rate-start"),
                                           (["--latency-bound", "0"], "--latency-bound"),
                                           (["--requests", "5"], "--requests"), (["--threads", "100000"], "--threads")])
def test_cli_refuses_bad_server_options_with_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "microgpt_bench", "run", "--scenario", "server",
                           "--backends", "numpy", "--no-report", "--quiet", *args], capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0]


class FakeClockBackend(NumpyBackend):
    """numpy's lanes on a fake clock: every batched step costs STEP_NS, idle waits jump ahead."""

    def serve(self, arrivals_s, seeds, n_lanes=None, threads=1):
        clock = FakeClock(STEP_NS)
        original = server._wait_until
        server._wait_until = lambda _c, deadline: setattr(clock, "now", max(clock.now, deadline))
        try:
            return server.serve(ClockedLanes(self.lanes(n_lanes or 16), clock), arrivals_s, seeds, clock=clock)
        finally:
            server._wait_until = original


def test_measurement_finds_the_rate_and_keeps_the_curve(params):
    backend = FakeClockBackend(params, 0.5)
    job = {"seed": 42, "threads": 1, "temperature": 0.5,
           "server": {"rate_start": 2000.0, "latency_bound_s": 1e-3, "requests": 1000, "lanes": 16}}
    got = scenarios.get("server").measure(backend, job)
    srv = got["server"]
    assert srv["batch_invariance"]["passed"] and srv["threads"] == 1 and srv["lanes"] == 16
    points = srv["points"]
    # every point at least the asked count, and a schedule of at least 0.1 s (100 bounds)
    assert all(p["requests"] == max(1000, -(-p["offered_names_per_s"] * 0.1 // 1)) for p in points)
    from microgpt_bench.histogram import LogHistogram
    assert all(LogHistogram.from_dict(p["histogram_ns"]).count == p["requests"] for p in points)
    best = srv["sustained_names_per_s"]
    assert all(p["p99_ns"] <= 1e6 for p in points if p["offered_names_per_s"] == best)
    assert any(p["p99_ns"] > 1e6 and p["offered_names_per_s"] > best for p in points)  # bracketed from above
    # 16 lanes at 40 us a step serve at most 16 / (40 us * mean name length) names/s
    assert best < 16 / (STEP_NS * 1e-9 * 5)
    assert got["repeats_tok_s"] == [srv["sustained_tok_s"]] and got["tokens_per_repeat"] > 0
    assert srv["fpga"]["sustained_names_per_s"] and srv["fpga"]["mhz"] == 56.25
    # the table and the search's steps from the row
    row = {"backend": "numpy", "scenario": "server", "status": "ok", "threads": 1, "server": srv,
           "tok_s": {"median": srv["sustained_tok_s"]}}
    offline = {"backend": "numpy", "scenario": "offline", "status": "ok", "tok_s": {"median": 2 * srv["sustained_tok_s"]}}
    text = server_report.format_server({"rows": [row, offline]})
    assert "numpy [server 16L x1t]" in text and "50%" in text and "TALOS-V2 (FPGA, modelled)" in text
    assert text.count("offered") == len(points)


def test_an_overloaded_point_runs_long_enough_to_show_it():
    from microgpt_bench.scenarios.server import point_requests
    assert point_requests(2000.0, 3000, 1e-3) == 3000
    assert point_requests(1e6, 3000, 1e-3) == 100_000          # 0.1 s of the schedule
    assert point_requests(1e6, 3000, 1e-2) == 1_000_000        # 100 bounds of 10 ms


def test_a_backend_that_changes_names_under_batching_fails_the_gate(params):
    class Reordered(NumpyBackend):
        def serve(self, arrivals_s, seeds, n_lanes=None, threads=1):
            res = super().serve(arrivals_s, seeds, n_lanes, threads)
            res.names[0], res.names[1] = res.names[1], res.names[0]
            return res

    job = {"seed": 42, "threads": 1, "temperature": 0.5, "server": {"requests": 1000}}
    with pytest.raises(MeasurementError, match="batch invariance"):
        scenarios.get("server").measure(Reordered(params, 0.5), job)


def test_the_python_loop_serves_from_one_thread_whatever_the_job_says(params):
    from microgpt_bench.scenarios.server import threads_for
    from microgpt_bench.backends.c_native import CFp32Backend
    assert threads_for(NumpyBackend(params, 0.5), 2) == 1
    assert threads_for(CFp32Backend.__new__(CFp32Backend), 2) == 2


def test_chart_draws_every_row_the_fpga_and_the_bound(tmp_path):
    pytest.importorskip("matplotlib")
    pts = [{"offered_names_per_s": r, "p99_ns": p} for r, p in ((1e3, 2e5), (2e3, 5e5), (4e3, 3e6))]
    srv = {"latency_bound_s": 1e-3, "points": pts, "fpga": {"mhz": 56.25, "points": pts[:2]}}
    row = {"backend": "numpy", "scenario": "server", "status": "ok", "server": srv}

    class Ctx:
        def measured(self):
            return [{"label": "numpy [server]", "row": row}]

    got = server_report.chart_server(Ctx(), tmp_path / "s.png")
    assert got["bound_ms"] == 1.0 and got["lines"] == ["numpy [server]", "TALOS-V2 (FPGA, modelled) 56.25 MHz"]
    assert (tmp_path / "s.png").stat().st_size > 0
