"""The native C backends (c-fp32, c-q412): correctness, build cache, bad arguments, offline."""
from __future__ import annotations

import ctypes
import os
import platform

import numpy as np
import pytest

from microgpt_bench import model, native, samplers
from microgpt_bench.backends import c_native
from microgpt_bench.backends.base import Unavailable
from microgpt_bench.backends.c_native import CFp32Backend, CQ412Backend
from microgpt_bench.backends.numpy_backend import NumpyBackend
from microgpt_bench.harness import PROBE as GATE_PROBE
from microgpt_bench.weights import load_weights
from microgpt_bench.worker import GATE_TOLERANCE, correctness_gate

PROBE = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
         "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
         "x", "maximilianjonas"]


def _cpu_flags() -> str:
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


def _skip_unless_built(cls):
    reason = cls.availability()
    if reason:
        pytest.skip(f"{cls.name} unavailable here: {reason}")


@pytest.fixture(scope="module")
def params(shared_data):
    return load_weights(shared_data / "talos" / "weights_only.npy")


@pytest.fixture(scope="module")
def fp32(params):
    _skip_unless_built(CFp32Backend)
    b = CFp32Backend(params)
    yield b
    b.close()


@pytest.fixture(scope="module")
def q412(params):
    _skip_unless_built(CQ412Backend)
    b = CQ412Backend(params)
    yield b
    b.close()


def probe_sequences():
    return [([model.BOS] + model.encode(n))[: model.BLOCK_SIZE] for n in PROBE]


def reference_generation(params, n_tokens: int, seed: int, sampler: str, temperature: float = 0.5) -> list[int]:
    """The generation loop of the spec in float64 (model.reference_forward)."""
    w = params.as_lists()
    draw = samplers.make_sampler(sampler, seed)
    out, tok, pos, keys, values = [], model.BOS, 0, [], []
    while len(out) < n_tokens:
        logits = model.reference_forward(w, tok, pos, keys, values)
        nxt = draw(model.softmax([v / temperature for v in logits]))
        out.append(nxt)
        pos += 1
        if nxt == model.BOS or pos == model.BLOCK_SIZE:
            tok, pos, keys, values = model.BOS, 0, [], []
        else:
            tok = nxt
    return out


def first_names(tokens, n):
    names = model.names_from_tokens(tokens)
    assert len(names) >= n, f"only {len(names)} names in {len(tokens)} tokens"
    return names[:n]


# ------------------------------------------------------------------ c-fp32


def test_fp32_logits_match_reference(params, fp32):
    worst = 0.0
    for seq in probe_sequences():
        got = fp32.logits(seq)
        assert got.shape == (len(seq), model.VOCAB)
        worst = max(worst, float(np.abs(got - model.reference_logits(params, seq)).max()))
    assert worst < 1e-4, worst


def test_fp32_info(fp32):
    info = fp32.info()
    assert info["simd"] in ("avx512", "avx2", "neon", "scalar")
    assert info["compiler"] and "-O3" in info["flags"]


@pytest.mark.parametrize("sampler", ["xorshift32", "python"])
def test_fp32_names_match_float64_loop(params, fp32, sampler):
    ref = reference_generation(params, 2000, 42, sampler)
    got = fp32.generate(2000, 42, sampler)
    assert first_names(got, 200) == first_names(ref, 200)


def test_fp32_python_sampler_first_names_are_the_readmes(fp32):
    assert model.names_from_tokens(fp32.generate(100, 42, "python"))[:2] == ["kana", "keelan"]


def test_timed_generate_is_the_checksum(fp32, q412):
    for b in (fp32, q412):
        assert b.timed_generate(5000, 7) == sum(b.generate(5000, 7))


def test_matches_numpy_backend_if_present(params, fp32):
    ref = NumpyBackend(params).generate(1500, 42, "xorshift32")
    assert first_names(fp32.generate(1500, 42), 100) == first_names(ref, 100)


# ------------------------------------------------------------------ c-q412


def test_q412_close_to_fp32(params, fp32, q412):
    """Hidden activations are int16 Q4.12 (saturating); the logits keep full precision."""
    errs, kls, ref_errs = [], [], []
    for seq in probe_sequences():
        a, b = fp32.logits(seq), q412.logits(seq)
        errs.append(np.abs(a - b).ravel())
        ref_errs.append(np.abs(b - model.reference_logits(params, seq)).ravel())
        za, zb = a / 0.5, b / 0.5
        pa = np.exp(za - za.max(1, keepdims=True))
        pa /= pa.sum(1, keepdims=True)
        pb = np.exp(zb - zb.max(1, keepdims=True))
        pb /= pb.sum(1, keepdims=True)
        kls.append((pa * (np.log(pa) - np.log(pb))).sum(1))
    err, kl, ref_err = np.concatenate(errs), np.concatenate(kls), np.concatenate(ref_errs)
    print(f"q412 vs fp32: max |dlogit| {err.max():.5f}, mean {err.mean():.6f}; "
          f"KL(T=0.5) mean {kl.mean():.2e} max {kl.max():.2e}")
    assert err.max() < 0.02
    assert err.mean() < 0.002
    assert kl.mean() < 1e-5 and kl.max() < 1e-3
    assert ref_err.max() < 0.15  # the harness's gate for precision q412


def test_q412_passes_the_harness_gate(params, q412):
    reference = [model.reference_logits(params, s) for s in GATE_PROBE]
    for scenario in ("single-stream", "offline"):
        gate = correctness_gate(q412, GATE_PROBE, reference, scenario)
        assert gate["passed"] and gate["tolerance"] == GATE_TOLERANCE["q412"], gate


def test_q412_token_agreement_with_fp32(fp32, q412):
    a = np.array(fp32.generate(100_000, 42))
    b = np.array(q412.generate(100_000, 42))
    share = float((a == b).mean())
    print(f"q412 vs fp32: identical-token share over 100,000 xorshift32 tokens: {share:.4f}")
    assert share > 0.95


def test_q412_quantises_like_talos_roms(params, q412, shared_data):
    """rint(w * 4096) clipped: the Q4.12 logits equal those computed from the ROM weights."""
    rom_dir = shared_data / "talos" / "q12"
    if not rom_dir.is_dir():
        pytest.skip("no ROM images")
    from microgpt_bench.weights import load_weights as lw
    rom_backend = CQ412Backend(lw(rom_dir))
    for seq in probe_sequences()[:5]:
        assert np.array_equal(rom_backend.logits(seq), q412.logits(seq))
    rom_backend.close()


# --------------------------------------------------------- vector paths, builds


def _forced(monkeypatch, simd):
    monkeypatch.setenv("MICROGPT_BENCH_SIMD", simd)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "avx512-scalef"])
@pytest.mark.parametrize("cls", [CFp32Backend, CQ412Backend])
def test_forced_paths_are_bit_identical(params, monkeypatch, simd, cls):
    """Every vector path computes the same canonical operations: identical logits and tokens."""
    _skip_unless_built(cls)
    default = cls(params)
    _forced(monkeypatch, simd)
    reason = cls.availability()
    if reason:
        assert simd != "scalar", reason
        pytest.skip(f"{simd} not buildable here: {reason[:200]}")
    forced = cls(params)
    assert forced.info()["simd"] == simd.partition("-")[0]  # the vector path; the variant:
    assert forced.info()["variant"] == {"single-stream": simd, "offline": simd}
    for seq in probe_sequences():
        assert np.array_equal(forced.logits(seq), default.logits(seq))
    if cls is CFp32Backend:
        seq = probe_sequences()[3]
        assert np.abs(forced.logits(seq) - model.reference_logits(params, seq)).max() < 1e-4
    assert forced.generate(20_000, 42) == default.generate(20_000, 42)
    assert forced.generate(3000, 9, "python") == default.generate(3000, 9, "python")
    off = forced.generate_offline(19, 300, 5, 2)
    assert np.array_equal(off, default.generate_offline(19, 300, 5, 1))


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512-scalef"])
def test_softmax_slow_paths(params, monkeypatch, simd):
    """Inputs beyond the fast range (softmax offset = max): a tiny temperature (sampler
    logits up to ~790 in log2 units) and wq, wk scaled by 6 (attention scores ~320)."""
    t = dict(params.tensors)
    t["layer0.attn_wq"] = t["layer0.attn_wq"] * 6
    t["layer0.attn_wk"] = t["layer0.attn_wk"] * 6
    cases = [(params, 0.02), (model.Params(t), 0.5)]
    seqs = probe_sequences()[:6]
    for cls in (CFp32Backend, CQ412Backend):
        _skip_unless_built(cls)
        defaults = [cls(p, temperature=temp) for p, temp in cases]
        _forced(monkeypatch, simd)
        reason = cls.availability()
        if reason:
            monkeypatch.delenv("MICROGPT_BENCH_SIMD")
            assert simd != "scalar", reason
            pytest.skip(f"{simd} not buildable here")
        for (p, temp), ref in zip(cases, defaults):
            b = cls(p, temperature=temp)
            for s in seqs:
                assert np.array_equal(b.logits(s), ref.logits(s))
                if cls is CFp32Backend:
                    assert np.abs(b.logits(s) - model.reference_logits(p, s)).max() < 1e-4
            assert b.generate(5000, 42) == ref.generate(5000, 42)
            off = ref.generate_offline(17, 200, 3, 2)  # 17: a pass of two batches (AVX2 q412) too
            assert np.array_equal(b.generate_offline(17, 200, 3, 1), off)
            for i in range(17):
                assert off[i].tolist() == ref.generate(200, samplers.stream_seed(3, i))
        monkeypatch.delenv("MICROGPT_BENCH_SIMD")


def test_cold_temperature_names_match_float64_loop(params):
    _skip_unless_built(CFp32Backend)
    b = CFp32Backend(params, temperature=0.02)
    ref = reference_generation(params, 1500, 42, "xorshift32", temperature=0.02)
    assert first_names(b.generate(1500, 42), 100) == first_names(ref, 100)


def test_the_kernels_build_wherever_there_is_a_compiler():
    """The C tests skip where a backend is unavailable; with a compiler present that can only
    mean a kernel that no longer builds, which must fail here rather than pass as skips."""
    from microgpt_bench.backends.talos_emu import TalosEmuBackend

    if native.find_c_compiler() is None:
        pytest.skip("no C compiler here")
    for cls in (CFp32Backend, CQ412Backend, TalosEmuBackend):
        assert cls.availability() is None, f"{cls.name}: {cls.availability()}"


def test_no_compiler_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    for cls in (CFp32Backend, CQ412Backend):
        reason = cls.availability()
        assert reason and "false" in reason
        with pytest.raises(Unavailable):
            cls(load_weights_stub())
    monkeypatch.setenv("CC", "no-such-compiler-anywhere")
    assert "no C compiler" in CFp32Backend.availability()


def load_weights_stub():
    rng = np.random.default_rng(0)
    return model.Params({n: rng.normal(0, 0.08, s) for n, s in model.TENSOR_SHAPES.items()})


def test_build_cache_reused_and_rebuilt_on_flag_change(monkeypatch, tmp_path):
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("MICROGPT_BENCH_SIMD", raising=False)
    _, info1 = c_native.build_kernel("fp32")
    lib1 = info1["library"]
    mtime = os.stat(lib1).st_mtime_ns
    built = sorted(p.name for p in (tmp_path / "build").iterdir())
    _, info2 = c_native.build_kernel("fp32")
    assert info2["library"] == lib1 and os.stat(lib1).st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == built
    monkeypatch.setenv("MICROGPT_BENCH_SIMD", "scalar")
    _, info3 = c_native.build_kernel("fp32")
    assert info3["library"] != lib1 and "-DMG_FORCE_SCALAR" in info3["flags"]
    assert info3["simd"] == "scalar"
    assert len(list((tmp_path / "build").iterdir())) == len(built) + 1


def test_bad_simd_setting_is_unavailable(monkeypatch):
    monkeypatch.setenv("MICROGPT_BENCH_SIMD", "sse9")
    assert "MICROGPT_BENCH_SIMD" in CFp32Backend.availability()


# ----------------------------------------------------------- bad arguments


def test_c_entry_points_reject_bad_arguments(params, fp32, q412):
    w = np.ascontiguousarray(params.flat("c", np.float32))
    for b in (fp32, q412):
        f = b._fn
        h = b.handle
        toks = np.array([26, 1, 2], dtype=np.int32)
        out = np.zeros((17, 27), dtype=np.float32)
        ip, fp = native.int_ptr(toks), native.float_ptr(out)
        assert f("logits")(h, ip, 0, fp) < 0
        assert f("logits")(h, ip, -3, fp) < 0
        assert f("logits")(h, native.int_ptr(np.zeros(17, dtype=np.int32)), 17, fp) < 0
        assert f("logits")(None, ip, 3, fp) < 0
        assert f("logits")(h, None, 3, fp) < 0
        assert f("logits")(h, ip, 3, None) < 0
        assert f("logits")(h, native.int_ptr(np.array([27], dtype=np.int32)), 1, fp) < 0
        assert f("logits")(h, native.int_ptr(np.array([-1], dtype=np.int32)), 1, fp) < 0
        assert f("logits")(h, ip, 3, fp) == 0
        assert f("generate")(h, 0, 42, None, None) < 0
        assert f("generate")(h, -5, 42, None, None) < 0
        assert f("generate")(h, 10, 0, None, None) < 0          # xorshift32 seed 0
        assert f("generate")(None, 10, 42, None, None) < 0
        bad_u = np.array([0.5, 1.0], dtype=np.float64)
        assert f("generate")(h, 2, 0, native.double_ptr(bad_u), None) < 0
        assert f("generate")(h, 10, 42, None, None) >= 0
        assert f("generate_offline")(h, 0, 10, 1, 1, None) < 0
        assert f("generate_offline")(h, 4, 0, 1, 1, None) < 0
        assert f("generate_offline")(h, 4, 10, 1, 0, None) < 0
        assert f("generate_offline")(h, 4, 10, 1, 65, None) < 0
        assert f("generate_offline")(None, 4, 10, 1, 1, None) < 0
        assert f("generate_offline")(h, 4, 10, 0, 2, None) >= 0  # base seed 0 is fine (stream seeds are mixed)
        lens = np.array([3, 0], dtype=np.int32)
        t2 = np.zeros(32, dtype=np.int32)
        o2 = np.zeros((2, 16, 27), dtype=np.float32)
        assert f("logits_offline")(h, 2, native.int_ptr(t2), native.int_ptr(lens), native.float_ptr(o2)) < 0
        lens[1] = 17
        assert f("logits_offline")(h, 2, native.int_ptr(t2), native.int_ptr(lens), native.float_ptr(o2)) < 0
        assert f("logits_offline")(h, 0, native.int_ptr(t2), native.int_ptr(lens), native.float_ptr(o2)) < 0
        assert f("logits_offline")(h, 2, None, native.int_ptr(lens), native.float_ptr(o2)) < 0
        assert f("create")(None, ctypes.c_float(0.5)) is None
        greedy = f("create")(native.float_ptr(w), ctypes.c_float(0.0))  # temperature 0: greedy
        assert greedy
        f("destroy")(greedy)
        assert f("create")(native.float_ptr(w), ctypes.c_float(-0.001)) is None
        assert f("create")(native.float_ptr(w), ctypes.c_float(-1.0)) is None
        assert f("create")(native.float_ptr(w), ctypes.c_float(float("nan"))) is None
        bad_w = w.copy()
        bad_w[100] = np.inf
        assert f("create")(native.float_ptr(bad_w), ctypes.c_float(0.5)) is None
        assert f("abi")() == 1


def test_python_side_validation(fp32):
    with pytest.raises(ValueError):
        fp32.generate(0, 42)
    with pytest.raises(ValueError):
        fp32.generate(10, 0)                    # xorshift32 seed 0
    with pytest.raises(ValueError):
        fp32.generate(10, 42, "mersenne")
    with pytest.raises(ValueError):
        fp32.timed_generate(-1, 42)
    with pytest.raises(ValueError):
        fp32.logits([])
    with pytest.raises(ValueError):
        fp32.logits(list(range(17)))
    with pytest.raises(ValueError):
        fp32.logits([27])
    with pytest.raises(ValueError):
        fp32.generate_offline(0, 10, 1)
    with pytest.raises(ValueError):
        fp32.generate_offline(4, 10, 1, threads=0)
    with pytest.raises(ValueError):
        fp32.timed_offline(4, 0, 1)
    with pytest.raises(ValueError):
        fp32.logits_offline([])
    with pytest.raises(ValueError):
        CFp32Backend(fp32.params, temperature=-0.5)


# ----------------------------------------------------------------- offline


@pytest.mark.parametrize("n_streams", [1, 5, 17, 40])
@pytest.mark.parametrize("threads", [1, 2])
def test_offline_streams_equal_single_stream_runs(fp32, q412, n_streams, threads):
    for b in (fp32, q412):
        off = b.generate_offline(n_streams, 250, 11, threads)
        assert off.shape == (n_streams, 250)
        for i in range(n_streams):
            assert off[i].tolist() == b.generate(250, samplers.stream_seed(11, i)), (b.name, i)
        assert b.timed_offline(n_streams, 250, 11, threads) == int(off.sum())


def test_offline_thread_count_does_not_change_tokens(fp32, q412):
    for b in (fp32, q412):
        ref = b.generate_offline(37, 120, 3, 1)
        for th in (2, 3, 8):
            assert np.array_equal(b.generate_offline(37, 120, 3, th), ref)


def test_logits_offline(params, fp32, q412):
    seqs = probe_sequences() + [[model.BOS], [model.BOS] + [0] * 15]
    got = fp32.logits_offline(seqs)
    for s, g in zip(seqs, got):
        assert np.abs(g - model.reference_logits(params, s)).max() < 1e-4
        assert np.array_equal(g, fp32.logits(s))
    for s, g in zip(seqs, q412.logits_offline(seqs)):
        assert np.array_equal(g, q412.logits(s))


def test_scenarios_and_registry_names():
    assert CFp32Backend.name == "c-fp32" and CQ412Backend.name == "c-q412"
    assert CFp32Backend.precision == "fp32" and CQ412Backend.precision == "q412"
    assert set(CFp32Backend.scenarios) == {"single-stream", "offline", "server"}
    assert platform.machine()  # smoke: the module imports on every platform
