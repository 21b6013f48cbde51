"""CUDA backends: build checks wherever nvcc is, runtime checks wherever a GPU is.

The compile tests run on CI machines without a GPU. The runtime tests skip, saying why,
only when no usable GPU (or driver, or nvcc) is present. They use the shipped weights
(equal to TALOS-V2's in every float32 value), so the repository alone is enough here and
on the device machine.
"""
from __future__ import annotations

import ctypes
import re
import subprocess
import time

import numpy as np
import pytest

from microgpt_bench import native
from microgpt_bench.backends import Unavailable
from microgpt_bench.backends import cuda
from microgpt_bench.model import (BLOCK_SIZE, BOS, TENSOR_SHAPES, Params, encode, names_from_tokens,
                                  reference_forward, reference_logits, softmax)
from microgpt_bench.samplers import XorShift32Sampler, stream_seed
from microgpt_bench.weights import load_weights

CU_FILES = sorted(native.KERNEL_DIR.glob("*.cu"))
NVCC = native.find_nvcc()
VARIANTS = [cuda.CudaNaiveBackend, cuda.CudaGraphBackend, cuda.CudaPersistentBackend, cuda.CudaOfflineBackend]
PROBE_NAMES = ["emma", "olivia", "alexandrina", "x", "maximilianjosep", "zoe", "kana", "keelan"]
WARP_KERNELS = ("k_persistent", "k_offline")


# ------------------------------------------------------------------- build checks


def test_there_are_cuda_sources():
    assert [p.name for p in CU_FILES] == ["mg_cuda.cu"]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("src", CU_FILES, ids=lambda p: p.name)
def test_cu_compiles_without_warnings(src, arch, tmp_path):
    if NVCC is None:
        pytest.skip("nvcc not found")
    cmd = [NVCC, *cuda.NVCC_BASE_FLAGS, f"-arch={arch}", "-Werror", "all-warnings",
           "-Xcompiler", "-Wall,-Wextra", "-Xptxas", "-v", str(src), "-o", str(tmp_path / "k.so")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    # the warp kernels keep their weights in registers: no spills, no stack frame
    report = proc.stdout + proc.stderr
    blocks = re.findall(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                        r"(\d+) bytes spill loads", report)
    warp = [b for b in blocks if any(k in b[0] for k in WARP_KERNELS)]
    assert len(warp) == 4, report[-3000:]
    for name, stack, stores, loads in warp:
        assert (stack, stores, loads) == ("0", "0", "0"), f"{name}: {stack} B stack, {stores}/{loads} B spills"


def test_library_rejects_bad_create_arguments_without_gpu():
    """The C API validates its arguments before it touches CUDA, so this runs anywhere nvcc does."""
    if NVCC is None:
        pytest.skip("nvcc not found")
    lib, _ = cuda.load_library()
    h = ctypes.c_void_p()
    w = np.zeros(4192, dtype=np.float32)
    assert lib.mg_create(cuda._f32(w), ctypes.c_float(0.0), ctypes.byref(h)) == cuda.MG_EINVAL
    assert b"temperature" in lib.mg_last_error()
    w[7] = np.nan
    assert lib.mg_create(cuda._f32(w), ctypes.c_float(0.5), ctypes.byref(h)) == cuda.MG_EINVAL
    assert b"weight 7" in lib.mg_last_error()
    assert lib.mg_create(None, ctypes.c_float(0.5), ctypes.byref(h)) == cuda.MG_EINVAL
    assert lib.mg_generate(None, 2, 10, 42, None, None) == cuda.MG_EINVAL


def test_availability_is_cheap_and_explains_itself():
    reason = cuda.cuda_availability()
    for cls in VARIANTS:
        assert cls.availability() == reason
    if reason is not None:
        assert isinstance(reason, str) and reason
        with pytest.raises(Unavailable, match=re.escape(reason[:40])):
            cuda.CudaPersistentBackend(_random_params(0))


# --------------------------------------------------------------- runtime fixtures


def _random_params(seed: int, scale: float = 0.08) -> Params:
    rng = np.random.default_rng(seed)
    return Params({n: rng.normal(0.0, scale, size=s) for n, s in TENSOR_SHAPES.items()})


@pytest.fixture(scope="module")
def gpu():
    reason = cuda.cuda_availability()
    if reason is not None:
        pytest.skip(f"no GPU for the CUDA backends: {reason}")


@pytest.fixture(scope="module")
def talos() -> Params:
    return load_weights()


@pytest.fixture(scope="module")
def backends(gpu, talos):
    made = {cls.name: cls(talos, 0.5) for cls in VARIANTS}
    yield made
    for b in made.values():
        b.close()


def python_loop(params: Params, n_tokens: int, seed: int, temperature: float = 0.5) -> list[int]:
    """The generation loop in float64 with the xorshift32 sampler: the names' reference."""
    w = params.as_lists()
    sampler = XorShift32Sampler(seed)
    out, tok, pos, keys, values = [], BOS, 0, [], []
    while len(out) < n_tokens:
        logits = reference_forward(w, tok, pos, keys, values)
        nxt = sampler(softmax([v / temperature for v in logits]))
        out.append(nxt)
        pos += 1
        if nxt == BOS or pos == BLOCK_SIZE:
            tok, pos, keys, values = BOS, 0, [], []
        else:
            tok = nxt
    return out


def tokens_for_names(params: Params, n_names: int, seed: int) -> list[int]:
    chunk, toks = 2000, []
    while True:
        toks = python_loop(params, len(toks) + chunk, seed)
        names = names_from_tokens(toks)
        if len(names) >= n_names:
            # cut right after the n-th name ends
            count, cut = 0, 0
            pos = 0
            for i, t in enumerate(toks):
                pos += 1
                if t == BOS or pos == BLOCK_SIZE:
                    count, pos = count + 1, 0
                    if count == n_names:
                        cut = i + 1
                        break
            return toks[:cut]


def probes() -> list[list[int]]:
    seqs = [([BOS] + encode(n))[:BLOCK_SIZE] for n in PROBE_NAMES]
    rng = np.random.default_rng(int(time.time()))  # fresh random sequences every run
    seqs += [list(rng.integers(0, 27, size=int(rng.integers(1, 17)))) for _ in range(4)]
    return seqs


# ------------------------------------------------------------------- runtime tests


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [c.name for c in VARIANTS])
def test_logits_gate_talos(backends, talos, variant):
    b = backends[variant]
    for seq in probes():
        err = np.abs(b.logits(seq) - reference_logits(talos, seq)).max()
        assert err < 1e-4, f"{variant} {seq}: max error {err:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("scale", [0.08, 0.5, 3.0])  # 3.0 drives scores past +-80: the max-shifted paths
@pytest.mark.parametrize("cls", VARIANTS, ids=lambda c: c.name)
def test_logits_gate_random_weights(gpu, cls, scale):
    params = _random_params(int(time.time() * 1000) % 2**31, scale)
    b = cls(params, 0.7)
    try:
        for seq in probes():
            ref = reference_logits(params, seq)
            err = np.abs(b.logits(seq) - ref).max() / max(1.0, np.abs(ref).max())
            assert err < 1e-4, f"{cls.name} scale {scale} {seq}: relative error {err:.2e}"
    finally:
        b.close()


@pytest.mark.gpu
def test_offline_logits_match_reference(backends, talos):
    seqs = probes() * 9  # more sequences than one block's warps, odd count
    got = backends["cuda-offline"].logits_offline(seqs)
    for seq, g in zip(seqs, got):
        assert g.shape == (len(seq), 27)
        assert np.abs(g - reference_logits(talos, seq)).max() < 1e-4


@pytest.fixture(scope="module")
def names_reference(talos):
    toks = tokens_for_names(talos, 200, 42)
    return toks, names_from_tokens(toks)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [c.name for c in VARIANTS])
def test_200_names_equal_float64_loop(backends, names_reference, variant):
    ref_toks, ref_names = names_reference
    assert len(ref_names) == 200
    got = backends[variant].generate(len(ref_toks), 42)
    assert names_from_tokens(got) == ref_names
    assert got == ref_toks


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [c.name for c in VARIANTS])
def test_timed_checksum_matches_tokens(backends, variant):
    b = backends[variant]
    n = 3000 if variant == "cuda-naive" else 20000
    assert b.timed_generate(n, 1234) == sum(b.generate(n, 1234))


@pytest.mark.gpu
def test_large_weights_generation_matches_python(gpu):
    """Big logits take the sampler's max-shifted softmax path; tokens still match float64."""
    params = _random_params(11, 1.5)
    ref = python_loop(params, 300, 99, 0.5)
    for cls in (cuda.CudaPersistentBackend, cuda.CudaOfflineBackend, cuda.CudaGraphBackend):
        b = cls(params, 0.5)
        try:
            assert b.generate(300, 99) == ref, cls.name
        finally:
            b.close()


@pytest.mark.gpu
def test_offline_reproduces_single_streams(backends, talos):
    off, single = backends["cuda-offline"], backends["cuda-persistent"]
    cap = off.offline_capacity()
    assert cap >= 32
    tps, seed = 48, 2024
    for n in (1, 5, 31, 33, 100, cap + 37):  # incl. N not a multiple of 32 and N > resident warps
        out = off.generate_offline(n, tps, seed)
        assert out.shape == (n, tps) and out.dtype == np.int32
        idx = sorted({0, n - 1, n // 2} | set(range(0, n, max(1, n // 40))))
        for i in idx:
            assert out[i].tolist() == single.generate(tps, stream_seed(seed, i)), f"N={n} stream {i}"
        assert off.timed_offline(n, tps, seed) == int(out.sum())
    for i in (0, 1, 7):  # and against the float64 Python loop itself
        assert out[i].tolist() == python_loop(talos, tps, stream_seed(seed, i)), f"stream {i}"


@pytest.mark.gpu
def test_offline_seed_wraps_like_stream_seed(backends):
    off, single = backends["cuda-offline"], backends["cuda-persistent"]
    seed = 2**32 + 5  # stream_seed masks base + golden*i to 32 bits
    out = off.generate_offline(3, 20, seed)
    for i in range(3):
        assert out[i].tolist() == single.generate(20, stream_seed(seed, i))


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [c.name for c in VARIANTS])
def test_bad_arguments(backends, variant):
    b = backends[variant]
    with pytest.raises(ValueError):
        b.generate(0, 42)
    with pytest.raises(ValueError):
        b.generate(10, 0)
    with pytest.raises(ValueError):
        b.generate(10, 2**32)
    with pytest.raises(ValueError):
        b.generate(10, 42, "python")
    with pytest.raises(ValueError):
        b.timed_generate(-5, 42)
    for seq in ([], [27], [-1], [0] * 17):
        with pytest.raises(ValueError):
            b.logits(seq)
    assert len(b.generate(5, 42)) == 5  # still usable


@pytest.mark.gpu
def test_offline_bad_arguments(backends):
    off = backends["cuda-offline"]
    for n, tps in ((0, 10), (10, 0), (-1, 10), (2**31, 10)):
        with pytest.raises(ValueError):
            off.generate_offline(n, tps, 1)
    with pytest.raises(MemoryError, match="GiB"):
        off.generate_offline(2**31 - 1, 2**20, 1)
    # the C side refuses too, before it launches anything
    lib, h = off._lib, off._h
    one = np.zeros(1, dtype=np.int32)
    rc = lib.mg_generate_offline(h, 2**31 - 1, 2**40, 1, 0, cuda._i32(one), None)
    assert rc in (cuda.MG_EINVAL, cuda.MG_ENOMEM), lib.mg_last_error()
    assert lib.mg_generate_offline(h, 0, 10, 1, 0, None, None) == cuda.MG_EINVAL
    assert lib.mg_generate(h, 9, 10, 42, None, None) == cuda.MG_EINVAL
    assert lib.mg_logits(h, 2, cuda._i32(np.zeros(17, np.int32)), 17, cuda._f32(np.zeros(17 * 27, np.float32))) \
        == cuda.MG_EINVAL
    with pytest.raises(ValueError):
        off.logits_offline([])
    assert off.generate_offline(3, 4, 1).shape == (3, 4)  # still usable


@pytest.mark.gpu
def test_info_names_the_device(backends):
    info = backends["cuda-persistent"].info()
    assert info["device"] and info["compute_capability"] and info["sms"] > 0
    assert "-cudart static" in info["flags"]
