"""The talos-emu backends: TALOS-V2's FPGA core emulated bit for bit.

Two implementations of the same core (talos-rtl-spec.md), held to the RTL's
reference vectors by tests/test_talos.py:
  - talos-emu     kernels/talos_emu.c through ctypes (the timed loop runs in C);
  - talos-emu-py  microgpt_bench.talos, the readable pure-Python reference.
Weights are the Params floats quantised as the ROMs were made (rint(w*4096),
clipped to int16). The temperature is quantised to the core's Q8.8 input, and
the core only distinguishes T <= 0.5, <= 1, <= 2 and above (see talos.temper).
The seed is the FPGA's seed (any u32; 0 is the degenerate fixed point), and the
sampler is the core's own ("talos"): xorshift32, a mixing multiply and an
interpolated exp table, not the float samplers of the other backends.
info() reports the modelled FPGA cycles and tok/s of the last generate or timed run.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

from .. import native, talos
from ..model import BLOCK_SIZE, VOCAB, Params
from .base import Backend, Unavailable

SAMPLER = "talos"
SAMPLERS = (SAMPLER, "argmax")
C_ABI = 2
I32P = ctypes.POINTER(ctypes.c_int32)
U64P = ctypes.POINTER(ctypes.c_uint64)


class TalosError(RuntimeError):
    """The C emulator refused a call (its message says why)."""


# ------------------------------------------------------------------ the C side


@lru_cache(maxsize=1)
def _load_c() -> tuple[ctypes.CDLL, dict]:
    lib, info = native.build_c("talos_emu", ["talos_emu.c"])
    lib.talos_abi.restype = ctypes.c_int
    lib.talos_abi.argtypes = []
    if lib.talos_abi() != C_ABI:
        raise native.BuildError(f"talos_emu.c ABI {lib.talos_abi()}, this module expects {C_ABI}")
    lib.talos_strerror.restype = ctypes.c_char_p
    lib.talos_strerror.argtypes = [ctypes.c_int]
    lib.talos_create.restype = ctypes.c_int
    lib.talos_create.argtypes = [ctypes.POINTER(ctypes.c_int16), ctypes.c_int32,
                                 ctypes.POINTER(ctypes.c_void_p)]
    lib.talos_destroy.restype = ctypes.c_int
    lib.talos_destroy.argtypes = [ctypes.c_void_p]
    lib.talos_step.restype = ctypes.c_int
    lib.talos_step.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint32,
                               ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, I32P,
                               ctypes.POINTER(ctypes.c_uint32), I32P]
    lib.talos_logits.restype = ctypes.c_int
    lib.talos_logits.argtypes = [ctypes.c_void_p, I32P, ctypes.c_int32, I32P]
    lib.talos_generate.restype = ctypes.c_int
    lib.talos_generate.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int32,
                                   ctypes.c_int32, I32P, U64P]
    return lib, info


class CTalosCore:
    """The C core behind a handle; same step() contract as talos.TalosCore."""

    def __init__(self, rom: dict):
        self.lib, self.build_info = _load_c()
        words = talos.rom_flat_c_order(rom)
        handle = ctypes.c_void_p()
        self._check(self.lib.talos_create(words.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)),
                                          words.size, ctypes.byref(handle)))
        self.handle = handle

    def _check(self, code: int) -> None:
        if code != 0:
            raise TalosError(f"talos_emu.c: {self.lib.talos_strerror(code).decode()} (code {code})")

    def step(self, token: int, pos: int, rng_in: int, clear: bool, tq: int,
             sample_mode: bool = True) -> talos.Step:
        talos.check_step_args(token, pos, rng_in, tq)  # clear Python errors before C's codes
        out4 = np.zeros(4, dtype=np.int32)
        rng_out = ctypes.c_uint32()
        logits = np.zeros(VOCAB, dtype=np.int32)
        self._check(self.lib.talos_step(self.handle, token, pos, rng_in, int(bool(clear)), tq,
                                        int(bool(sample_mode)), native.int_ptr(out4),
                                        ctypes.byref(rng_out), native.int_ptr(logits)))
        return talos.Step(int(out4[0]), rng_out.value, int(out4[1]), int(out4[2]),
                          logits.tolist(), int(out4[3]))

    def logits_q12(self, tokens: list[int]) -> np.ndarray:
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        out = np.zeros((max(arr.size, 1), VOCAB), dtype=np.int32)
        self._check(self.lib.talos_logits(self.handle, native.int_ptr(arr), arr.size, native.int_ptr(out)))
        return out

    def generate(self, n_tokens: int, seed: int, tq: int, keep: bool = True, sample_mode: bool = True):
        """(tokens or None, stats): stats = checksum, board_cycles, bos, rng_final."""
        tokens = np.zeros(n_tokens, dtype=np.int32) if keep else None
        stats = np.zeros(4, dtype=np.uint64)
        self._check(self.lib.talos_generate(self.handle, n_tokens, seed, tq, int(bool(sample_mode)),
                                            native.int_ptr(tokens) if keep else None,
                                            stats.ctypes.data_as(U64P)))
        return tokens, dict(zip(("checksum", "board_cycles", "bos", "rng_final"), map(int, stats)))

    def close(self) -> None:
        if getattr(self, "handle", None) is not None and self.handle.value:
            self.lib.talos_destroy(self.handle)
            self.handle = None

    def __del__(self):
        self.close()


# ---------------------------------------------------------------- the backends


def _check_run(n_tokens: int, seed: int, sampler: str = SAMPLER) -> int:
    if sampler not in SAMPLERS:
        raise ValueError(f"the TALOS core samples with {SAMPLER!r} (its own xorshift32 + interpolated "
                         f"exp table) or decodes greedily ('argmax', its sample_mode = 0); got {sampler!r}")
    if not isinstance(n_tokens, (int, np.integer)) or n_tokens < 0:
        raise ValueError(f"n_tokens must be a non-negative integer, got {n_tokens!r}")
    return talos.check_seed(seed)


def _check_probe(tokens) -> list[int]:
    tokens = [int(t) for t in tokens]
    if not 1 <= len(tokens) <= BLOCK_SIZE:
        raise ValueError(f"a probe sequence holds 1..{BLOCK_SIZE} tokens, got {len(tokens)}")
    if any(not 0 <= t < VOCAB for t in tokens):
        raise ValueError(f"tokens must be in 0..{VOCAB - 1}, got {tokens}")
    return tokens


class _TalosBackend(Backend):
    precision = "talos"
    samplers = SAMPLERS
    timed_sampler = SAMPLER
    scenarios = ("single-stream",)
    implementation = "?"
    # T = 0 is a legal Q8.8 input the core samples at, not greedy decoding: that is sample_mode = 0
    greedy_at_zero_temperature = False

    def __init__(self, params: Params, temperature: float = 0.5, fpga_mhz: float = talos.FPGA_MHZ,
                 greedy: bool = False):
        super().__init__(params, temperature)
        if not fpga_mhz > 0:
            raise ValueError(f"fpga_mhz must be > 0, got {fpga_mhz}")
        self.tq = talos.temperature_q8_8(self.temperature)
        self.sample_mode = not greedy  # the core's own input: False decodes the argmax
        self.rom = talos.quantise(params)
        self.fpga_mhz = float(fpga_mhz)
        self.last_run: dict | None = None  # cycle-model figures of the last generation

    def logits_q12(self, tokens) -> np.ndarray:
        """Integer Q4.12 logits (len(tokens), 27), exactly as the core computes them."""
        raise NotImplementedError

    def logits(self, tokens) -> np.ndarray:
        return self.logits_q12(tokens).astype(np.float64) / 4096.0

    def _record(self, n_tokens: int, board_cycles: int, n_bos: int, sample_mode: bool = True) -> None:
        self.last_run = (talos.fpga_rate(n_tokens, board_cycles, self.fpga_mhz, n_chars=n_tokens - n_bos,
                                         sample_mode=sample_mode)
                         if n_tokens else None)

    def custom_gate(self, probe, reference) -> dict:
        """Bit-exactness, not closeness: the integer logits of the probe must equal those of
        the Python reference core (itself held to the RTL's vectors by the tests), and every
        step of the RTL's reference vectors (shipped in the package, or
        $MICROGPT_BENCH_TALOS_VECTORS) must be reproduced. The distance from the
        float64 model is reported, not gated: TALOS's arithmetic is meant to differ."""
        want = talos.TalosCore(self.rom)
        mismatches = sum(int(np.any(self.logits_q12(seq) != np.array(talos.logits_q12(want, seq))))
                         for seq in probe)
        gate = {"method": "bit-exact vs the Python reference core", "positions": sum(map(len, probe)),
                "max_abs_error": max(float(np.max(np.abs(self.logits(s) - r))) for s, r in zip(probe, reference)),
                "error_is": "vs float64 model (informational)", "tolerance": 0.0,
                "mismatched_sequences": mismatches}
        vectors = talos.find_vectors()
        if not vectors.is_file():  # the shipped copy is part of the package: its absence is a failure
            return {**gate, "passed": False, "failure": f"the RTL reference vectors are missing ({vectors})"}
        gate["vector_steps"], gate["vector_mismatches"] = talos.check_vectors(self._vector_core(), vectors)
        gate["method"] += f" and the RTL vectors ({vectors.name})"
        gate["passed"] = mismatches == 0 and not gate["vector_mismatches"]
        if not gate["passed"]:
            gate["failure"] = (f"{mismatches} probe sequences and {gate['vector_mismatches']} "
                               "vector steps differ from the reference core")
        return gate

    def _vector_core(self):
        return talos.TalosCore(self.rom)

    sampling_distribution_name = "TALOS sampler weight table (exact, 24-bit draws, wraps included)"

    def sampling_distribution(self, logits) -> np.ndarray:
        """What the core's sampler draws from: its interpolated exp table, not softmax."""
        q12 = np.rint(np.asarray(logits) * 4096).astype(np.int64).tolist()
        return np.asarray(talos.sampler_distribution(q12, self.temperature), np.float64)

    @classmethod
    def validate_temperature(cls, temperature) -> float:
        talos.temperature_q8_8(temperature)  # any Q8.8 input, 0..255.996
        return float(temperature)

    def _sample_mode(self, sampler: str) -> bool:
        return self.sample_mode and sampler != "argmax"

    def info(self) -> dict:
        out = {"implementation": self.implementation, "sampler": SAMPLER if self.sample_mode else "argmax",
               "sample_mode": int(self.sample_mode),
               "temperature_q8_8": self.tq,
               "effective_temperature": talos.effective_temperature(self.tq),
               "fpga_mhz": self.fpga_mhz}
        if self.last_run:
            out.update(self.last_run)
        return out


class TalosEmuBackend(_TalosBackend):
    name = "talos-emu"
    description = "TALOS-V2's FPGA core (Q4.12, LUT exp, xorshift32 sampler) emulated bit for bit in C"
    implementation = "C (kernels/talos_emu.c)"

    def __init__(self, params: Params, temperature: float = 0.5, fpga_mhz: float = talos.FPGA_MHZ,
                 greedy: bool = False):
        super().__init__(params, temperature, fpga_mhz, greedy)
        try:
            self.core = CTalosCore(self.rom)
        except native.BuildError as exc:
            raise Unavailable(str(exc)) from exc

    @classmethod
    def availability(cls) -> str | None:
        try:
            _load_c()
        except (native.BuildError, OSError, AttributeError) as exc:
            return f"talos_emu.c cannot be built or loaded: {exc}"
        return None

    def info(self) -> dict:
        return {**self.core.build_info, **super().info()}

    def logits_q12(self, tokens) -> np.ndarray:
        return self.core.logits_q12(_check_probe(tokens))

    def generate(self, n_tokens: int, seed: int, sampler: str = SAMPLER) -> list[int]:
        seed = _check_run(n_tokens, seed, sampler)
        mode = self._sample_mode(sampler)
        tokens, stats = self.core.generate(int(n_tokens), seed, self.tq, keep=True, sample_mode=mode)
        self._record(int(n_tokens), stats["board_cycles"], stats["bos"], mode)
        return tokens.tolist()

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        seed = _check_run(n_tokens, seed)
        _, stats = self.core.generate(int(n_tokens), seed, self.tq, keep=False, sample_mode=self.sample_mode)
        self._record(int(n_tokens), stats["board_cycles"], stats["bos"], self.sample_mode)
        return stats["checksum"]

    def close(self) -> None:
        self.core.close()

    def _vector_core(self):
        return self.core


class TalosEmuPyBackend(_TalosBackend):
    name = "talos-emu-py"
    description = "TALOS-V2's FPGA core emulated bit for bit in plain Python (the readable reference)"
    implementation = "Python (microgpt_bench.talos)"

    def __init__(self, params: Params, temperature: float = 0.5, fpga_mhz: float = talos.FPGA_MHZ,
                 greedy: bool = False):
        super().__init__(params, temperature, fpga_mhz, greedy)
        self.core = talos.TalosCore(self.rom)

    def logits_q12(self, tokens) -> np.ndarray:
        return np.array(talos.logits_q12(self.core, _check_probe(tokens)), dtype=np.int32)

    def generate(self, n_tokens: int, seed: int, sampler: str = SAMPLER) -> list[int]:
        seed = _check_run(n_tokens, seed, sampler)
        mode = self._sample_mode(sampler)
        tokens, cycles, _ = talos.generate_stream(self.core, int(n_tokens), seed, self.tq, mode)
        self._record(len(tokens), cycles, tokens.count(talos.BOS), mode)
        return tokens

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        return sum(self.generate(n_tokens, seed, SAMPLER if self.sample_mode else "argmax"))

    def iter_tokens(self, n_tokens: int, seed: int, sampler: str = SAMPLER):
        """The per-token primitive (the latency pass): the same loop as generate, one step at a time."""
        seed = _check_run(n_tokens, seed, sampler)
        steps = talos.iter_steps(self.core, int(n_tokens), seed, self.tq, self._sample_mode(sampler))
        return (st.token_out for st in steps)


# ------------------------------------------------------- the modelled FPGA row


def modelled_fpga_run(params: Params, n_tokens: int = 100_000, seed: int = 42,
                      temperature: float = 0.5, mhz: float = talos.FPGA_MHZ) -> dict:
    """The board's modelled throughput for a benchmark run: the C emulator runs the loop and
    counts every step's cycles exactly (RMS shortcuts included), then tokens / (cycles / MHz)."""
    backend = TalosEmuBackend(params, temperature, fpga_mhz=mhz)
    try:
        backend.timed_generate(n_tokens, seed)
        return {**backend.last_run, "seed": seed, "temperature_q8_8": backend.tq}
    finally:
        backend.close()
