"""Native C backends: c-fp32 (float32) and c-q412 (TALOS's Q4.12 fixed point).

The kernels (kernels/mg_fp32.c, kernels/mg_q412.c, sharing kernels/mg_common.h)
are compiled on first use with the host C compiler (native.build, -O3
-march=native) and loaded with ctypes. The vector path is chosen at build time
from the compiler's predefined macros (AVX-512, AVX2+FMA, NEON, else portable
scalar C); MICROGPT_BENCH_SIMD=scalar|avx2|avx512|neon forces one.

Every path computes one canonical sequence of float operations (see
mg_common.h), so all paths give bit-identical tokens, and stream i of an
offline run equals the single-stream run seeded with samplers.stream_seed(seed, i).
The whole timed loop (forward pass and sampler) runs in one C call.
"""
from __future__ import annotations

import ctypes
import math
import platform
from typing import ClassVar

import numpy as np

from .. import native
from ..model import BLOCK_SIZE, VOCAB, Params
from ..samplers import MASK32, SAMPLERS, check_seed, python_uniforms
from .base import Backend, Unavailable

C_ABI = 1
MAX_THREADS = 64
ERRORS = {
    -1: "a NULL pointer",
    -2: "an argument out of range",
    -3: "a token id outside 0..26",
    -4: "xorshift32 seed 0",
    -5: "out of memory",
    -6: "could not start a thread",
    -7: "a python-sampler draw outside [0, 1)",
}

_F = ctypes.POINTER(ctypes.c_float)
_I = ctypes.POINTER(ctypes.c_int32)
_D = ctypes.POINTER(ctypes.c_double)

# per process: kernel name -> (lib, info) or the BuildError's message
_BUILDS: dict[str, tuple[ctypes.CDLL, dict] | str] = {}


class NativeError(RuntimeError):
    """A C entry point returned an error code."""


def extra_flags() -> list[str]:
    """Flags added to native.c_flags(): a forced AVX2 build also stops the compiler
    from using AVX-512 on its own (-mno-avx512f), so it runs as on an AVX2-only CPU."""
    simd = native.forced_simd()
    machine = platform.machine().lower()
    if simd in ("avx2", "scalar") and machine in ("x86_64", "amd64", "i686", "i386"):
        return ["-mno-avx512f"] if simd == "avx2" else []
    return []


def build_kernel(name: str) -> tuple[ctypes.CDLL, dict]:
    """Compile (or reuse from the cache) kernels/mg_<name>.c; raise native.BuildError."""
    cc = native.find_c_compiler()
    if cc is None:
        raise native.BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    flags = native.c_flags() + extra_flags()
    src = native.KERNEL_DIR / f"mg_{name}.c"
    lib, path = native.build_and_load(f"mg_{name}", [src], cc, flags, link=["-lm", "-pthread"])
    p = f"mg_{name}_"

    def fn(suffix, restype, *argtypes):
        f = getattr(lib, p + suffix)
        f.restype, f.argtypes = restype, list(argtypes)
        return f

    abi = fn("abi", ctypes.c_int)()
    if abi != C_ABI:
        raise native.BuildError(f"mg_{name}.c has ABI {abi}, this module expects {C_ABI}")
    fn("simd", ctypes.c_char_p)
    fn("create", ctypes.c_void_p, _F, ctypes.c_float)
    fn("destroy", None, ctypes.c_void_p)
    fn("logits", ctypes.c_int, ctypes.c_void_p, _I, ctypes.c_int, _F)
    fn("generate", ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, _D, _I)
    fn("generate_offline", ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint32,
       ctypes.c_int32, _I)
    fn("logits_offline", ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, _I, _I, _F)
    info = {"simd": getattr(lib, p + "simd")().decode(), "compiler": cc,
            "compiler_version": native.compiler_version(cc), "flags": " ".join(flags),
            "library": str(path)}
    return lib, info


def load_kernel(name: str) -> tuple[ctypes.CDLL, dict]:
    """build_kernel once per process and per SIMD/compiler setting; raise Unavailable."""
    try:
        key = f"{name}|{native.find_c_compiler()}|{native.forced_simd()}|{native.cache_dir()}"
    except native.BuildError as exc:  # a bad MICROGPT_BENCH_SIMD
        raise Unavailable(str(exc)) from exc
    if key not in _BUILDS:
        try:
            _BUILDS[key] = build_kernel(name)
        except native.BuildError as exc:
            _BUILDS[key] = str(exc)
        except OSError as exc:  # the library would not load
            _BUILDS[key] = f"cannot load the built library: {exc}"
    got = _BUILDS[key]
    if isinstance(got, str):
        raise Unavailable(got)
    return got


def _check_count(what: str, n, low: int = 1, high: int | None = None) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {n!r}")
    n = int(n)
    if n < low or (high is not None and n > high):
        raise ValueError(f"{what} must be in {low}..{high if high is not None else 'inf'}, got {n}")
    return n


def _check_tokens(tokens, what="tokens") -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not 1 <= arr.size <= BLOCK_SIZE:
        raise ValueError(f"{what}: a sequence of 1..{BLOCK_SIZE} token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"{what}: token ids must be integers")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB):
        raise ValueError(f"{what}: token ids must be in 0..{VOCAB - 1}")
    return np.ascontiguousarray(arr, dtype=np.int32)


class _CBackend(Backend):
    kernel: ClassVar[str] = "?"
    scenarios = ("single-stream", "offline")
    samplers = ("xorshift32", "python")  # greedy decoding (temperature 0) comes with the kernels rework

    def __init__(self, params: Params, temperature: float = 0.5):
        super().__init__(params, temperature)
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be finite, got {temperature}")
        self.lib, self.build_info = load_kernel(self.kernel)
        self._p = f"mg_{self.kernel}_"
        self._w = np.ascontiguousarray(params.flat("c", np.float32))
        handle = self._fn("create")(native.float_ptr(self._w), ctypes.c_float(self.temperature))
        if not handle:
            raise ValueError(f"mg_{self.kernel}_create refused the weights or the temperature {temperature}")
        self.handle = ctypes.c_void_p(handle)

    @classmethod
    def availability(cls) -> str | None:
        try:
            load_kernel(cls.kernel)
        except Unavailable as exc:
            return str(exc)
        return None

    def _fn(self, name):
        return getattr(self.lib, self._p + name)

    def _check(self, code: int, what: str) -> int:
        if code < 0:
            raise NativeError(f"{self._p}{what}: {ERRORS.get(code, 'error')} (code {code})")
        return code

    def info(self) -> dict:
        keep = ("simd", "compiler", "compiler_version", "flags")
        return {k: self.build_info[k] for k in keep}

    # ----------------------------------------------------------- single stream
    def logits(self, tokens) -> np.ndarray:
        arr = _check_tokens(tokens)
        out = np.zeros((arr.size, VOCAB), dtype=np.float32)
        self._check(self._fn("logits")(self.handle, native.int_ptr(arr), arr.size, native.float_ptr(out)), "logits")
        return out.astype(np.float64)

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        n = _check_count("n_tokens", n_tokens)
        check_seed(sampler, seed)
        out = np.zeros(n, dtype=np.int32)
        if sampler == "python":
            u = np.ascontiguousarray(python_uniforms(seed, n), dtype=np.float64)
            rc = self._fn("generate")(self.handle, n, 0, native.double_ptr(u), native.int_ptr(out))
        else:
            rc = self._fn("generate")(self.handle, n, seed, None, native.int_ptr(out))
        self._check(rc, "generate")
        return out.tolist()

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        n = _check_count("n_tokens", n_tokens)
        check_seed("xorshift32", seed)
        return self._check(self._fn("generate")(self.handle, n, seed, None, None), "generate")

    # ----------------------------------------------------------------- offline
    def _offline_args(self, n_streams, tokens_per_stream, seed, threads):
        ns = _check_count("n_streams", n_streams, 1, 2**31 - 1)
        tps = _check_count("tokens_per_stream", tokens_per_stream)
        th = _check_count("threads", threads, 1, MAX_THREADS)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MASK32:
            raise ValueError(f"the offline base seed must be in 0..{MASK32}, got {seed!r}")
        return ns, tps, int(seed), th

    def generate_offline(self, n_streams: int, tokens_per_stream: int, seed: int, threads: int = 1) -> np.ndarray:
        ns, tps, seed, th = self._offline_args(n_streams, tokens_per_stream, seed, threads)
        out = np.zeros((ns, tps), dtype=np.int32)
        self._check(self._fn("generate_offline")(self.handle, ns, tps, seed, th, native.int_ptr(out)),
                    "generate_offline")
        return out

    def timed_offline(self, n_streams: int, tokens_per_stream: int, seed: int, threads: int = 1) -> int:
        ns, tps, seed, th = self._offline_args(n_streams, tokens_per_stream, seed, threads)
        return self._check(self._fn("generate_offline")(self.handle, ns, tps, seed, th, None), "generate_offline")

    def logits_offline(self, sequences) -> list[np.ndarray]:
        seqs = [_check_tokens(s, f"sequence {i}") for i, s in enumerate(sequences)]
        if not seqs:
            raise ValueError("logits_offline needs at least one sequence")
        toks = np.zeros((len(seqs), BLOCK_SIZE), dtype=np.int32)
        lens = np.array([s.size for s in seqs], dtype=np.int32)
        for i, s in enumerate(seqs):
            toks[i, :s.size] = s
        out = np.zeros((len(seqs), BLOCK_SIZE, VOCAB), dtype=np.float32)
        self._check(self._fn("logits_offline")(self.handle, len(seqs), native.int_ptr(toks), native.int_ptr(lens),
                                               native.float_ptr(out)), "logits_offline")
        return [out[i, :s.size].astype(np.float64) for i, s in enumerate(seqs)]

    def close(self) -> None:
        if getattr(self, "handle", None) is not None and self.handle.value:
            self._fn("destroy")(self.handle)
            self.handle = None


class CFp32Backend(_CBackend):
    name = "c-fp32"
    description = "C float32, hand-vectorised (AVX-512 / AVX2 / NEON / scalar), whole loop in C"
    precision = "fp32"
    kernel = "fp32"


class CQ412Backend(_CBackend):
    name = "c-q412"
    description = "C Q4.12 fixed point (int16 weights and activations, int32 accumulation), whole loop in C"
    precision = "q412"
    kernel = "q412"
