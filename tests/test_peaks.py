"""The peak probes (kernels/peak.c in a subprocess) and the floor every native row is held to."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from microgpt_bench import machine, model, native, peaks, table
from microgpt_bench.backends.c_native import CFp32Backend, CQ412Backend
from microgpt_bench.weights import load_weights_with_manifest


@pytest.fixture(scope="module")
def probe():
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    return peaks.run_probe()


def test_probe_figures_are_plausible(probe):
    assert "error" not in probe, probe
    assert 0.3 < probe["clock_ghz"] < 10 and 0.3 < probe["clock_ghz_after"] < 10
    lanes = probe["fp32_lanes_per_cycle"]
    flags = set(machine.cpu_flags())
    if "avx2" in flags:
        assert {"128", "256"} <= set(lanes)
    if "avx512f" in flags:
        assert "512" in lanes and "vpmaddwd-512" in probe["int16_macs_per_cycle"]
    if "avx512_vnni" in flags:
        assert "vpdpwssd-512" in probe["int16_macs_per_cycle"]
    for width, per_cycle in lanes.items():
        # at least a quarter of one FMA a cycle, at most four FMA pipes (plus clock error)
        assert 0.25 * int(width) / 32 < per_cycle < 4.5 * int(width) / 32, (width, per_cycle)
    for name, per_cycle in probe["int16_macs_per_cycle"].items():
        bits = int(name.rsplit("-", 1)[1])
        assert 0.1 * bits / 16 < per_cycle < 9 * bits / 16, (name, per_cycle)
    mixed = probe["fp32_mixed_ops_per_cycle"]
    if "avx2" in flags:
        assert "256" in mixed and ("512" in mixed) == ("avx512f" in flags)
        for width, per_cycle in mixed.items():  # vector instructions a cycle: one pipe to four
            assert 0.25 < per_cycle < 4.5, (width, per_cycle)
        assert probe["adds_beside_fmas"]["width"] == max(mixed, key=int)
        assert 0.3 < probe["adds_beside_fmas"]["ratio"] < 3
    if lanes:
        assert probe["fp32_peak"]["per_cycle"] == max(lanes.values())
        assert lanes[probe["fp32_peak"]["by"]] == probe["fp32_peak"]["per_cycle"]


def test_peaks_recorded_in_machine_info_and_cached(monkeypatch, tmp_path):
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    info = machine.machine_info("t")
    assert "fp32_lanes_per_cycle" in info["peaks"] and info["clock"]["ghz"] == round(info["peaks"]["clock_ghz"], 3)
    assert peaks.cached_peaks() == info["peaks"]  # the workers' copy is this measurement


def _fake_program(tmp_path, body):
    path = tmp_path / "fake-probe"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("body,why", [("kill -SEGV $$", "exited with"), ("echo not-json", "not JSON")])
def test_a_crashing_probe_is_an_error_not_a_crash(monkeypatch, tmp_path, body, why):
    program = _fake_program(tmp_path, body)
    monkeypatch.setattr(peaks, "probe_program", lambda: program)
    got = peaks.probe_here()
    assert why in got["error"]
    clock = machine.estimate_clock_ghz(got)
    assert "no add-chain estimate" in clock["method"]
    assert machine.measure_clock_ghz() is None  # a row's clock from the same program: none, no crash


def test_the_probe_program_measures_the_clock_alone():
    ghz = machine.measure_clock_ghz()
    assert ghz is not None and 0.3 < ghz < 10, ghz  # a plausible core clock, not a speed claim


def test_a_probe_process_that_dies_is_an_error(monkeypatch):
    monkeypatch.setattr(native, "run_probe", lambda *a, **k: (_ for _ in ()).throw(native.ProbeError("signal 6")))
    assert "signal 6" in peaks.run_probe()["error"]
    assert "no add-chain estimate" in machine.estimate_clock_ghz()["method"]


def test_no_compiler_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    assert "probe not built" in peaks.run_probe()["error"]
    assert not os.path.exists(tmp_path / "build" / f"peaks-{native.cpu_signature()}.json")


def reference_positions(tokens):
    pos, out = 0, []
    for t in tokens:
        out.append(pos)
        pos += 1
        if t == model.BOS or pos == model.BLOCK_SIZE:
            pos = 0
    return out


def test_multiply_add_count_of_a_generated_run():
    if CFp32Backend.availability():
        pytest.skip("c-fp32 unavailable")
    b = CFp32Backend(load_weights_with_manifest(None)[0], temperature=1.5)
    tokens = np.array(b.generate(5000, 11))
    pos = reference_positions(tokens.tolist())
    assert peaks.positions(tokens).tolist() == pos
    assert max(pos) == model.BLOCK_SIZE - 1  # the wrap at 16 is exercised
    assert peaks.macs_of_run(tokens) == sum(3504 + 32 * (p + 1) for p in pos)


def test_floor_info():
    pk = {"fp32_peak": {"per_cycle": 32.0, "by": "512"}, "int16_peak": {"per_cycle": 64.0, "by": "vpdpwssd-512"}}
    f = peaks.floor_info("fp32", 3600 * 10, 10, pk)
    assert f["macs_per_token"] == 3600 and f["floor_cycles_per_token"] == 112.5
    assert peaks.floor_info("q412", 3600, 1, pk)["floor_cycles_per_token"] == 56.25
    assert "floor_cycles_per_token" not in peaks.floor_info("fp64", 3600, 1, pk)


@pytest.mark.parametrize("cls", [CFp32Backend, CQ412Backend])
def test_native_rows_carry_their_floor(cls, monkeypatch, tmp_path):
    if cls.availability():
        pytest.skip(f"{cls.name} unavailable")
    b = cls(load_weights_with_manifest(None)[0])
    assert "floor_cycles_per_token" not in b.info()
    monkeypatch.setattr(peaks, "cached_peaks", lambda: {"fp32_peak": {"per_cycle": 16.0, "by": "256"},
                                                        "int16_peak": {"per_cycle": 32.0, "by": "vpdpwssd-256"}})
    b.timed_generate(3000, 5)
    info = b.info()
    expect = peaks.macs_of_run(np.array(b.generate(3000, 5))) / 3000
    assert info["macs_per_token"] == expect
    assert info["floor_cycles_per_token"] == expect / (16.0 if cls is CFp32Backend else 32.0)
    b.timed_offline(7, 400, 3, 2)
    off = b.info()
    assert off["macs_per_token"] == sum(peaks.macs_of_run(r) for r in b.generate_offline(7, 400, 3)) / 2800
    row = {"backend": cls.name, "scenario": "offline", "streams": 7, "threads": 2, "status": "ok",
           "cycles_per_token_per_core": 4 * off["floor_cycles_per_token"], "info": off}
    assert "4.00x its floor" in table.floor_notes([row])[0]


def _probe(stable, fp512, vnni):
    return peaks.summarise({"clock_ghz": 3.0, "clock_ghz_after": 3.0, "stable": stable,
                            "fp32": {"256": fp512 / 2, "512": fp512}, "int16": {"vpdpwssd-512": vnni}})


def test_floors_divide_by_the_best_stable_probe_of_this_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    runs = iter([_probe(True, 30.0, 60.0), _probe(True, 24.0, 63.0), _probe(False, 40.0, 90.0)])
    monkeypatch.setattr(peaks, "run_probe", lambda timeout=0: next(runs))
    first = peaks.measure_peaks()
    assert first["fp32_peak"]["per_cycle"] == 30.0 and first["best_seen"]["probes"] == 1
    second = peaks.measure_peaks()  # a disturbed probe: lower fp32, higher int16
    assert second["fp32_lanes_per_cycle"]["512"] == 24.0  # this run's own figure is kept
    assert second["fp32_peak"] == {"per_cycle": 30.0, "by": "512", "this_probe": 24.0,
                                   "of": "best of 2 steady probes on this CPU"}
    assert second["int16_peak"]["per_cycle"] == 63.0
    third = peaks.measure_peaks()  # unstable: recorded, but it moves no best
    assert third["fp32_lanes_per_cycle"]["512"] == 40.0
    assert third["fp32_peak"]["per_cycle"] == 30.0 and third["int16_peak"]["per_cycle"] == 63.0
    assert third["best_seen"]["probes"] == 2
    assert peaks.cached_peaks() == third
    assert peaks.floor_info("fp32", 3600, 1, peaks.cached_peaks())["floor_cycles_per_token"] == 120.0


def test_a_probe_whose_clock_moved_by_over_2_percent_is_not_merged():
    moved = {**_probe(True, 40.0, 90.0), "clock_ghz_after": 3.1}  # peak.c calls it stable (within 5%)
    got = peaks.with_best_seen(moved, peaks.with_best_seen(_probe(True, 30.0, 60.0), None))
    assert got["fp32_peak"]["per_cycle"] == 30.0 and got["best_seen"]["probes"] == 1


def test_an_unstable_first_probe_is_used_and_says_so():
    got = peaks.with_best_seen(_probe(False, 28.0, 50.0), None)
    assert got["fp32_peak"]["per_cycle"] == 28.0 and "none steady" in got["fp32_peak"]["of"]
    assert got["best_seen"]["probes"] == 0
    later = peaks.with_best_seen(_probe(True, 20.0, 40.0), got)
    assert later["fp32_peak"]["per_cycle"] == 20.0  # the first stable one, not the unstable one's 28


@pytest.mark.parametrize("mixed,meaning", [(2.0, "adds share the FMA pipes"), (3.0, "adds issue beside the FMAs")])
def test_adds_beside_fmas_reads_the_mixed_probe_at_the_widest_width(mixed, meaning):
    got = peaks.summarise({"clock_ghz": 3.0, "stable": True, "fp32": {"256": 16.0, "512": 32.0},
                           "mixed": {"256": 3.0, "512": mixed}})
    assert got["adds_beside_fmas"] == {"width": "512", "ratio": mixed / 2, "meaning": meaning}
    assert peaks.summarise({"fp32": {"256": 16.0}})["adds_beside_fmas"] is None  # no mixed figure


@pytest.mark.parametrize("damaged", [{"best_seen": [1, 2]}, {"best_seen": {"probes": "x", "fp32_lanes_per_cycle": [3]}},
                                     {"best_seen": {"int16_macs_per_cycle": {"vpdpwssd-512": "fast"}}}])
def test_a_damaged_best_seen_record_starts_afresh(damaged):
    got = peaks.with_best_seen(_probe(True, 30.0, 60.0), damaged)
    assert got["fp32_peak"]["per_cycle"] == 30.0 and got["int16_peak"]["per_cycle"] == 60.0
    assert got["best_seen"]["probes"] == 1
