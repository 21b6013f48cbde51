"""The harness: isolation, the gate before timing, calibration, results file, table."""
import json
from pathlib import Path

import pytest

import fakes
from microgpt_bench.harness import RunConfig, run_benchmark
from microgpt_bench.results import FPGA_TOK_S, ResultsError, load_results, summarise, write_json
from microgpt_bench.table import format_table

MACHINE = {"label": "test", "clock": {"ghz": 4.0, "method": "test"}, "cores": 2}


@pytest.fixture
def plugins(monkeypatch):
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("MICROGPT_BENCH_PLUGINS", fakes.PLUGINS)
    monkeypatch.setenv("PYTHONPATH", tests_dir)
    monkeypatch.syspath_prepend(tests_dir)


def run(backends, weights, **kw):
    cfg = RunConfig(backends=backends, weights=str(weights), seconds=0.2, repeats=3, **kw)
    return run_benchmark(cfg, MACHINE)


@pytest.fixture(scope="module")
def weights(shared_data):
    return shared_data / "talos" / "weights_only.npy"


def test_misbehaving_backends_become_rows_and_the_run_goes_on(plugins, weights):
    res = run(["fake-crash", "fake-hang", "fake-wrong", "fake-raise", "fake-missing", "numpy"], weights,
              timeout=15)
    rows = {r["backend"]: r for r in res["rows"]}
    assert rows["fake-crash"]["status"] == "failed" and "signal 6" in rows["fake-crash"]["reason"]
    assert rows["fake-hang"]["status"] == "failed" and "timed out after 15 s" in rows["fake-hang"]["reason"]
    assert rows["fake-wrong"]["status"] == "failed" and "correctness gate" in rows["fake-wrong"]["reason"]
    assert "tok_s" not in rows["fake-wrong"]
    assert rows["fake-raise"]["status"] == "failed" and "kernel exploded" in rows["fake-raise"]["reason"]
    assert rows["fake-missing"]["status"] == "unavailable"
    assert rows["fake-missing"]["reason"] == "the frobnicator is not installed"
    assert rows["numpy"]["status"] == "ok" and rows["numpy"]["tok_s"]["median"] > 1000
    table = format_table(res)
    for name in rows:
        assert name in table
    assert "FAILED" in table and "TALOS-V2" in table
    assert "not run here: fake-missing (the frobnicator is not installed)" in table


def test_calibration_hits_the_requested_window(plugins, weights):
    row = run(["fake-slow"], weights)["rows"][0]
    assert row["status"] == "ok", row
    # 0.2 s at 20 us a token is 10,000 tokens; allow for a busy machine
    assert 3_000 <= row["tokens_per_repeat"] <= 15_000
    assert len(row["repeats_tok_s"]) == 3
    assert row["tok_s"]["median"] == pytest.approx(1 / fakes.PER_TOKEN_SECONDS, rel=0.5)
    assert row["cycles_per_token"] == pytest.approx(4e9 / row["tok_s"]["median"])


def test_bad_config_is_refused():
    for kw, msg in [({"repeats": 0}, "repeats"), ({"seconds": -1}, "seconds"), ({"seed": 0}, "seed"),
                    ({"threads": 100000}, "threads"), ({"scenario": "server"}, "scenario")]:
        with pytest.raises(ValueError, match=msg):
            RunConfig(backends=["numpy"], **kw).validate()


def test_summary_statistics():
    row = summarise({"repeats_tok_s": [100.0, 120.0, 110.0], "threads": 2}, 2.0)
    assert row["tok_s"] == {"median": 110.0, "min": 100.0, "max": 120.0, "spread": pytest.approx(20 / 110)}
    assert row["vs_fpga"] == pytest.approx(110 / FPGA_TOK_S)
    assert row["cycles_per_token_per_core"] == pytest.approx(2 * row["cycles_per_token"])
    assert row["unstable"] is True


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
