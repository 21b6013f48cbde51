"""Native C backends: c-fp32 (float32) and c-q412 (TALOS's Q4.12 fixed point).

The kernels (kernels/mg_fp32.c, kernels/mg_q412.c: their arithmetic; the shared
vector layer in kernels/mg_common.h, the driver in kernels/mg_driver.h, the shape
in kernels/mg_model.h) are compiled on first use with the host C compiler
(native.build, -O3 -march=native) in every variant this CPU can run, side by
side (avx512, avx512-scalef, avx2-evex, avx2, scalar; neon on Arm), and loaded with ctypes. The
autotuner (autotune.py) gates and times each variant once per CPU and picks the
fastest per scenario; MICROGPT_BENCH_SIMD=<variant> forces one.

Every path computes one canonical sequence of float operations (see
mg_common.h), so all paths give bit-identical tokens, and stream i of an
offline run equals the single-stream run seeded with samplers.stream_seed(seed, i).
The whole timed loop (forward pass and sampler) runs in one C call.
Temperature 0 decodes greedily (the lowest index of the largest logit) on every
path, single stream and offline. generate_stamped runs the same loop with a
timestamp after each token (TSC / Arm generic timer / CLOCK_MONOTONIC), for the
latency measurement; timer_info says which clock and what one stamp costs.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import autotune, machine, native, peaks
from ..model import BLOCK_SIZE, VOCAB, Params
from ..samplers import MASK32, SAMPLERS, check_seed, python_uniforms
from ..server import ServeResult, check_schedule, first_name
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
_I64 = ctypes.POINTER(ctypes.c_int64)
_U32 = ctypes.POINTER(ctypes.c_uint32)

# per process: kernel name -> (lib, info) or the BuildError's message
_BUILDS: dict[str, tuple[ctypes.CDLL, dict] | str] = {}


class NativeError(RuntimeError):
    """A C entry point returned an error code."""


X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
# what each compiled variant adds to the -march=native flags: a forced AVX2 build stops
# the compiler from using AVX-512 on its own (-mno-avx512f), so it runs as on an AVX2-only CPU
VARIANT_FLAGS = {"avx512": ["-DMG_FORCE_AVX512"], "avx512-scalef": ["-DMG_FORCE_AVX512", "-DMG_EXP2_SCALEF"],
                 "avx2-evex": ["-DMG_FORCE_AVX2"],
                 "avx2": ["-DMG_FORCE_AVX2", "-mno-avx512f"] if X86 else ["-DMG_FORCE_AVX2"],
                 "neon": ["-DMG_FORCE_NEON"], "scalar": ["-DMG_FORCE_SCALAR"]}
# the CPU flags (/proc/cpuinfo) a variant needs
AVX512_NEEDS = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
VARIANT_NEEDS = {"avx512": AVX512_NEEDS, "avx512-scalef": AVX512_NEEDS, "avx2-evex": {"avx2", "fma", "avx512vl"},
                 "avx2": {"avx2", "fma"}, "neon": {"asimd"}, "scalar": set()}


MACRO_FLAGS = {"__AVX512F__": "avx512f", "__AVX512BW__": "avx512bw", "__AVX512DQ__": "avx512dq",
               "__AVX512VL__": "avx512vl", "__AVX2__": "avx2", "__FMA__": "fma", "__ARM_NEON": "asimd"}


@lru_cache(maxsize=None)
def compiler_native_flags(compiler: str | None) -> frozenset[str]:
    """The CPU features the compiler's -march=native (-mcpu=native) enables, as cpuinfo flag
    names: where /proc/cpuinfo is missing (macOS), what the host compiler detected."""
    if not compiler:
        return frozenset()
    arch = [f for f in native.c_flags() if f.startswith(("-march=", "-mcpu="))]
    try:
        out = subprocess.run([*compiler.split(), *arch, "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(flag for macro, flag in MACRO_FLAGS.items() if f"#define {macro} " in out)


def candidate_variants() -> dict[str, str | None]:
    """Each variant of this architecture -> None if this CPU can run it, else why not."""
    flags = set(machine.cpu_flags()) or set(compiler_native_flags(native.find_c_compiler()))
    names = ["avx512", "avx512-scalef", "avx2-evex", "avx2", "scalar"] if X86 else ["neon", "scalar"]
    is_arm64 = platform.machine().lower() in ("arm64", "aarch64")
    out = {}
    for name in names:
        missing = VARIANT_NEEDS[name] - flags - ({"asimd"} if is_arm64 else set())
        out[name] = f"this CPU lacks {', '.join(sorted(missing))}" if missing else None
    for cc in other_compilers():  # the same code from another compiler is another variant
        out.update({f"{name}@{cc}": why for name, why in list(out.items()) if "@" not in name})
    return out


def other_compilers() -> list[str]:
    """Compilers tried beside the default one (clang beside gcc: their code differs by up to
    10% either way); none when $CC names the compiler."""
    default = native.find_c_compiler()
    if os.environ.get("CC") or not default:
        return []
    return [cc for cc in ("clang",) if shutil.which(cc) and cc not in compiler_name(default)]


def compiler_name(compiler: str) -> str:
    return native.compiler_version(compiler).lower()


def split_variant(variant: str | None) -> tuple[str | None, str | None]:
    """'avx512@clang' -> ('avx512', 'clang'); 'avx512' -> ('avx512', None): the default compiler."""
    if not variant:
        return variant, None
    base, _, cc = variant.partition("@")
    return base, cc or None


def variant_flags(variant: str | None) -> list[str]:
    """-march=native flags plus the variant's (None: MICROGPT_BENCH_SIMD's, if set, else none)."""
    variant = split_variant(variant)[0] or native.forced_simd()
    base = [f for f in native.c_flags() if not f.startswith("-DMG_FORCE_")]
    return base + (VARIANT_FLAGS[variant] if variant else [])


def build_kernel(name: str, variant: str | None = None, extra_flags: tuple[str, ...] = ()) -> tuple[ctypes.CDLL, dict]:
    """Compile (or reuse from the cache) kernels/mg_<name>.c; raise native.BuildError.
    extra_flags: more compiler flags (scripts/phase_costs.py's -DMG_REPEAT_*)."""
    cc = split_variant(variant)[1] or native.find_c_compiler()
    if cc is None:
        raise native.BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    flags = variant_flags(variant) + list(extra_flags)
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
    fn("generate_stamped", ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, _I,
       ctypes.POINTER(ctypes.c_uint64))
    fn("timer_source", ctypes.c_char_p)
    fn("timer_calibrate", None, _D)
    fn("batch_lanes", ctypes.c_int)
    fn("set_batch_min", ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    fn("serve", ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, _I64, _U32, ctypes.c_int32, ctypes.c_int32,
       ctypes.c_double, _I64, _I, _I64)
    info = {"simd": getattr(lib, p + "simd")().decode(), "compiler": cc,
            "compiler_version": native.compiler_version(cc), "flags": " ".join(flags),
            "library": str(path)}
    return lib, info


def load_kernel(name: str, variant: str | None = None) -> tuple[ctypes.CDLL, dict]:
    """build_kernel once per process and per variant/SIMD/compiler setting; raise Unavailable."""
    try:
        key = f"{name}|{variant}|{native.find_c_compiler()}|{native.forced_simd()}|{native.cache_dir()}"
    except native.BuildError as exc:  # a bad MICROGPT_BENCH_SIMD
        raise Unavailable(str(exc)) from exc
    if key not in _BUILDS:
        try:
            _BUILDS[key] = build_kernel(name, variant)
        except native.BuildError as exc:
            _BUILDS[key] = str(exc)
        except OSError as exc:  # the library would not load
            _BUILDS[key] = f"cannot load the built library: {exc}"
    got = _BUILDS[key]
    if isinstance(got, str):
        raise Unavailable(got)
    return got


def plan_file(cls) -> Path:
    """Where the autotuner keeps this kernel's plan for this CPU, sources and compiler."""
    sources = [native.KERNEL_DIR / f"mg_{cls.kernel}.c", *sorted(native.KERNEL_DIR.glob("*.h"))]
    return autotune.cache_file(cls.kernel, sources, native.find_c_compiler() or "?", other_compilers())


def plan_variants(cls, params: Params) -> dict:
    """The autotuner's plan for this kernel on this CPU (cached; see autotune.py)."""

    def make_plan():
        variants = {}
        for name, why_not in candidate_variants().items():
            if why_not is None:
                try:
                    load_kernel(cls.kernel, name)
                except Unavailable as exc:
                    why_not = f"not built: {str(exc)[:300]}"
            variants[name] = why_not or (lambda name=name: cls(params, variant=name))
        return autotune.plan(variants, params, cls.precision)

    got, cached = autotune.cached_plan(plan_file(cls), make_plan)
    return {**got, "from_cache": cached}


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
    scenarios = ("single-stream", "offline", "server")
    samplers = SAMPLERS  # xorshift32, python, argmax (greedy: also any run at temperature 0)

    def __init__(self, params: Params, temperature: float = 0.5, variant: str | None = None):
        """variant: run that compiled variant; None: MICROGPT_BENCH_SIMD's if set, else the
        autotuner's choice per scenario (planned on first use on this CPU, then cached)."""
        super().__init__(params, temperature)
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be finite, got {temperature}")
        if variant is not None and split_variant(variant)[0] not in VARIANT_FLAGS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANT_FLAGS)}")
        self._p = f"mg_{self.kernel}_"
        self._w = np.ascontiguousarray(params.flat("c", np.float32))
        self._runs: dict[str | None, tuple] = {}  # variant -> (lib, build info, handle)
        forced = variant or self._forced_variant()
        self.autotune = None
        if forced is None:
            self.autotune = plan_variants(type(self), params)
            chosen = self.autotune["chosen"]
            if not chosen["single-stream"]:
                raise Unavailable(f"no {self.name} variant passed the gate: {self.autotune['measured']}")
            self.variants = dict(chosen)
        else:
            self.variants = {"single-stream": forced, "offline": forced}
        self.lib, self.build_info, self.handle = self._open(self.variants["single-stream"])
        self._off_lib, _, self._off_handle = self._open(self.variants["offline"])
        self.batch_min = self._tune_batch_min()

    def _tune_batch_min(self) -> int | None:
        """The offline batch policy from the plan's figures: a batch of n live streams costs
        about a full batch's time, n single-stream runs n times the single-stream time, so
        batches with fewer than lanes * offline / single live streams run one by one."""
        variant = self.variants["offline"]
        figures = (self.autotune or {}).get("measured", {}).get(variant)
        lanes = self._off_fn("batch_lanes")()
        if not isinstance(figures, dict) or lanes <= 1:
            return None
        n = min(lanes, math.ceil(lanes * figures["offline"] / figures["single-stream"]))
        self._check(self._off_fn("set_batch_min")(self._off_handle, n), "set_batch_min")
        return n

    @staticmethod
    def _forced_variant() -> str | None:
        try:
            return native.forced_simd()
        except native.BuildError as exc:
            raise Unavailable(str(exc)) from exc

    def _open(self, variant: str) -> tuple:
        if variant not in self._runs:
            lib, info = load_kernel(self.kernel, variant)
            create = getattr(lib, self._p + "create")
            handle = create(native.float_ptr(self._w), ctypes.c_float(self.temperature))
            if not handle:
                raise ValueError(f"{self._p}create refused the weights or the temperature {self.temperature}")
            self._runs[variant] = (lib, info, ctypes.c_void_p(handle))
        return self._runs[variant]

    @classmethod
    def availability(cls) -> str | None:
        """Builds the forced variant, else the widest this CPU runs (the others on first use)."""
        try:
            runnable = [n for n, why in candidate_variants().items() if why is None]
            load_kernel(cls.kernel, cls._forced_variant() or runnable[0])
        except Unavailable as exc:
            return str(exc)
        return None

    @classmethod
    def build_info(cls) -> dict:
        """For `info`: the forced variant, or the cached plan's choice and figures (no planning here)."""
        forced = cls._forced_variant()
        if forced:
            return {"simd": f"{forced} (forced by MICROGPT_BENCH_SIMD)"}
        try:
            plan = json.loads(plan_file(cls).read_text())
            chosen, measured = plan["chosen"], plan["measured"]
        except (OSError, ValueError, KeyError, TypeError):
            return {"simd": "autotuned on first use"}
        figures = ", ".join(f"{n} {m['single-stream']:.0f}/{m['offline']:.0f}" if isinstance(m, dict)
                            else f"{n} {m.split(':')[0]}" for n, m in measured.items())
        busy = autotune.busy_note(plan)
        return {"simd": f"{chosen['single-stream']} single stream, {chosen['offline']} offline; "
                        f"ns/token single/offline: {figures}" + (f" ({busy}: {plan_file(cls)})" if busy else ""),
                "autotune": plan}

    def _fn(self, name):
        return getattr(self.lib, self._p + name)

    def _off_fn(self, name):
        return getattr(self._off_lib, self._p + name)

    def _check(self, code: int, what: str) -> int:
        if code < 0:
            raise NativeError(f"{self._p}{what}: {ERRORS.get(code, 'error')} (code {code})")
        return code

    def info(self) -> dict:
        keep = ("simd", "compiler", "compiler_version", "flags")
        out = {**{k: self.build_info[k] for k in keep}, "variant": dict(self.variants),
               "offline_batch_min": self.batch_min}
        if self.autotune:
            out["autotune"] = {k: self.autotune.get(k) for k in ("chosen", "measured", "planned", "from_cache",
                                                                 "load_average", "cores")}
        return {**out, **self._floor_of_last_run()}

    def _floor_of_last_run(self) -> dict:
        """The last timed run's exact multiply-adds per token and its floor at this machine's
        measured peak (peaks.py): the tokens are generated again, outside any timing."""
        run = getattr(self, "_last_run", None)
        if run is None:
            return {}
        if getattr(self, "_floor", (None,))[0] != run:
            if run[0] == "single-stream":
                _, n, seed = run
                tokens = np.zeros(n, dtype=np.int32)
                self._check(self._fn("generate")(self.handle, n, seed, None, native.int_ptr(tokens)), "generate")
                macs, count = peaks.macs_of_run(tokens), n
            else:
                _, ns, tps, seed = run
                streams = self.generate_offline(ns, tps, seed)
                macs, count = sum(peaks.macs_of_run(row) for row in streams), ns * tps
            self._floor = (run, peaks.floor_info(self.precision, macs, count, peaks.cached_peaks()))
        return dict(self._floor[1])

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
        elif sampler == "argmax":  # greedy whatever the temperature: a temperature-0 handle (no draws)
            rc = self._fn("generate")(self._greedy_handle(), n, 1, None, native.int_ptr(out))
        else:
            rc = self._fn("generate")(self.handle, n, seed, None, native.int_ptr(out))
        self._check(rc, "generate")
        return out.tolist()

    def _greedy_handle(self):
        if self.temperature == 0.0:
            return self.handle
        if getattr(self, "_greedy", None) is None:
            handle = self._fn("create")(native.float_ptr(self._w), ctypes.c_float(0.0))
            if not handle:
                raise NativeError(f"{self._p}create refused temperature 0")
            self._greedy = ctypes.c_void_p(handle)
        return self._greedy

    def generate_stamped(self, n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The timed loop (xorshift32) with a timestamp after each token: (tokens, end_ns),
        end_ns[i] = ns from just before token 0's forward pass to the end of token i."""
        n = _check_count("n_tokens", n_tokens)
        check_seed("xorshift32", seed)
        tokens = np.zeros(n, dtype=np.int32)
        ticks = np.zeros(n, dtype=np.uint64)
        self._check(self._fn("generate_stamped")(self.handle, n, seed, native.int_ptr(tokens),
                                                 ticks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))),
                    "generate_stamped")
        per_ns = self.timer_info()["ticks_per_ns"]
        return tokens, np.rint(ticks.astype(np.float64) / per_ns).astype(np.int64)

    def timer_info(self) -> dict:
        """The stamp's clock: source (rdtsc | cntvct | clock_gettime), resolution_ns,
        overhead_ns (one stamp's cost) and ticks_per_ns (against CLOCK_MONOTONIC)."""
        if getattr(self, "_timer", None) is None:
            cal = np.zeros(3, dtype=np.float64)
            self._fn("timer_calibrate")(native.double_ptr(cal))
            per_ns, overhead_ticks, resolution_ns = cal.tolist()
            self._timer = {"source": self._fn("timer_source")().decode(), "resolution_ns": resolution_ns,
                           "overhead_ns": overhead_ticks / per_ns, "ticks_per_ns": per_ns}
        return dict(self._timer)

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        n = _check_count("n_tokens", n_tokens)
        check_seed("xorshift32", seed)
        self._last_run = ("single-stream", n, seed)
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
        self._check(self._off_fn("generate_offline")(self._off_handle, ns, tps, seed, th, native.int_ptr(out)),
                    "generate_offline")
        return out

    def timed_offline(self, n_streams: int, tokens_per_stream: int, seed: int, threads: int = 1) -> int:
        ns, tps, seed, th = self._offline_args(n_streams, tokens_per_stream, seed, threads)
        self._last_run = ("offline", ns, tps, seed)
        return self._check(self._off_fn("generate_offline")(self._off_handle, ns, tps, seed, th, None),
                           "generate_offline")

    def logits_offline(self, sequences) -> list[np.ndarray]:
        seqs = [_check_tokens(s, f"sequence {i}") for i, s in enumerate(sequences)]
        if not seqs:
            raise ValueError("logits_offline needs at least one sequence")
        toks = np.zeros((len(seqs), BLOCK_SIZE), dtype=np.int32)
        lens = np.array([s.size for s in seqs], dtype=np.int32)
        for i, s in enumerate(seqs):
            toks[i, :s.size] = s
        out = np.zeros((len(seqs), BLOCK_SIZE, VOCAB), dtype=np.float32)
        self._check(self._off_fn("logits_offline")(self._off_handle, len(seqs), native.int_ptr(toks), native.int_ptr(lens),
                                               native.float_ptr(out)), "logits_offline")
        return [out[i, :s.size].astype(np.float64) for i, s in enumerate(seqs)]

    # ----------------------------------------------------------------- server
    def serve_lanes(self) -> int:
        """The lanes a worker owns by default (and the unit they come in): the SoA width."""
        return self._off_fn("batch_lanes")()

    def serve(self, arrivals_s, seeds, n_lanes: int | None = None, threads: int = 1) -> ServeResult:
        """The server scenario's loop in C (mg_driver.h): the schedule, the clock, the shared
        FIFO queue and continuous batching over n_lanes lanes per worker, one worker per thread."""
        unit = self.serve_lanes()
        n_lanes = unit if n_lanes is None else _check_count("n_lanes", n_lanes, 1, 4096)
        if n_lanes % unit:
            raise ValueError(f"n_lanes must be a multiple of {self.name}'s SoA width {unit}, got {n_lanes}")
        th = _check_count("threads", threads, 1, MAX_THREADS)
        arrivals_ns, seeds = check_schedule(arrivals_s, seeds)
        n = len(arrivals_ns)
        latency = np.full(n, -1, dtype=np.int64)
        tokens = np.full((n, BLOCK_SIZE), -1, dtype=np.int32)
        counts = np.zeros(2, dtype=np.int64)
        per_ns = self.timer_info()["ticks_per_ns"]
        self._check(self._off_fn("serve")(self._off_handle, n, arrivals_ns.ctypes.data_as(_I64),
                                          seeds.ctypes.data_as(_U32), n_lanes, th, per_ns,
                                          latency.ctypes.data_as(_I64), native.int_ptr(tokens),
                                          counts.ctypes.data_as(_I64)), "serve")
        names = [first_name(row) for row in tokens]
        wall = float(np.max(arrivals_ns + latency) - arrivals_ns[0]) / 1e9
        return ServeResult(np.asarray(arrivals_s, dtype=np.float64), latency, names, wall,
                           int(counts[0]), int(counts[1]))

    def close(self) -> None:
        for lib, _, handle in getattr(self, "_runs", {}).values():
            if handle.value:
                getattr(lib, self._p + "destroy")(handle)
                handle.value = None
        if getattr(self, "_greedy", None) is not None and self._greedy.value:
            self._fn("destroy")(self._greedy)
            self._greedy = None
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


C_BACKENDS = {cls.name: cls for cls in (CFp32Backend, CQ412Backend)}  # the scripts' --backend choices
