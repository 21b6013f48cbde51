"""The C kernels' greedy decoding (temperature 0) and the timestamped latency loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from microgpt_bench import model, samplers
from microgpt_bench.backends.base import Backend
from microgpt_bench.backends.c_native import CFp32Backend, CQ412Backend
from microgpt_bench.weights import load_weights_with_manifest

KERNELS = [CFp32Backend, CQ412Backend]


@pytest.fixture(scope="module")
def params():
    return load_weights_with_manifest(None)[0]


def _built(cls):
    reason = cls.availability()
    if reason:
        pytest.skip(f"{cls.name} unavailable here: {reason}")


def contexts(tokens):
    """The token sequence each generated token was predicted from (BOS-started, reset on BOS/16)."""
    ctx, out = [model.BOS], []
    for t in tokens:
        out.append(list(ctx))
        ctx.append(t)
        if t == model.BOS or len(ctx) > model.BLOCK_SIZE:
            ctx = [model.BOS]
    return out


@pytest.mark.parametrize("temperature", [-1.0, math.nan, math.inf, -0.5])
def test_base_rejects_negative_and_non_finite_temperatures(params, temperature):
    with pytest.raises(ValueError):
        Backend(params, temperature)


def test_base_accepts_zero_as_greedy(params):
    assert Backend(params, 0.0).temperature == 0.0


@pytest.mark.parametrize("cls", KERNELS)
def test_greedy_is_the_argmax_of_the_logits(params, cls):
    _built(cls)
    b = cls(params, temperature=0.0)
    tokens = b.generate(300, 7)
    assert tokens == b.generate(300, 12345) == b.generate(300, 3, "python")  # no draw matters
    assert tokens.count(model.BOS) >= 2, "greedy names end"
    ctxs = contexts(tokens)
    for tok, ctx in zip(tokens, ctxs):
        own = b.logits(ctx)[-1]
        assert tok == int(np.argmax(own))  # the lowest index of the max, as numpy's argmax
        ref = model.reference_logits(params, ctx)[-1]
        top2 = np.sort(ref)[-2:]
        margin = 1e-3 if cls is CFp32Backend else 0.1  # Q4.12's logits differ by up to ~0.05
        if top2[1] - top2[0] > margin:
            assert tok == int(np.argmax(ref)), (ctx, tok)


@pytest.mark.parametrize("cls", KERNELS)
def test_greedy_same_on_every_vector_path_and_offline(params, cls, monkeypatch):
    _built(cls)
    expected = cls(params, temperature=0.0).generate(500, 1)
    for simd in ("scalar", "avx2", "avx512"):
        monkeypatch.setenv("MICROGPT_BENCH_SIMD", simd)
        if cls.availability():
            assert simd != "scalar"
            continue
        b = cls(params, temperature=0.0)
        assert b.generate(500, 1) == expected, simd
        off = b.generate_offline(19, 500, 5, 2)
        for i in range(19):
            assert off[i].tolist() == expected, (simd, i)


@pytest.mark.parametrize("cls", KERNELS)
def test_stamped_loop_gives_the_same_tokens_and_rising_stamps(params, cls):
    _built(cls)
    b = cls(params)
    tokens, end_ns = b.generate_stamped(3000, 42)
    assert tokens.dtype == np.int32 and end_ns.dtype == np.int64 and len(tokens) == len(end_ns) == 3000
    assert tokens.tolist() == b.generate(3000, 42, "xorshift32")
    assert end_ns[0] >= 0 and np.all(np.diff(end_ns) >= 0) and end_ns[-1] > 0
    seed = samplers.stream_seed(9, 3)
    assert b.generate_stamped(50, seed)[0].tolist() == b.generate(50, seed)


@pytest.mark.parametrize("cls", KERNELS)
def test_timer_info(params, cls):
    _built(cls)
    b = cls(params)
    info = b.timer_info()
    assert set(info) == {"source", "resolution_ns", "overhead_ns", "ticks_per_ns"}
    assert info["source"] in ("rdtsc", "cntvct", "clock_gettime")
    assert info["ticks_per_ns"] > 0 and info["resolution_ns"] > 0 and info["overhead_ns"] >= 0
    if info["source"] == "clock_gettime":
        assert info["ticks_per_ns"] == 1.0


def test_stamped_loop_rejects_bad_arguments(params):
    _built(CFp32Backend)
    b = CFp32Backend(params)
    with pytest.raises(ValueError):
        b.generate_stamped(10, 0)
    with pytest.raises(ValueError):
        b.generate_stamped(0, 1)
