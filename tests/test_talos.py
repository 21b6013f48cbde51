"""The TALOS-V2 core emulators (talos.py and kernels/talos_emu.c) against the RTL's vectors."""
from __future__ import annotations

import ctypes
import json
import shutil

import numpy as np
import pytest

from microgpt_bench import talos
from microgpt_bench.backends.talos_emu import (CTalosCore, TalosEmuBackend, TalosEmuPyBackend,
                                               _load_c, modelled_fpga_run)
from microgpt_bench.model import BOS, names_from_tokens
from microgpt_bench.weights import WeightsError, load_rom_ints, load_weights

IMPLS = ["py", "c"]


@pytest.fixture(scope="module")
def rom(shared_data):
    return load_rom_ints(shared_data / "talos" / "q12")


@pytest.fixture(scope="module")
def params(shared_data):
    return load_weights(shared_data / "talos" / "q12")


@pytest.fixture(scope="module")
def vectors(shared_data):
    with open(shared_data / "talos" / "rtl-vectors.jsonl") as fh:
        return [json.loads(line) for line in fh]


def need_c():
    reason = TalosEmuBackend.availability()
    if reason:
        pytest.skip(reason)


def make_core(impl, rom):
    if impl == "c":
        need_c()
        return CTalosCore(rom)
    return talos.TalosCore(rom)


def make_backend(impl, params, temperature=0.5):
    if impl == "c":
        need_c()
        return TalosEmuBackend(params, temperature)
    return TalosEmuPyBackend(params, temperature)


# ------------------------------------------------------------------ vectors


@pytest.mark.parametrize("impl", IMPLS)
def test_every_vector_step_is_reproduced(impl, rom, vectors):
    core = make_core(impl, rom)
    total, matched, bad = 0, 0, []
    for vec in vectors:
        steps = talos.run_generation(core, vec["seed"], vec["temperature_q8_8"], vec["mode"] == "sample")
        if len(steps) != len(vec["steps"]):
            bad.append((vec["seed"], vec["temperature_q8_8"], "length"))
        for got, want in zip(steps, vec["steps"]):
            ok = (got.token_out == want["token_out"] and got.rng_out == want["rng_out"]
                  and got.logits == want["logits"] and got.cycles == want["cycles"])
            matched += ok
            if not ok:
                bad.append((vec["seed"], vec["temperature_q8_8"], want["pos"]))
        total += len(vec["steps"])
    print(f"{impl}: {matched}/{total} vector steps identical (tokens, rng, 27 logits, cycles)")
    assert len(vectors) == 77 and total == 531
    assert not bad and matched == total


@pytest.mark.parametrize("impl", IMPLS)
def test_backend_logits_equal_vector_logits(impl, params, vectors):
    backend = make_backend(impl, params)
    for vec in vectors[:10]:
        tokens = [s["token_in"] for s in vec["steps"]]
        want = np.array([s["logits"] for s in vec["steps"]])
        assert np.array_equal(backend.logits_q12(tokens), want)
        assert np.array_equal(backend.logits(tokens) * 4096, want)  # exact: ints / 2^12


def test_kelyn_is_seed_2(params, vectors):
    """TALOS-V2's own test: seed 2 at T = 0.5 prints 'kelyn' (tokens 10 4 11 24 13, BOS)."""
    assert talos.talos_names(params, 2, 1, 0.5) == ["kelyn"]
    assert talos.talos_names(params, 2, 1, 0.1) == ["kelyn"]  # any T <= 0.5 acts as 0.5
    want = next(v for v in vectors if v["seed"] == 2 and v["temperature_q8_8"] == 128
                and v["mode"] == "sample")
    assert [s["token_out"] for s in want["steps"]] == [10, 4, 11, 24, 13, BOS]
    # the board's six-step test: 868*6 + 10*6*5 = 5,508 cycles, ~51,060 characters/s
    rate = talos.modelled_fpga_rate([10, 4, 11, 24, 13, BOS])
    assert rate["fpga_cycles"] == 5508
    assert rate["fpga_chars_per_s"] == pytest.approx(51_062, abs=1)


# ------------------------------------------------------------- backends agree


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_c_and_python_generate_the_same_stream(params, temperature):
    c, py = make_backend("c", params, temperature), make_backend("py", params, temperature)
    for seed in (42, 7):
        a, b = c.generate(1500, seed), py.generate(1500, seed)
        assert a == b
        assert c.info()["fpga_cycles"] == py.info()["fpga_cycles"]
        assert c.timed_generate(1500, seed) == sum(a)
    for n in (0, -1):  # the one rule of the base class: at least one token
        with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
            c.generate(n, 42)
        with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
            c.timed_generate(n, 42)


def test_stream_restarts_names_with_rng_carried_on(params):
    """The stream's names are the board's generations one after another, RNG chained."""
    tokens = make_backend("c", params).generate(400, 2)
    assert names_from_tokens(tokens)[:5] == talos.talos_names(params, 2, 5)


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_zero_is_the_fixed_point(impl, params, rom):
    """Seed 0: xorshift32 stays 0, cut = 0, every token is 0 ('a'), 16 per generation."""
    steps = talos.run_generation(make_core(impl, rom), 0, 128)
    assert [s.token_out for s in steps] == [0] * 16 and all(s.rng_out == 0 for s in steps)
    tokens = make_backend(impl, params).generate(40, 0)
    assert tokens == [0] * 40
    assert names_from_tokens(tokens) == ["a" * 16] * 2


# --------------------------------------------------------------- weights


def test_quantising_the_floats_gives_the_roms(shared_data, rom, params):
    for source in (params, load_weights(shared_data / "talos" / "weights_only.npy")):
        q = talos.quantise(source)
        for name, arr in rom.items():
            assert np.array_equal(q[name], arr), name


def test_corrupt_hex_is_a_weights_error(shared_data, tmp_path):
    romdir = tmp_path / "q12"
    shutil.copytree(shared_data / "talos" / "q12", romdir)
    path = romdir / "wte_q12.hex"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["zz1g"] + lines[1:]) + "\n")
    with pytest.raises(WeightsError, match="wte_q12.hex.*line 1"):
        load_weights(romdir)
    path.write_text("\n".join(lines[:-1]) + "\n")  # one word short: wrong shape
    with pytest.raises(WeightsError, match="431 words, expected 432"):
        load_rom_ints(romdir)


@pytest.mark.parametrize("impl", IMPLS)
def test_wrong_shape_rom_is_a_weights_error(impl, rom):
    bad = dict(rom, wte=rom["wte"][:26])
    with pytest.raises(WeightsError, match="wte has shape"):
        make_core(impl, bad)
    with pytest.raises(WeightsError, match="int16"):
        make_core(impl, dict(rom, wpe=rom["wpe"].astype(np.int32) + 40000))


# ------------------------------------------------------------------ C entry points


def test_c_entry_points_reject_bad_arguments(rom):
    need_c()
    lib, _ = _load_c()
    words = talos.rom_flat_c_order(rom)
    wp = words.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
    h = ctypes.c_void_p()
    assert lib.talos_create(None, 4192, ctypes.byref(h)) == -1
    assert lib.talos_create(wp, 4191, ctypes.byref(h)) == -2
    assert lib.talos_create(wp, 4192, None) == -1
    assert lib.talos_create(wp, 4192, ctypes.byref(h)) == 0
    out4, logits = np.zeros(4, np.int32), np.zeros(27 * 17, np.int32)
    rng = ctypes.c_uint32()
    i32 = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))  # noqa: E731

    def step(handle=h, token=26, pos=0, tq=128, clear=1, mode=1, o=out4):
        return lib.talos_step(handle, token, pos, 1, clear, tq, mode, i32(o) if o is not None else None,
                              ctypes.byref(rng), i32(logits))
    fake = np.zeros(64, np.uint8)  # zeroed memory: no magic, not a handle
    assert step() == 0
    assert step(handle=None) == -1
    assert step(handle=ctypes.c_void_p(fake.ctypes.data)) == -8
    assert step(token=27) == -3 and step(token=-1) == -3
    assert step(pos=16) == -4 and step(pos=-1) == -4
    assert step(tq=65536) == -5 and step(tq=-1) == -5
    assert step(clear=2) == -6 and step(mode=-1) == -6
    assert step(o=None) == -1
    toks = np.array([26] * 17, np.int32)
    assert lib.talos_logits(h, i32(toks), 0, i32(logits)) == -7
    assert lib.talos_logits(h, i32(toks), 17, i32(logits)) == -7
    assert lib.talos_logits(h, i32(np.array([26, 27], np.int32)), 2, i32(logits)) == -3
    assert lib.talos_logits(h, None, 1, i32(logits)) == -1
    stats = np.zeros(4, np.uint64).ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
    assert lib.talos_generate(h, -1, 42, 128, 1, None, stats) == -7
    assert lib.talos_generate(h, 10, 42, 1 << 16, 1, None, stats) == -5
    assert lib.talos_generate(h, 10, 42, 128, 2, None, stats) == -6
    assert lib.talos_generate(h, 10, 42, 128, 1, None, None) == -1
    assert lib.talos_generate(h, 10, 42, 128, 1, None, stats) == 0
    assert lib.talos_generate(h, 10, 42, 128, 0, None, stats) == 0
    assert lib.talos_destroy(h) == 0
    assert lib.talos_destroy(None) == -1
    assert lib.talos_strerror(-8) == b"not a live handle from talos_create"


@pytest.mark.parametrize("impl", IMPLS)
def test_backend_rejects_bad_requests(impl, params):
    backend = make_backend(impl, params)
    with pytest.raises(ValueError, match="samples with .talos."):
        backend.generate(5, 42, "xorshift32")
    with pytest.raises(ValueError, match="32-bit"):
        backend.generate(5, -1)
    with pytest.raises(ValueError, match="32-bit"):
        backend.generate(5, 1 << 32)
    with pytest.raises(ValueError, match="n_tokens must be an integer >= 1"):
        backend.timed_generate(-1, 42)
    with pytest.raises(ValueError, match="1..16"):
        backend.logits([])
    with pytest.raises(ValueError, match="0..26"):
        backend.logits([26, 27])


# -------------------------------------------------------- sampler and cycles


def brute_force_distribution(logits, tq):
    """Run the core's pick for all 2^24 values of the draw's 24 bits."""
    weights = talos.sampler_weights(logits, tq)
    total = (sum(weights) & talos.MASK32) or 1
    running = np.cumsum(np.array(weights, np.uint64)) & talos.MASK32
    counts = np.zeros(27, np.int64)
    for start in range(0, 1 << 24, 1 << 21):
        cut = (np.arange(start, start + (1 << 21), dtype=np.uint64) * total) >> 24
        picked = np.full(cut.shape, talos.argmax(logits), np.int64)
        for v in range(26, -1, -1):  # the lowest v whose running sum exceeds cut wins
            picked[running[v] > cut] = v
        counts += np.bincount(picked, minlength=27)
    return counts / float(1 << 24)


def test_sampler_distribution_is_what_the_core_draws(vectors):
    logits = vectors[0]["steps"][3]["logits"]
    for tq in (128, 256, 1024):
        probs = talos.sampler_distribution_q8_8(logits, tq)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.array_equal(probs, brute_force_distribution(logits, tq))
    # no wrap at T = 1: the probabilities are the table's weights over their sum
    w = np.array(talos.sampler_weights(logits, 256), float)
    assert np.allclose(talos.sampler_distribution(logits, 1.0), w / w.sum(), atol=2 ** -23)


def test_sampler_wraps_as_the_rtl_does():
    """A2: at T <= 0.5 a logit ~8 below the top wraps to the top's weight (4096)."""
    logits = [0] * 27
    logits[0], logits[1], logits[2] = 16384, 16384 - 32768, 16384 - 32400
    weights = talos.sampler_weights(logits, 128)
    assert weights[1] == 4096  # gap 32768 -> 65536 after doubling -> 8-bit f wraps to 0
    assert weights[2] > 3_000_000_000  # c = 63 reads LUT[0] as its neighbour: u32 wrap
    assert talos.sampler_weights(logits, 256)[1] < 4096
    assert np.array_equal(talos.sampler_distribution_q8_8(logits, 128),
                          brute_force_distribution(logits, 128))


def test_temperature_quantisation():
    assert talos.temperature_q8_8(0.5) == 128 and talos.temperature_q8_8(1.0) == 256
    assert [talos.effective_temperature(talos.temperature_q8_8(t)) for t in (0.1, 0.5, 0.7, 1.5, 3.0)] \
        == [0.5, 0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        talos.temperature_q8_8(float("nan"))


def test_cycle_model_and_fpga_rate(params):
    assert talos.step_cycles(0) == 866 and talos.step_cycles(15) == 1166
    assert talos.step_cycles(3, sample_mode=False) == 812
    rate = modelled_fpga_run(params, n_tokens=5000, seed=42, temperature=0.5, mhz=56.25)
    assert rate["fpga_tokens_per_s"] == pytest.approx(5000 * 56.25e6 / rate["fpga_cycles"])
    doubled = modelled_fpga_run(params, n_tokens=5000, seed=42, mhz=112.5)
    assert doubled["fpga_tokens_per_s"] == pytest.approx(2 * rate["fpga_tokens_per_s"])


# ------------------------------------------- every temperature the core takes, and argmax


def first_name_tokens(backend, seed, sampler=None):
    """The tokens of the first generation from seed (up to and including its BOS, or 16)."""
    tokens = backend.generate(16, seed) if sampler is None else backend.generate(16, seed, sampler)
    return tokens[: tokens.index(BOS) + 1] if BOS in tokens else tokens


def vector_tokens(vec):
    return [st["token_out"] for st in vec["steps"]]


@pytest.mark.parametrize("impl", IMPLS)
def test_every_vector_temperature_gives_the_fpgas_names(impl, params, vectors):
    """Backends made at the vector's Q8.8 temperature reproduce its generation token for token."""
    for vec in vectors:
        if vec["mode"] != "sample":
            continue
        backend = make_backend(impl, params, vec["temperature_q8_8"] / 256)
        assert first_name_tokens(backend, vec["seed"]) == vector_tokens(vec), vec["seed"]


@pytest.mark.parametrize("impl", IMPLS)
def test_temperature_zero_is_the_cores_quantised_input(impl, params, vectors):
    """T = 0 is a legal Q8.8 input; the core samples at it as at every T <= 0.5 (spec section 3),
    so its names are the FPGA's at 0.5 and 0.25, and so are those of T = 0.001 (input 0)."""
    for t in (0, 0.001, 0.3):
        backend = make_backend(impl, params, t)
        assert backend.tq == round(t * 256)
        for vec in (v for v in vectors if v["mode"] == "sample" and v["temperature_q8_8"] <= 128):
            assert first_name_tokens(backend, vec["seed"]) == vector_tokens(vec)


@pytest.mark.parametrize("impl", IMPLS)
def test_argmax_is_the_cores_sample_mode_0(impl, params, vectors):
    vec = next(v for v in vectors if v["mode"] == "argmax")
    greedy = (TalosEmuBackend if impl == "c" else TalosEmuPyBackend).create(params, 0.5, "argmax")
    if impl == "c":
        need_c()
    assert greedy.sample_mode is False and greedy.info()["sample_mode"] == 0
    assert first_name_tokens(greedy, vec["seed"]) == vector_tokens(vec)
    sampled = make_backend(impl, params)
    assert first_name_tokens(sampled, vec["seed"], "argmax") == vector_tokens(vec)
    # the cycle model of the argmax steps: 752 + 20p in the core, + 2 on the board
    n = len(vec["steps"])
    greedy.generate(n, vec["seed"])
    assert greedy.last_run["fpga_cycles"] == sum(752 + 20 * p + 2 for p in range(n))
    assert [st["cycles"] for st in vec["steps"]] == [752 + 20 * p for p in range(n)]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 256.0, 1e9])
def test_out_of_range_core_temperatures_are_refused(params, bad):
    with pytest.raises(ValueError, match="Q8.8"):
        TalosEmuPyBackend(params, bad)


def test_largest_q8_8_temperature_is_accepted(params):
    assert TalosEmuPyBackend(params, 255.996).tq == 0xFFFF
