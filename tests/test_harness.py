"""The harness and the engine: isolation, the gate before timing, calibration, checks on the
timed windows, scenarios as plugins, results file, table. No test here depends on speed: the
engine's timing is tested in-process on a fake clock that only a fake backend's counted work moves."""
import json
import os
from pathlib import Path

import pytest

import fakes
import microgpt_bench
from microgpt_bench import scenarios
from microgpt_bench.harness import RunConfig, run_benchmark
from microgpt_bench.results import FPGA_TOK_S, ResultsError, load_results, summarise, write_json
from microgpt_bench.table import format_table
from microgpt_bench.weights import load_weights
from microgpt_bench.worker import MeasurementError, calibrate, measure

MACHINE = {"label": "test", "clock": {"ghz": 4.0, "method": "test"}, "cores": 2}


@pytest.fixture
def plugins(monkeypatch):
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("MICROGPT_BENCH_PLUGINS", fakes.PLUGINS)
    monkeypatch.setenv("MICROGPT_BENCH_SCENARIOS", fakes.SCENARIO_PLUGINS)
    src_dir = str(Path(microgpt_bench.__file__).resolve().parents[1])  # the worker imports this tree's code
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, src_dir]))
    monkeypatch.syspath_prepend(tests_dir)


def run(backends, **kw):
    kw = {"seconds": 0.05, "repeats": 3, **kw}
    return run_benchmark(RunConfig(backends=backends, **kw), MACHINE)


@pytest.fixture(scope="module")
def params():
    return load_weights(None)


def job(**kw):
    return {"backend": "fake-counting", "seed": 42, "seconds": 0.2, "repeats": 3, "max_tokens": 10**9,
            "streams": 1, "threads": 1, "clock_ghz": 4.0, **kw}


def test_misbehaving_backends_become_rows_and_the_run_goes_on(plugins):
    res = run(["fake-crash", "fake-wrong", "fake-raise", "fake-missing", "fake-instant", "numpy"],
              timeout=120, latency=False)
    rows = {r["backend"]: r for r in res["rows"]}
    assert rows["fake-crash"]["status"] == "failed" and "signal 6" in rows["fake-crash"]["reason"]
    assert rows["fake-wrong"]["status"] == "failed" and "correctness gate" in rows["fake-wrong"]["reason"]
    assert "tok_s" not in rows["fake-wrong"]
    assert rows["fake-raise"]["status"] == "failed" and "kernel exploded" in rows["fake-raise"]["reason"]
    assert rows["fake-missing"]["status"] == "unavailable"
    assert rows["fake-missing"]["reason"] == "the frobnicator is not installed"
    # a timed loop that returns at once is failed, never published at an absurd rate
    assert rows["fake-instant"]["status"] == "failed" and "timing rejected" in rows["fake-instant"]["reason"]
    assert "tok_s" not in rows["fake-instant"]
    numpy = rows["numpy"]
    assert numpy["status"] == "ok" and len(numpy["repeats_tok_s"]) == 3
    assert numpy["checksum_verified"]["checksum"] == numpy["checksum"]
    table = format_table(res)
    for name in rows:
        assert name in table
    assert "FAILED" in table and "TALOS-V2" in table
    assert "not run here: fake-missing (the frobnicator is not installed)" in table


def test_a_hung_backend_is_killed_at_the_timeout(plugins):
    row = run(["fake-hang"], timeout=3, repeats=1)["rows"][0]
    assert row["status"] == "failed" and "timed out after 3 s" in row["reason"]


def test_calibration_hits_the_requested_window_on_a_fake_clock(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=20_000)
    got = measure(scenarios.get("single-stream"), backend, job(), clock)
    assert got["tokens_per_repeat"] == 10_000  # 0.2 s at 20 us a token
    assert got["repeats_tok_s"] == [50_000.0] * 3
    assert backend.calls[-3:] == [10_000] * 3 and backend.calls[0] == 100  # warm-up first, from 100
    assert got["checksum"] == sum(backend.generate(10_000, 42))


def test_calibration_respects_max_tokens(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=20_000)
    assert calibrate(scenarios.get("single-stream"), backend, job(max_tokens=3_000), clock) == 3_000


def test_a_stalled_calibration_window_still_gives_long_enough_windows(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=20_000)
    timed = backend.timed_generate

    def stalled_once(n, seed):  # the first window after the warm-up waits 50x (another process ran)
        if len(backend.calls) == 1:
            clock.advance(49 * n * 20_000)
        return timed(n, seed)
    backend.timed_generate = stalled_once
    got = measure(scenarios.get("single-stream"), backend, job(seconds=0.05), clock)
    assert got["tokens_per_repeat"] == 1_000  # 2 x the 10 ms minimum at the fastest rate seen, not 50
    assert got["repeats_tok_s"] == [50_000.0] * 3


def test_a_wrong_checksum_fails_the_row(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=20_000)
    backend.timed_generate = lambda n, seed: (clock.advance(n * 20_000), 0)[1]  # time passes, nothing computed
    with pytest.raises(MeasurementError, match="checksum 0 != .* did not compute"):
        measure(scenarios.get("single-stream"), backend, job(), clock)


def test_an_impossible_rate_fails_the_row(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=5)  # 20 cycles a token at 4 GHz
    with pytest.raises(MeasurementError, match="physically impossible"):
        measure(scenarios.get("single-stream"), backend, job(seconds=0.05, max_tokens=20_000_000), clock)


def test_a_window_below_the_minimum_fails_the_row(params):
    clock = fakes.FakeClock()
    backend = fakes.CountingBackend(params, clock=clock, ns_per_token=20_000)
    with pytest.raises(MeasurementError, match="below 10 ms"):
        measure(scenarios.get("single-stream"), backend, job(max_tokens=200), clock)


def test_bad_config_is_refused():
    for kw, msg in [({"repeats": 0}, "repeats"), ({"seconds": -1}, "seconds"), ({"seed": 0}, "seed"),
                    ({"seconds": 0.001}, "seconds must be >= 0.02"),
                    ({"threads": 100000}, "threads"), ({"scenario": "no-such-scenario"}, "scenario"),
                    ({"seconds": 10, "repeats": 5, "timeout": 60}, "cannot hold a row's timing"),
                    ({"cpus": [10**6]}, "--cpu")]:
        with pytest.raises(ValueError, match=msg):
            RunConfig(backends=["numpy"], **kw).validate()


def test_a_scenario_registered_from_a_test_plugs_in(plugins):
    """The echo scenario lives in tests/fakes.py; the harness and worker are untouched."""
    res = run(["numpy"], scenario="echo", repeats=1)
    row = res["rows"][0]
    assert row["status"] == "ok", row.get("reason")
    assert row["scenario"] == "echo" and row["echo"]["tokens"] == row["tokens_per_repeat"]
    assert f"numpy [echo {row['tokens_per_repeat']}]" in format_table(res)


def test_cpu_list_pins_the_worker():
    cpu = min(os.sched_getaffinity(0))
    row = run(["numpy"], repeats=1, cpus=[cpu])["rows"][0]
    assert row["status"] == "ok", row.get("reason")
    lat = row["latency"]
    assert lat["status"] == "ok" and lat["affinity"] == [cpu] and lat["cpu"] == cpu
    assert set(lat["context_switches"]) == {"voluntary", "involuntary"}


def test_summary_statistics():
    row = summarise({"repeats_tok_s": [100.0, 120.0, 110.0], "threads": 2}, 2.0)
    assert row["tok_s"] == {"median": 110.0, "min": 100.0, "max": 120.0, "spread": pytest.approx(20 / 110)}
    assert row["vs_fpga"] == pytest.approx(110 / FPGA_TOK_S)
    assert row["cycles_per_token_per_core"] == pytest.approx(2 * row["cycles_per_token"])
    assert row["unstable"] is True


def test_cycles_count_at_the_rows_own_clock_where_it_has_one():
    run_clock = 4.0
    row = summarise({"repeats_tok_s": [1e6] * 3, "threads": 2, "clock_ghz": {"before": 2.0, "after": 2.2}}, run_clock)
    assert row["cycles_per_token"] == pytest.approx(2100) and row["cycles_per_token_per_core"] == pytest.approx(4200)
    assert row["cycles_clock"] == {"ghz": 2.1, "measured": "beside the row"}
    assert row["clock_moved"] is True  # 10% between before and after
    steady = summarise({"repeats_tok_s": [1e6] * 3, "clock_ghz": {"before": 2.0, "after": 2.04}}, run_clock)
    assert steady["clock_moved"] is False and steady["cycles_per_token"] == pytest.approx(2020)
    for damaged in ({"before": 2.0}, {"before": "fast", "after": 2.0}, {"before": -1, "after": 2.0}, 3.0, None):
        got = summarise({"repeats_tok_s": [1e6] * 3, "clock_ghz": damaged}, run_clock)
        assert got["cycles_per_token"] == pytest.approx(4000) and got["cycles_clock"]["measured"] == "at the run's start"
        assert "clock_moved" not in got
    assert "cycles_clock" not in summarise({"repeats_tok_s": [1e6] * 3}, None)


def test_a_cpu_row_measures_the_clock_beside_its_timing_and_the_table_says_so():
    from microgpt_bench import machine

    ghz = machine.measure_clock_ghz()
    assert ghz is not None and 0.3 < ghz < 10, ghz  # a plausible core clock, not a speed claim
    res = run(["numpy"], repeats=2, latency=False)
    row = res["rows"][0]
    assert row["status"] == "ok", row.get("reason")
    assert 0.3 < row["clock_ghz"]["before"] < 10 and 0.3 < row["clock_ghz"]["after"] < 10
    assert row["cycles_clock"]["measured"] == "beside the row"
    assert row["cycles_per_token"] == pytest.approx(row["cycles_clock"]["ghz"] * 1e9 / row["tok_s"]["median"], rel=1e-4)
    table = format_table(res)
    assert "cycles/token from each row's clock, a dependent add chain just before and after its timing" in table
    assert "the run's start: a 4.00 GHz clock estimate" in table
    res["rows"][0] = {**row, "clock_moved": True, "clock_ghz": {"before": 2.0, "after": 2.5}}
    assert "clock moved by over 5% during: numpy (2.00 -> 2.50 GHz)" in format_table(res)


def test_damaged_clock_fields_in_a_results_file_do_not_break_the_table():
    res = run(["numpy"], repeats=2, latency=False)
    row = res["rows"][0]
    res["rows"][0] = {**row, "clock_moved": True, "clock_ghz": {"before": "fast"},
                      "cycles_clock": {"measured": "beside the row", "ghz": None}}
    table = format_table(res)
    assert "clock moved" not in table and "the run's start" not in table and "a 4.00 GHz clock estimate" in table


def test_without_a_compiler_the_row_clock_is_none_and_the_runs_clock_serves(monkeypatch):
    from microgpt_bench import machine, native

    monkeypatch.setattr(native, "find_c_compiler", lambda: None)
    assert machine.measure_clock_ghz() is None
    row = summarise({"repeats_tok_s": [1e6] * 3, "clock_ghz": None}, 3.0)
    assert row["cycles_clock"] == {"ghz": 3.0, "measured": "at the run's start"}


def test_results_file_round_trip_and_refusals(tmp_path):
    from microgpt_bench.results import new_results
    doc = new_results(MACHINE, {"seed": 1})
    write_json(doc, tmp_path / "r.json")
    assert load_results(tmp_path / "r.json")["machine"]["label"] == "test"
    (tmp_path / "old.json").write_text(json.dumps({**doc, "schema_version": 99}))
    with pytest.raises(ResultsError, match="schema version 99"):
        load_results(tmp_path / "old.json")
    (tmp_path / "foreign.json").write_text('{"hello": 1}')
    with pytest.raises(ResultsError, match="not a microgpt-bench results file"):
        load_results(tmp_path / "foreign.json")
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(ResultsError, match="not JSON"):
        load_results(tmp_path / "junk.json")
