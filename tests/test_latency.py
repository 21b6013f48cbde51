"""Latency: the histogram's error bound, percentiles from known injected delays (a fake clock, no
sleeping), the FPGA's cycle model on TALOS-V2's own test, stamps that equal generate(), the tables."""
import numpy as np
import pytest

import fakes
from microgpt_bench import latency
from microgpt_bench.backends import backend_class
from microgpt_bench.backends.base import Backend
from microgpt_bench.histogram import PERCENTILES, LogHistogram
from microgpt_bench.latency_report import format_latency
from microgpt_bench.model import BOS
from microgpt_bench.weights import load_weights


@pytest.fixture(scope="module")
def params():
    return load_weights(None)


@pytest.mark.parametrize("bits", [4, 8, 11])
def test_histogram_relative_error_is_bounded(bits):
    rng = np.random.default_rng(bits)
    values = np.concatenate([rng.integers(0, 300, 5_000), np.rint(rng.lognormal(10, 2.5, 50_000)).astype(np.int64)])
    h = LogHistogram(bits)
    for chunk in np.array_split(values, 7):  # recorded in pieces: the counters grow
        h.record(chunk)
    assert h.count == values.size and h.max == values.max() and h.min == values.min()
    assert h.mean() == pytest.approx(values.mean())
    for q in (*PERCENTILES, 1.0, 25.0, 99.999, 100.0):
        exact = np.percentile(values, q, method="inverted_cdf")
        assert abs(h.percentile(q) - exact) <= h.relative_error * max(exact, 1), q
    assert h.relative_error == 2.0 ** -bits


def test_histogram_buckets_tile_the_line_and_round_trip():
    h = LogHistogram(5)
    low, high = h.bucket_bounds(np.arange(400))
    assert low[0] == 0 and np.all(low[1:] == high[:-1])  # contiguous, no gaps or overlaps
    values = np.arange(0, 10**6, 37)
    assert np.all(h._index(values) == np.searchsorted(high, values, side="right"))
    h.record(values)
    again = LogHistogram.from_dict(h.to_dict())
    assert again.summary() == h.summary() and again.ccdf() == h.ccdf()
    assert h.ccdf()[-1][1] == 0.0 and all(a[1] >= b[1] for a, b in zip(h.ccdf(), h.ccdf()[1:]))
    with pytest.raises(ValueError):
        h.record([-1])
    with pytest.raises(ValueError):
        LogHistogram(5).percentile(50)


class DelayBackend(Backend):
    """A fake stream [1, 2, BOS] repeated; token i costs delays[i] ns on an injected clock."""
    name = "fake-delays"

    def __init__(self, delays):
        super().__init__(None, 0.5)
        self.clock, self.delays = fakes.FakeClock(), delays
        self.stamp_clock = self.clock

    def iter_tokens(self, n_tokens, seed, sampler="xorshift32"):
        for i in range(n_tokens):
            self.clock.advance(self.delays[i])
            yield (1, 2, BOS)[i % 3]

    def timer_info(self):
        return {"source": "fake", "resolution_ns": 1, "overhead_ns": 0, "ticks_per_ns": 1}


def test_injected_delays_give_the_right_percentiles():
    rng = np.random.default_rng(5)
    delays = rng.permutation(np.arange(1, 3001) * 1000)  # 1 us .. 3 ms, each once
    backend = DelayBackend(delays)
    tokens, ends = backend.generate_stamped(3000, 1)
    assert np.array_equal(np.diff(np.concatenate([[0], ends])), delays)
    lat = latency.measure_latency(backend, {"seed": 1}, 3000)
    assert lat["status"] == "ok" and lat["stamped_in"].startswith("Python")
    tok = lat["per_token_ns"]
    for q in PERCENTILES:
        assert tok[f"p{q:g}"] == pytest.approx(np.percentile(delays, q, method="inverted_cdf"), rel=2 ** -8)
    assert tok["max"] == 3_000_000 and tok["count"] == 3000
    names = delays.reshape(-1, 3).sum(axis=1)  # every name is three tokens
    assert lat["names"] == 1000
    assert lat["mlperf_single_stream_ns"] == pytest.approx(np.percentile(names, 90, method="inverted_cdf"),
                                                           rel=2 ** -8)
    # FPGA: 868, 888, 908 board cycles at 56.25 MHz for positions 0, 1, 2
    fpga_ns = np.tile([868, 888, 908], 1000) * 1e3 / 56.25
    assert lat["slower_than_fpga"]["tokens"]["count"] == int(np.sum(delays > fpga_ns))
    assert lat["slower_than_fpga"]["names"]["count"] == int(np.sum(names > 2664 * 1e3 / 56.25))


def test_fpga_row_equals_the_cycle_model_on_talos_own_test(params):
    """TALOS-V2's testbench: seed 2, temperature Q8.8 128 -> 6 steps, 5,508 board cycles."""
    emu = backend_class("talos-emu-py")(params, 0.5)
    assert emu.tq == 128
    tokens = emu.generate(6, 2)
    assert tokens[-1] == BOS and BOS not in tokens[:-1]  # one name of six steps
    model = latency.fpga_latency(tokens)
    assert model["name_cycles"].tolist() == [5508] == [868 * 6 + 10 * 6 * 5]
    assert model["token_cycles"].tolist() == [868 + 20 * p for p in range(6)]
    assert emu.info()["fpga_cycles"] == 5508  # the emulator's own count agrees
    assert latency.fpga_latency(tokens, mhz=50.0)["name_ns"][0] == pytest.approx(5508 * 20.0)


def test_positions_follow_the_reset_rule():
    tokens = np.array([3] * 20 + [BOS, 4, BOS])
    pos = latency.positions(tokens)
    assert pos.tolist() == list(range(16)) + [0, 1, 2, 3, 4, 0, 1]
    assert latency.name_ends(tokens, pos).tolist() == [15, 20, 22]


@pytest.mark.parametrize("name", ["numpy", "numpy-simple", "pure-python", "talos-emu-py"])
def test_stamped_pass_is_the_timed_loop(params, name):
    backend = backend_class(name)(params, 0.5)
    assert backend.has_stamps()
    tokens, ends = backend.generate_stamped(60, 42)
    assert tokens.tolist() == backend.generate(60, 42) and tokens.dtype == np.int32
    assert ends.dtype == np.int64 and np.all(np.diff(ends) >= 0) and ends[0] >= 0
    info = backend.timer_info()
    assert info["source"] == "time.perf_counter_ns" and info["overhead_ns"] >= 0 and info["ticks_per_ns"] == 1


def test_a_backend_without_stamps_says_why(params):
    lat = latency.measure_latency(backend_class("talos-emu")(params, 0.5), {"seed": 1}, 100)
    assert lat["status"] == "unavailable" and "per-token primitive" in lat["reason"]


def test_generate_argument_rule_is_one(params):
    for name in ("numpy", "pure-python", "talos-emu-py"):
        backend = backend_class(name)(params, 0.5)
        for bad in (0, -3, 2.5, True):
            with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
                backend.generate(bad, 42)
            with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
                backend.timed_generate(bad, 42)
    with pytest.raises(ValueError, match="samples with"):
        backend_class("numpy")(params).generate(5, 42, "talos")


def test_names_come_from_the_base_class(params):
    backend = backend_class("numpy")(params, 0.5)
    names = backend.names(7, 42, "python")
    assert len(names) == 7 and all(isinstance(n, str) for n in names)
    assert names == backend_class("pure-python")(params, 0.5).names(7, 42, "python")


def test_latency_table_lists_rows_and_the_fpga():
    delays = np.full(300, 30_000)  # 30 us: slower than every FPGA step (15.4 .. 20.8 us)
    lat = latency.measure_latency(DelayBackend(delays), {"seed": 1}, 300)
    results = {"rows": [{"backend": "fake", "scenario": "single-stream", "status": "ok",
                         "tok_s": {"median": 33_333.3}, "latency": lat},
                        {"backend": "c-fp32", "scenario": "single-stream", "status": "ok",
                         "latency": {"status": "unavailable", "reason": "no stamps here"}}]}
    text = format_latency(results)
    assert "300 (100.00%)" in text and "100 (100.00%)" in text  # every token, every name slower
    assert "TALOS-V2 (cycle model, 56.25 MHz" in text and "30 µs" in text
    assert "p50 x tok/s = 1.00" in text and "c-fp32: latency unavailable: no stamps here" in text
    assert format_latency({"rows": []}) == ""


def test_report_has_the_latency_section_and_a_ccdf_of_20_rows(tmp_path):
    from microgpt_bench import report
    from microgpt_bench.results import new_results, write_json
    doc = new_results({"label": "m", "clock": {"ghz": 4.0}}, {})
    for i in range(20):
        lat = latency.measure_latency(DelayBackend(np.full(90, 10_000 * (i + 1))), {"seed": 1}, 90)
        doc["rows"].append({"backend": f"fake{i}", "scenario": "single-stream", "status": "ok",
                            "repeats_tok_s": [1e9 / (10_000 * (i + 1))], "latency": lat})
    written = report.write_report([write_json(doc, tmp_path / "r.json")], tmp_path / "out")
    md = written["report.md"].read_text()
    assert "## Latency" in md and "| m · fake19 [single-stream] | 90 | 200 µs |" in md
    assert "TALOS-V2 (cycle model, 56.25 MHz" in md
    if report.have_matplotlib():
        assert "latency_ccdf.png" in written and "(latency_ccdf.png)" in md
