"""CUDA backends: the same forward pass and xorshift32 sampler four ways on an NVIDIA GPU.

  cuda-naive       one kernel launch per operation (14 a token); the sampled token goes
                   to the host and the next (token, position) comes back every step
  cuda-graph       the same 14 kernels captured once in a CUDA graph, replayed per token;
                   the loop state (token, position, xorshift state) stays on the device
  cuda-persistent  one launch of one warp runs the whole timed loop: per-lane weights in
                   registers, KV cache in shared memory, shuffles and votes, a parallel
                   prefix-sum sampler
  cuda-offline     the persistent warp's code, one warp per independent stream, a grid
                   that fills every SM; stream i seeded with samplers.stream_seed(seed, i)

The kernels (kernels/mg_cuda.cu) are compiled on first use with nvcc for the present
GPU's compute capability, cudart linked statically, into native.cache_dir(), and loaded
with ctypes. availability() never builds: it looks for nvcc and asks the driver, in a
child process with a timeout, whether a GPU is there.

Environment: MICROGPT_BENCH_CUDA_ARCH forces the target (e.g. 90 or sm_90).
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
from functools import lru_cache
from typing import ClassVar

import numpy as np

from .. import native
from ..model import BLOCK_SIZE, VOCAB, Params
from ..samplers import MASK32, check_seed
from .base import Backend, Unavailable

SOURCES = ["mg_cuda.cu"]
NVCC_BASE_FLAGS = ["-O3", "-fmad=false", "-shared", "-Xcompiler", "-fPIC", "-cudart", "static"]
PROBE_TIMEOUT_S = 30

MG_OK, MG_EINVAL, MG_ENOMEM, MG_ECUDA, MG_ENODEV = range(5)
VARIANT_NAIVE, VARIANT_GRAPH, VARIANT_PERSISTENT, VARIANT_OFFLINE = range(4)


class CudaError(RuntimeError):
    """A CUDA runtime failure inside the kernels' library."""


# ------------------------------------------------------------------ cheap probing

_PROBE = r"""
import ctypes, json, sys
def say(**kw):
    print(json.dumps(kw)); sys.exit(0)
try:
    cu = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    say(error="no NVIDIA driver: libcuda.so.1 cannot be loaded (%s)" % exc)
rc = cu.cuInit(0)
if rc != 0:
    say(error="no usable NVIDIA GPU: cuInit failed with CUDA driver error %d" % rc)
n = ctypes.c_int(0)
rc = cu.cuDeviceGetCount(ctypes.byref(n))
if rc != 0 or n.value == 0:
    say(error="no CUDA device (cuDeviceGetCount: error %d, %d devices)" % (rc, n.value))
dev = ctypes.c_int(0)
cu.cuDeviceGet(ctypes.byref(dev), 0)
major, minor, ver = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
cu.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
cu.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
cu.cuDriverGetVersion(ctypes.byref(ver))
name = ctypes.create_string_buffer(256)
cu.cuDeviceGetName(name, 256, dev)
say(name=name.value.decode(errors="replace"), cc="%d.%d" % (major.value, minor.value),
    driver_cuda=ver.value, count=n.value)
"""


@lru_cache(maxsize=None)
def probe_gpu() -> dict:
    """{'name', 'cc', 'driver_cuda', 'count'} of device 0, or {'error': why not}. Runs once."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"the GPU probe (cuInit) did not answer within {PROBE_TIMEOUT_S} s"}
    except OSError as exc:
        return {"error": f"the GPU probe could not run: {exc}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"the GPU probe failed: {(proc.stderr or proc.stdout).strip()[-300:]}"}


@lru_cache(maxsize=None)
def nvcc_info() -> dict:
    """nvcc's path, release (e.g. 13.0) and the virtual architectures it supports."""
    nvcc = native.find_nvcc()
    if nvcc is None:
        return {"error": "nvcc not found (install the CUDA toolkit, or set CUDA_HOME)"}
    try:
        ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
        archs = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{nvcc} does not run: {exc}"}
    m = re.search(r"release (\d+)\.(\d+)", ver)
    return {"nvcc": nvcc, "release": f"{m.group(1)}.{m.group(2)}" if m else "?",
            "release_num": int(m.group(1)) * 1000 + int(m.group(2)) * 10 if m else 0,
            "archs": sorted({int(a) for a in re.findall(r"compute_(\d+)", archs)}),
            "version_line": next((ln for ln in ver.splitlines() if "release" in ln), "?").strip()}


def cuda_availability() -> str | None:
    """None when the CUDA backends can run here, else why not. No build, no hang."""
    tool = nvcc_info()
    if "error" in tool:
        return tool["error"]
    gpu = probe_gpu()
    if "error" in gpu:
        return gpu["error"]
    drv = gpu.get("driver_cuda", 0)
    if tool["release_num"] and drv // 1000 < tool["release_num"] // 1000:
        return (f"the NVIDIA driver supports CUDA {drv // 1000}.{drv % 1000 // 10}, older than "
                f"nvcc's CUDA {tool['release']}: update the driver or use an older toolkit")
    try:
        gencode_flags()
    except Unavailable as exc:
        return str(exc)
    return None


def gencode_flags() -> list[str]:
    """Code for the present GPU: its own SASS plus PTX, or PTX for the newest older target."""
    forced = os.environ.get("MICROGPT_BENCH_CUDA_ARCH", "").strip().lower().replace("sm_", "")
    archs = nvcc_info().get("archs") or []
    if forced:
        if not forced.isdigit():
            raise Unavailable(f"MICROGPT_BENCH_CUDA_ARCH={forced!r}: expected e.g. 90 or sm_90")
        cc = int(forced)
    else:
        text = probe_gpu().get("cc")
        if not text:  # fallback list: Ampere and Hopper machine code, PTX for newer parts
            return ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
        major, minor = text.split(".")
        cc = int(major) * 10 + int(minor)
    if cc in archs:
        return ["-gencode", f"arch=compute_{cc},code=[sm_{cc},compute_{cc}]"]
    older = [a for a in archs if a <= cc]
    if not older:
        raise Unavailable(f"nvcc {nvcc_info().get('release')} cannot build for compute capability "
                          f"{cc / 10:.1f} (its oldest target is {min(archs) / 10 if archs else '?'})")
    return ["-gencode", f"arch=compute_{older[-1]},code=compute_{older[-1]}"]  # JIT by the driver


def nvcc_flags() -> list[str]:
    return [*NVCC_BASE_FLAGS, *gencode_flags()]


_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL, dict]:
    tool = nvcc_info()
    flags = nvcc_flags()
    path = native.build("mg_cuda", [native.KERNEL_DIR / s for s in SOURCES], tool["nvcc"], flags)
    lib = ctypes.CDLL(str(path))
    c_int, c_ll, c_u32, vp = ctypes.c_int, ctypes.c_longlong, ctypes.c_uint32, ctypes.c_void_p
    f32p, i32p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
    u64p, szp = ctypes.POINTER(ctypes.c_ulonglong), ctypes.POINTER(ctypes.c_size_t)
    sigs = {
        "mg_last_error": ([], ctypes.c_char_p),
        "mg_device_count": ([ctypes.POINTER(c_int)], c_int),
        "mg_device_info": ([ctypes.c_char_p, c_int], c_int),
        "mg_create": ([f32p, ctypes.c_float, ctypes.POINTER(vp)], c_int),
        "mg_destroy": ([vp], None),
        "mg_offline_capacity": ([vp, ctypes.POINTER(c_int)], c_int),
        "mg_mem_info": ([szp, szp], c_int),
        "mg_logits": ([vp, c_int, i32p, c_int, f32p], c_int),
        "mg_generate": ([vp, c_int, c_ll, c_u32, i32p, u64p], c_int),
        "mg_generate_offline": ([vp, c_int, c_ll, c_u32, c_int, i32p, u64p], c_int),
        "mg_logits_offline": ([vp, c_int, i32p, i32p, f32p], c_int),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    info = {"compiler": tool["nvcc"], "compiler_version": tool["version_line"],
            "flags": " ".join(flags), "library": str(path)}
    return lib, info


def load_library() -> tuple[ctypes.CDLL, dict]:
    with _LOCK:
        return _load()


def _check(lib, rc: int) -> None:
    if rc == MG_OK:
        return
    msg = (lib.mg_last_error() or b"").decode(errors="replace")
    if rc == MG_EINVAL:
        raise ValueError(msg)
    if rc == MG_ENOMEM:
        raise MemoryError(msg)
    if rc == MG_ENODEV:
        raise Unavailable(msg)
    raise CudaError(msg)


def device_info(lib) -> dict:
    buf = ctypes.create_string_buffer(512)
    _check(lib, lib.mg_device_info(buf, 512))
    name, cc, sms, drv, rt, clk, mclk, l2, smem = buf.value.decode(errors="replace").split("|")
    ver = lambda v: f"{int(v) // 1000}.{int(v) % 1000 // 10}"  # noqa: E731
    return {"device": name, "compute_capability": cc, "sms": int(sms), "driver_cuda": ver(drv),
            "runtime_cuda": ver(rt), "max_sm_clock_mhz": int(clk) // 1000,
            "max_mem_clock_mhz": int(mclk) // 1000, "l2_bytes": int(l2), "smem_per_block_optin": int(smem)}


def query_clocks() -> dict:
    """Driver version and current/max clocks from nvidia-smi, when it is there (else {})."""
    fields = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    vals = [v.strip() for v in out.splitlines()[0].split(",")] if out else []
    return dict(zip(["driver_version", "sm_clock_mhz", "max_sm_clock_mhz_smi", "mem_clock_mhz", "power_w",
                     "power_limit_w"], vals))


# ----------------------------------------------------------------------- backends


def _i32(a) -> ctypes.POINTER(ctypes.c_int32):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


def _f32(a) -> ctypes.POINTER(ctypes.c_float):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _check_tokens(tokens) -> np.ndarray:
    arr = np.asarray(list(tokens), dtype=np.int64)
    if not 1 <= arr.size <= BLOCK_SIZE:
        raise ValueError(f"a probe sequence holds 1..{BLOCK_SIZE} tokens, got {arr.size}")
    if arr.min() < 0 or arr.max() >= VOCAB:
        raise ValueError(f"tokens must be in 0..{VOCAB - 1}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _check_count(what: str, n) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


class _CudaBackend(Backend):
    precision = "fp32"
    samplers = ("xorshift32",)
    variant: ClassVar[int] = VARIANT_PERSISTENT
    device = "cuda"

    @classmethod
    def availability(cls) -> str | None:
        return cuda_availability()

    def __init__(self, params: Params, temperature: float = 0.5):
        super().__init__(params, temperature)
        self._h = None
        reason = cuda_availability()
        if reason:
            raise Unavailable(reason)
        try:
            self._lib, self._build = load_library()
        except native.BuildError as exc:
            raise Unavailable(f"the CUDA kernels did not build: {exc}") from exc
        weights = np.ascontiguousarray(params.flat("c", np.float32))
        handle = ctypes.c_void_p()
        _check(self._lib, self._lib.mg_create(_f32(weights), ctypes.c_float(self.temperature),
                                              ctypes.byref(handle)))
        self._h = handle

    def _handle(self):
        if self._h is None:
            raise ValueError(f"{self.name}: the backend is closed")
        return self._h

    def info(self) -> dict:
        out = {**self._build, **device_info(self._lib), **query_clocks(), "variant": self.name}
        if self.variant == VARIANT_OFFLINE:
            out["resident_warps"] = self.offline_capacity()
        return out

    def logits(self, tokens: list[int]) -> np.ndarray:
        toks = _check_tokens(tokens)
        out = np.empty((toks.size, VOCAB), dtype=np.float32)
        _check(self._lib, self._lib.mg_logits(self._handle(), self.variant, _i32(toks), toks.size, _f32(out)))
        return out.astype(np.float64)

    def _seed(self, sampler: str, seed: int) -> int:
        if sampler != "xorshift32":
            raise ValueError(f"{self.name} samples with xorshift32 only, not {sampler!r}")
        return check_seed(sampler, seed)

    def _run(self, n_tokens: int, seed: int, out) -> int:
        total = ctypes.c_ulonglong(0)
        ptr = _i32(out) if out is not None else None
        if self.variant == VARIANT_OFFLINE:  # one stream, seeded with seed itself
            rc = self._lib.mg_generate_offline(self._handle(), 1, n_tokens, seed, 1, ptr, ctypes.byref(total))
        else:
            rc = self._lib.mg_generate(self._handle(), self.variant, n_tokens, seed, ptr, ctypes.byref(total))
        _check(self._lib, rc)
        return int(total.value)

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        n = _check_count("n_tokens", n_tokens)
        seed = self._seed(sampler, seed)
        out = np.empty(n, dtype=np.int32)
        self._run(n, seed, out)
        return out.tolist()

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        return self._run(_check_count("n_tokens", n_tokens), self._seed("xorshift32", seed), None)

    def close(self) -> None:
        if getattr(self, "_h", None) is not None:
            self._lib.mg_destroy(self._h)
            self._h = None


class CudaNaiveBackend(_CudaBackend):
    name = "cuda-naive"
    description = "CUDA, one kernel launch per operation, token round trip to the host every step"
    variant = VARIANT_NAIVE


class CudaGraphBackend(_CudaBackend):
    name = "cuda-graph"
    description = "CUDA, the per-token kernel sequence captured once in a CUDA graph, replayed per token"
    variant = VARIANT_GRAPH


class CudaPersistentBackend(_CudaBackend):
    name = "cuda-persistent"
    description = "CUDA, one launch of one warp for the whole loop: registers, shuffles, prefix-sum sampler"
    variant = VARIANT_PERSISTENT


class CudaOfflineBackend(_CudaBackend):
    name = "cuda-offline"
    description = "CUDA, one warp per independent stream, a grid that fills every SM"
    variant = VARIANT_OFFLINE
    scenarios = ("offline",)

    def offline_capacity(self) -> int:
        """Streams that run at once (resident warps with the grid filling every SM)."""
        n = ctypes.c_int(0)
        _check(self._lib, self._lib.mg_offline_capacity(self._handle(), ctypes.byref(n)))
        return int(n.value)

    def _offline(self, n_streams, tokens_per_stream, seed, want_tokens: bool):
        n = _check_count("n_streams", n_streams)
        tps = _check_count("tokens_per_stream", tokens_per_stream)
        if n > 2**31 - 1:
            raise ValueError(f"n_streams must be < 2**31, got {n}")
        out = None
        if want_tokens:
            need = n * tps * 4
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            _check(self._lib, self._lib.mg_mem_info(ctypes.byref(free), ctypes.byref(total)))
            if need > free.value:
                raise MemoryError(f"{n} streams x {tps} tokens need {need / 2**30:.2f} GiB on the GPU; "
                                  f"{free.value / 2**30:.2f} GiB free")
            out = np.empty((n, tps), dtype=np.int32)
        total = ctypes.c_ulonglong(0)
        rc = self._lib.mg_generate_offline(self._handle(), n, tps, int(seed) & MASK32, 0,
                                           _i32(out) if out is not None else None, ctypes.byref(total))
        _check(self._lib, rc)
        return out, int(total.value)

    def generate_offline(self, n_streams: int, tokens_per_stream: int, seed: int,
                         threads: int = 1) -> np.ndarray:
        return self._offline(n_streams, tokens_per_stream, seed, True)[0]

    def timed_offline(self, n_streams: int, tokens_per_stream: int, seed: int, threads: int = 1) -> int:
        return self._offline(n_streams, tokens_per_stream, seed, False)[1]

    def logits_offline(self, sequences: list[list[int]]) -> list[np.ndarray]:
        seqs = [_check_tokens(s) for s in sequences]
        if not seqs:
            raise ValueError("no sequences")
        toks = np.zeros((len(seqs), BLOCK_SIZE), dtype=np.int32)
        lens = np.array([s.size for s in seqs], dtype=np.int32)
        for i, s in enumerate(seqs):
            toks[i, :s.size] = s
        out = np.empty((len(seqs), BLOCK_SIZE, VOCAB), dtype=np.float32)
        _check(self._lib, self._lib.mg_logits_offline(self._handle(), len(seqs), _i32(toks), _i32(lens), _f32(out)))
        return [out[i, :s.size].astype(np.float64) for i, s in enumerate(seqs)]
