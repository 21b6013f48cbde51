"""The run-time variant planner: gate, timing (an injected clock), choice, cache, rejection."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from microgpt_bench import autotune, cli
from microgpt_bench.backends import c_native
from microgpt_bench.backends.base import Unavailable
from microgpt_bench.backends.c_native import CFp32Backend, CQ412Backend
from microgpt_bench.weights import load_weights_with_manifest


@pytest.fixture(scope="module")
def params():
    return load_weights_with_manifest(None)[0]


def runnable(cls):
    if cls.availability():
        pytest.skip(f"{cls.name} unavailable here")
    return [n for n, why in c_native.candidate_variants().items() if why is None]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Timed:
    """A real runner whose timed calls advance a fake clock by a set cost per token."""

    def __init__(self, runner, clock, ns_per_token, corrupt=False):
        self.runner, self.clock, self.ns, self.corrupt = runner, clock, ns_per_token, corrupt

    def logits(self, seq):
        return self.runner.logits(seq)

    def generate(self, n, seed, sampler="xorshift32"):
        out = self.runner.generate(n, seed, sampler)
        if self.corrupt and n > 1000:
            out[1000] = (out[1000] + 1) % 27  # one wrong token, late in the run
        return out

    def generate_offline(self, *args):
        return self.runner.generate_offline(*args)

    def timed_generate(self, n, seed):
        self.clock.t += n * self.ns * 1e-9
        return self.runner.timed_generate(n, seed)

    def timed_offline(self, ns, tps, seed, threads):
        self.clock.t += ns * tps * self.ns * 0.5e-9
        return self.runner.timed_offline(ns, tps, seed, threads)

    def close(self):
        self.runner.close()


def test_plan_picks_the_fastest_and_never_a_variant_that_fails_the_gate(params):
    runnable(CFp32Backend)
    clock = FakeClock()
    variants = {
        "scalar": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 300),
        "fast-but-wrong": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 1, corrupt=True),
        "medium": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 100),
        "missing": "this CPU lacks avx9",
    }
    plan = autotune.plan(variants, params, "fp32", timer=clock)
    assert plan["chosen"] == {"single-stream": "medium", "offline": "medium"}
    assert plan["measured"]["fast-but-wrong"].startswith("failed the gate: tokens differ")
    assert plan["measured"]["missing"] == "unavailable: this CPU lacks avx9"
    assert plan["measured"]["scalar"]["single-stream"] == pytest.approx(300)
    assert plan["measured"]["medium"]["offline"] == pytest.approx(50)


class Disturbed(Timed):
    """A Timed runner on a machine that a burst of other work slows 5x: the burst starts
    at the first timed call of the variant named `first` and lasts `length` timed calls
    (of any variant), counted on a shared list."""

    def __init__(self, runner, clock, ns_per_token, calls, first, length, name):
        super().__init__(runner, clock, ns_per_token)
        self.calls, self.first, self.length, self.name = calls, first, length, name

    def _cost(self):
        if self.name == self.first and not self.calls:
            self.calls.append("burst")  # the burst starts here
        slow = 0 < len(self.calls) <= self.length
        if self.calls:
            self.calls.append(self.name)
        return 5.0 if slow else 1.0

    def timed_generate(self, n, seed):
        self.clock.t += n * self.ns * 1e-9 * self._cost()
        return self.runner.timed_generate(n, seed)

    def timed_offline(self, ns, tps, seed, threads):
        self.clock.t += ns * tps * self.ns * 0.5e-9 * self._cost()
        return self.runner.timed_offline(ns, tps, seed, threads)


def test_a_burst_of_other_work_does_not_decide_the_choice(params):
    """Twelve calls of load starting with the fastest variant's first timed call: one
    variant's warm-up and all its repeats back to back would all fall in it (and the
    medium one win); in interleaved rounds it slows two rounds, and the best of the
    other three is the variant's own speed."""
    runnable(CFp32Backend)
    clock, calls = FakeClock(), []
    costs = {"scalar": 300, "fast": 80, "medium": 100}
    def disturbed(name, ns):
        return lambda: Disturbed(CFp32Backend(params, variant="scalar"), clock, ns, calls, "fast", 12, name)

    variants = {name: disturbed(name, ns) for name, ns in costs.items()}
    plan = autotune.plan(variants, params, "fp32", timer=clock)
    assert len(calls) > 12, "the burst happened"
    assert plan["chosen"] == {"single-stream": "fast", "offline": "fast"}
    assert plan["measured"]["fast"]["single-stream"] == pytest.approx(80)
    rounds = plan["measured"]["fast"]["rounds"]["single-stream"]
    assert len(rounds) == plan["rounds"] == autotune.REPEATS
    assert sorted(rounds) == pytest.approx([80, 80, 80, 400, 400])  # two rounds in the burst, every sample kept
    assert autotune.busy_note({**plan, "load_average": 0.0}) is None  # a median of 80: the choice held
    quiet = autotune.plan({name: (lambda ns=ns: Timed(CFp32Backend(params, variant="scalar"), clock, ns))
                           for name, ns in costs.items()}, params, "fp32", timer=clock)
    assert quiet["measured"]["fast"]["rounds"]["offline"] == pytest.approx([40] * autotune.REPEATS)
    assert autotune.chosen_noise(quiet) == pytest.approx(0)


def test_a_variant_that_fails_while_timed_is_out_and_the_plan_goes_on(params):
    runnable(CFp32Backend)

    class FailsLater(Timed):
        calls = 0

        def timed_offline(self, *args):
            FailsLater.calls += 1
            if FailsLater.calls == 3:  # after the warm-up and a round
                raise OSError("lost the device")
            return super().timed_offline(*args)

    clock = FakeClock()
    plan = autotune.plan({"scalar": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 300),
                          "flaky": lambda: FailsLater(CFp32Backend(params, variant="scalar"), clock, 1)},
                         params, "fp32", timer=clock)
    assert plan["measured"]["flaky"] == "failed while timed: OSError: lost the device"
    assert plan["chosen"] == {"single-stream": "scalar", "offline": "scalar"}
    assert len(plan["measured"]["scalar"]["rounds"]["offline"]) == autotune.REPEATS


def test_a_plan_whose_median_round_is_far_over_its_best_says_so():
    measured = {"a": {"single-stream": 100, "offline": 50,
                      "rounds": {"single-stream": [100, 130, 125, 101, 140], "offline": [50, 51, 50, 52, 50]}},
                "b": "failed the gate: tokens differ"}
    plan = {"chosen": {"single-stream": "a", "offline": "a"}, "measured": measured, "load_average": 0.1, "cores": 2}
    assert autotune.chosen_noise(plan) == pytest.approx(0.25)
    assert "median round was 25% over its best" in autotune.busy_note(plan)
    measured["a"]["rounds"]["single-stream"] = [100, 110, 105, 101, 300]  # one disturbed round: the median holds
    assert autotune.busy_note(plan) is None
    assert autotune.chosen_noise({"chosen": {"offline": "b"}, "measured": measured}) is None  # no rounds: no claim
    measured["a"]["rounds"] = "damaged"
    assert autotune.busy_note(plan) is None


def test_a_variant_with_wrong_logits_or_that_raises_is_rejected(params):
    runnable(CFp32Backend)

    class BadLogits(Timed):
        def logits(self, seq):
            return self.runner.logits(seq) + 1e-3

    class Crashes(Timed):
        def logits(self, seq):
            raise OSError("illegal instruction")

    clock = FakeClock()
    plan = autotune.plan({"scalar": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 300),
                          "bad": lambda: BadLogits(CFp32Backend(params, variant="scalar"), clock, 1),
                          "crash": lambda: Crashes(CFp32Backend(params, variant="scalar"), clock, 1)},
                         params, "fp32", timer=clock)
    assert plan["chosen"]["single-stream"] == plan["chosen"]["offline"] == "scalar"
    assert "max logit error" in plan["measured"]["bad"]
    assert "illegal instruction" in plan["measured"]["crash"]


def test_backend_plan_is_cached_per_cpu_and_replanned_on_a_new_one(params, monkeypatch, tmp_path):
    names = runnable(CQ412Backend)
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    plan_file = tmp_path / "plan.json"
    monkeypatch.setattr(autotune, "cache_file", lambda *a: plan_file)
    calls = []
    real_plan = autotune.plan
    monkeypatch.setattr(autotune, "plan", lambda *a, **k: calls.append(1) or real_plan(*a, **k))
    first = CQ412Backend(params)
    info = first.info()
    assert info["autotune"]["from_cache"] is False and len(calls) == 1
    assert set(info["autotune"]["measured"]) == set(c_native.candidate_variants())
    for scenario in ("single-stream", "offline"):
        chosen = info["variant"][scenario]
        assert chosen in names and isinstance(info["autotune"]["measured"][chosen], dict)
        times = {n: m[scenario] for n, m in info["autotune"]["measured"].items() if isinstance(m, dict)}
        assert times[chosen] == min(times.values())
    second = CQ412Backend(params)
    assert second.info()["autotune"]["from_cache"] is True and len(calls) == 1
    assert second.variants == first.variants
    monkeypatch.setattr(autotune, "cpu_signature", lambda: "another-cpu")
    third = CQ412Backend(params)
    assert third.info()["autotune"]["from_cache"] is False and len(calls) == 2
    assert json.loads(plan_file.read_text())["cpu"] == "another-cpu"


def test_a_cached_plan_naming_a_failed_variant_only_is_unavailable(params, monkeypatch, tmp_path):
    runnable(CFp32Backend)
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"chosen": {"single-stream": None, "offline": None},
                                     "measured": {"scalar": "failed the gate: x"}, "planned": "t",
                                     "cpu": autotune.cpu_signature()}))
    monkeypatch.setattr(autotune, "cache_file", lambda *a: plan_file)
    with pytest.raises(Unavailable, match="no c-fp32 variant passed the gate"):
        CFp32Backend(params)


@pytest.mark.parametrize("cls", [CFp32Backend, CQ412Backend])
def test_every_variant_is_bit_identical_in_one_process(params, cls):
    names = runnable(cls)
    runs = {n: cls(params, variant=n) for n in names}
    ref = runs["scalar"]
    seqs = [autotune.gate_sequences()[i] for i in (0, 2, 4)]
    for name, b in runs.items():
        assert b.info()["variant"] == {"single-stream": name, "offline": name}
        for s in seqs:
            assert np.array_equal(b.logits(s), ref.logits(s)), name
        assert b.generate(5000, 3) == ref.generate(5000, 3), name
        assert np.array_equal(b.generate_offline(21, 150, 4, 2), ref.generate_offline(21, 150, 4, 1)), name


def test_forcing_a_variant_by_name(params, monkeypatch):
    names = [n for n in runnable(CFp32Backend) if "@" not in n]  # another compiler: CC=... forces that
    for name in names:
        monkeypatch.setenv("MICROGPT_BENCH_SIMD", name)
        b = CFp32Backend(params)
        assert b.variants == {"single-stream": name, "offline": name} and "autotune" not in b.info()
    with pytest.raises(ValueError, match="unknown variant"):
        CFp32Backend(params, variant="avx9")


def test_a_bogus_simd_setting_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("MICROGPT_BENCH_SIMD", "sse9")
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert "MICROGPT_BENCH_SIMD='sse9'" in err and "avx2-evex" in err


@pytest.mark.parametrize("cls", [CFp32Backend, CQ412Backend])
def test_offline_batch_policy_never_changes_tokens(params, cls):
    names = runnable(cls)
    for name in names:
        b = cls(params, variant=name)
        lanes = b._off_fn("batch_lanes")()
        runs = []
        for n in (1, lanes + 1, 0):  # always batch, always one by one, the default
            assert b._off_fn("set_batch_min")(b._off_handle, n) == 0
            runs.append(b.generate_offline(lanes + 3, 120, 8, 2))
        assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2]), name
        assert b._off_fn("set_batch_min")(b._off_handle, 65) < 0


def test_batch_policy_is_the_planned_crossover(params, monkeypatch, tmp_path):
    runnable(CFp32Backend)
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"chosen": {"single-stream": "scalar", "offline": "avx2"},
                                     "measured": {"scalar": {"single-stream": 900.0, "offline": 900.0},
                                                  "avx2": {"single-stream": 200.0, "offline": 60.0}},
                                     "planned": "t", "cpu": autotune.cpu_signature()}))
    monkeypatch.setattr(autotune, "cache_file", lambda *a: plan_file)
    if c_native.candidate_variants().get("avx2", "not x86") is not None:
        pytest.skip("no AVX2 here")
    b = CFp32Backend(params)
    assert b.variants == {"single-stream": "scalar", "offline": "avx2"}
    assert b.batch_min == 3 == b.info()["offline_batch_min"]  # ceil(8 lanes * 60 / 200)
    assert b.info()["simd"] == "scalar"


def test_info_shows_the_cached_plan_or_the_forced_variant(monkeypatch, tmp_path):
    runnable(CFp32Backend)
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    plan_file = tmp_path / "plan.json"
    monkeypatch.setattr(autotune, "cache_file", lambda *a: plan_file)
    assert CFp32Backend.build_info() == {"simd": "autotuned on first use"}
    plan_file.write_text(json.dumps({"chosen": {"single-stream": "avx2", "offline": "scalar"},
                                     "measured": {"avx2": {"single-stream": 200.4, "offline": 60.0},
                                                  "scalar": {"single-stream": 900.0, "offline": 800.0},
                                                  "avx512": "unavailable: this CPU lacks avx512f"}}))
    info = CFp32Backend.build_info()
    assert info["simd"].startswith("avx2 single stream, scalar offline; ")
    assert "avx2 200/60" in info["simd"] and "avx512 unavailable" in info["simd"]
    monkeypatch.setenv("MICROGPT_BENCH_SIMD", "scalar")
    assert CFp32Backend.build_info() == {"simd": "scalar (forced by MICROGPT_BENCH_SIMD)"}


def test_a_plan_timed_on_a_busy_machine_says_so(params, monkeypatch, tmp_path):
    runnable(CFp32Backend)
    clock = FakeClock()
    monkeypatch.setattr(autotune.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    monkeypatch.setattr(autotune.os, "cpu_count", lambda: 2)
    plan = autotune.plan({"scalar": lambda: Timed(CFp32Backend(params, variant="scalar"), clock, 300)},
                         params, "fp32", timer=clock)
    assert plan["load_average"] == 3.5 and plan["cores"] == 2
    assert "planned under load 3.5 on 2 cores" in autotune.busy_note(plan)
    assert autotune.busy_note({**plan, "load_average": 0.2}) is None
    assert autotune.busy_note({"chosen": {}}) is None  # a plan from before the field: no claim
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    plan_file = tmp_path / "plan.json"
    monkeypatch.setattr(autotune, "cache_file", lambda *a: plan_file)
    plan_file.write_text(json.dumps(plan))
    assert "planned under load 3.5" in CFp32Backend.build_info()["simd"]
    assert str(plan_file) in CFp32Backend.build_info()["simd"]


def test_without_cpuinfo_the_compilers_native_features_decide(monkeypatch):
    if not c_native.X86 or c_native.native.find_c_compiler() is None:
        pytest.skip("x86 with a C compiler only")
    real = set(c_native.machine.cpu_flags())
    detected = c_native.compiler_native_flags(c_native.native.find_c_compiler())
    for need in ({"avx2", "fma"}, {"avx512f", "avx512bw", "avx512dq", "avx512vl"}):
        if real:  # the compiler's -march=native sees what /proc/cpuinfo reports
            assert (need <= real) == (need <= detected), need
    monkeypatch.setattr(c_native.machine, "cpu_flags", lambda: [])
    assert c_native.candidate_variants()["scalar"] is None
    assert (c_native.candidate_variants()["avx512"] is None) == ({"avx512f", "avx512vl"} <= detected)
    monkeypatch.setattr(c_native, "compiler_native_flags", lambda cc: frozenset({"avx2", "fma"}))
    got = c_native.candidate_variants()
    assert got["avx2"] is None and got["avx512"].startswith("this CPU lacks") and got["avx2-evex"]


@pytest.mark.parametrize("cls", [CFp32Backend, CQ412Backend])
def test_clang_builds_the_avx2_variant_bit_identical(params, cls, monkeypatch):
    """clang wants literal immediates where gcc accepts unrolled loop counters; every variant
    must build with either compiler, and give the same tokens."""
    names = runnable(cls)
    if "avx2" not in names or not shutil.which("clang"):
        pytest.skip("needs AVX2 and clang")
    expected = cls(params, variant="avx2").generate(3000, 5)
    monkeypatch.setenv("CC", "clang")
    b = cls(params, variant="avx2")
    assert b.build_info["compiler"] == "clang" and b.generate(3000, 5) == expected


def test_another_compiler_is_another_variant(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(c_native, "other_compilers", lambda: ["clang"])
    got = c_native.candidate_variants()
    assert all(got[f"{n}@clang"] == got[n] for n in list(got) if "@" not in n)
    assert c_native.split_variant("avx2-evex@clang") == ("avx2-evex", "clang")
    assert c_native.split_variant("scalar") == ("scalar", None)
    monkeypatch.undo()
    monkeypatch.setenv("CC", "gcc")
    assert c_native.other_compilers() == []  # $CC names the compiler: no others are tried
