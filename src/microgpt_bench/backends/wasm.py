"""wasm-wasmtime: the fp32 kernel compiled to WebAssembly (wasm32 + SIMD128), run by wasmtime.

kernels/mg_wasm.c is built on first use with clang's wasm32 target and lld's
wasm-ld (freestanding: no libc, no imports), into native.cache_dir() keyed by
the source's hash, the compiler and the flags. The module holds the whole
generation loop (forward pass, xorshift32 sampler, checksum), as c-fp32's does;
the gate reads the logits out of the module's linear memory. The same .wasm
runs in headless Chromium (backends/browser.py).

SIMD128 has no fused multiply-add, so the module computes mg_common.h's
canonical order with every fma unfused: its logits differ from c-fp32's in the
last bits (BENCHMARKS.md gives the max difference and whether names agree).
Offline runs the streams one after another on one thread (plain wasm has no
threads here); stream i is the single stream seeded with samplers.stream_seed(seed, i).
Temperature 0 (or the argmax sampler) decodes greedily: the lowest index of the max logit.

Environment: MICROGPT_BENCH_WASM_CC, the clang to use (else clang, clang-NN).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache

import numpy as np

from .. import native
from ..model import VOCAB, Params
from ..samplers import MASK32, SAMPLERS, check_seed, python_uniforms
from .base import Backend, Unavailable
from .c_native import ERRORS, NativeError, _check_count, _check_tokens

SOURCE = native.KERNEL_DIR / "mg_wasm.c"
WASM_ABI = 1
# what the module uses beyond wasm MVP (recorded in every row's info)
WASM_FEATURES = ("simd128", "bulk-memory")
WASM_FLAGS = ["--target=wasm32", "-msimd128", "-mbulk-memory", "-O3", "-std=c11", "-Wall", "-Wextra",
              "-nostdlib", "-ffreestanding", "-fuse-ld=lld", "-Wl,--no-entry", "-Wl,--strip-all"]
INSTALL_HINT = "install clang and lld (Debian: apt-get install clang lld)"

# per process: the built module's path and info, or why it cannot be built
_BUILD: dict[str, tuple[str, dict] | str] = {}


def find_clang() -> str | None:
    env = os.environ.get("MICROGPT_BENCH_WASM_CC")
    if env:
        return shutil.which(env)
    for cand in ("clang", *(f"clang-{v}" for v in range(22, 13, -1))):
        if shutil.which(cand):
            return shutil.which(cand)
    return None


@lru_cache(maxsize=None)
def _has_wasm32_target(clang: str) -> bool:
    try:
        out = subprocess.run([clang, "--print-targets"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[:1] == ["wasm32"] for line in out.splitlines())


def _find_wasm_ld(clang: str) -> str | None:
    """wasm-ld on PATH, or beside clang (Debian's versioned llvm-NN/bin)."""
    for cand in ("wasm-ld", *(f"wasm-ld-{v}" for v in range(22, 13, -1))):
        if shutil.which(cand):
            return shutil.which(cand)
    beside = os.path.join(os.path.dirname(os.path.realpath(clang)), "wasm-ld")
    return beside if os.path.exists(beside) else None


def _valid_module(path) -> bool:
    """The wasm magic and version, and (where wasmtime is installed) a full validation."""
    data = path.read_bytes()
    if data[:8] != b"\0asm\x01\0\0\0":
        return False
    try:
        import wasmtime
    except ImportError:
        return True
    try:
        wasmtime.Module.validate(wasmtime.Engine(), data)
    except Exception:  # wasmtime.WasmtimeError: the module does not validate
        return False
    return True


def build_module() -> tuple[str, dict]:
    """Compile mg_wasm.c (or reuse the cached .wasm); raise native.BuildError saying what is missing."""
    clang = find_clang()
    if clang is None:
        raise native.BuildError(f"no clang found for the wasm32 target; {INSTALL_HINT}")
    if not _has_wasm32_target(clang):
        raise native.BuildError(f"{clang} ({native.compiler_version(clang)}) has no wasm32 target; {INSTALL_HINT}")
    ld = _find_wasm_ld(clang)
    if ld is None:
        raise native.BuildError(f"no wasm-ld (the LLVM linker for wasm, package lld) found; {INSTALL_HINT}")
    flags = [*WASM_FLAGS, f"-B{os.path.dirname(ld)}"]
    path = native.build("mg_wasm", [SOURCE], clang, flags, suffix=".wasm")
    if not _valid_module(path):  # a truncated or corrupt cache entry: rebuilt once, never kept
        path.unlink(missing_ok=True)
        path = native.build("mg_wasm", [SOURCE], clang, flags, suffix=".wasm")
        if not _valid_module(path):
            raise native.BuildError(f"the freshly built {path.name} is not a valid wasm module")
    return str(path), {"compiler": clang, "compiler_version": native.compiler_version(clang),
                       "linker": ld, "flags": " ".join(WASM_FLAGS), "wasm_features": list(WASM_FEATURES),
                       "module": str(path)}


def load_module() -> tuple[str, dict]:
    """build_module once per process; raise Unavailable with the reason."""
    key = f"{find_clang()}|{native.cache_dir()}"
    if key not in _BUILD:
        try:
            _BUILD[key] = build_module()
        except native.BuildError as exc:
            _BUILD[key] = str(exc)
    got = _BUILD[key]
    if isinstance(got, str):
        raise Unavailable(got)
    return got


def module_availability() -> str | None:
    try:
        load_module()
    except Unavailable as exc:
        return str(exc)
    return None


def module_build_info() -> dict:
    """What `microgpt-bench info` shows for the wasm rows: the compiler and the wasm features."""
    info = load_module()[1]
    return {"compiler": info["compiler_version"], "wasm_features": ", ".join(info["wasm_features"])}


def as_i32(value: int) -> int:
    """A uint32 (seed) as the i32 that wasm passes it as."""
    return value - (1 << 32) if value >= 1 << 31 else value


def check_offline_args(n_streams, tokens_per_stream, seed, threads) -> tuple[int, int, int]:
    """The offline arguments as c-fp32 checks them; the module runs on one thread, whatever `threads`."""
    ns = _check_count("n_streams", n_streams, 1, 2**31 - 1)
    tps = _check_count("tokens_per_stream", tokens_per_stream, 1, 2**31 - 1)
    _check_count("threads", threads, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MASK32:
        raise ValueError(f"the offline base seed must be in 0..{MASK32}, got {seed!r}")
    return ns, tps, int(seed)


def check_code(value: float, what: str) -> int:
    """A module entry point's result: a checksum, or a negative error code."""
    if value < 0:
        code = int(value)
        raise NativeError(f"{what}: {ERRORS.get(code, 'error')} (code {code})")
    return int(value)


class WasmtimeBackend(Backend):
    name = "wasm-wasmtime"
    description = "the fp32 kernel as WebAssembly (wasm32 + SIMD128, no FMA), run by wasmtime; whole loop in wasm"
    precision = "fp32"
    scenarios = ("single-stream", "offline")
    samplers = SAMPLERS
    max_threads = 1   # offline runs its streams one after another (no wasm threads, one JS thread)

    def __init__(self, params: Params, temperature: float = 0.5):
        super().__init__(params, temperature)
        wasmtime = _import_wasmtime()
        self.module_path, self._module_info = load_module()
        config = wasmtime.Config()
        config.cranelift_opt_level = "speed"
        config.wasm_simd = True
        self.store = wasmtime.Store(wasmtime.Engine(config))
        module = wasmtime.Module.from_file(self.store.engine, self.module_path)
        exports = wasmtime.Instance(self.store, module, []).exports(self.store)
        self.memory = exports["memory"]
        self._fns = {name: exports[name] for name in ("mg_abi", "mg_weights", "mg_init", "mg_scratch",
                                                       "mg_logits", "mg_generate", "mg_generate_offline")}
        if self._call("mg_abi") != WASM_ABI:
            raise Unavailable(f"{self.module_path}: ABI {self._call('mg_abi')}, expected {WASM_ABI}")
        self._write(self._call("mg_weights"), params.flat("c", np.float32))
        if self._call("mg_init", self.temperature) != 0:
            raise ValueError(f"the module refused the weights or the temperature {temperature}")

    @classmethod
    def availability(cls) -> str | None:
        try:
            _import_wasmtime()
        except Unavailable as exc:
            return str(exc)
        return module_availability()

    @classmethod
    def build_info(cls) -> dict:
        return module_build_info()

    def info(self) -> dict:
        from importlib.metadata import version
        return {**{k: self._module_info[k] for k in ("compiler_version", "flags", "wasm_features")},
                "runtime": "wasmtime", "wasmtime_version": version("wasmtime")}

    # ------------------------------------------------------------ memory, calls
    def _call(self, name, *args):
        return self._fns[name](self.store, *args)

    def _scratch(self, nbytes: int) -> int:
        ptr = self._call("mg_scratch", int(nbytes))
        if not ptr:
            raise MemoryError(f"the wasm module could not grow its memory to {nbytes} bytes")
        return ptr

    def _write(self, ptr: int, array: np.ndarray) -> None:
        self.memory.write(self.store, np.ascontiguousarray(array).tobytes(), ptr)

    def _read(self, ptr: int, count: int, dtype) -> np.ndarray:
        size = count * np.dtype(dtype).itemsize
        return np.frombuffer(bytes(self.memory.read(self.store, ptr, ptr + size)), dtype=dtype).copy()

    # ----------------------------------------------------------- single stream
    def logits(self, tokens) -> np.ndarray:
        arr = _check_tokens(tokens)
        ptr = self._scratch(64 + arr.size * VOCAB * 4)
        self._write(ptr, arr)
        check_code(self._call("mg_logits", ptr, arr.size, ptr + 64), "mg_logits")
        return self._read(ptr + 64, arr.size * VOCAB, np.float32).reshape(arr.size, VOCAB).astype(np.float64)

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        n = _check_count("n_tokens", n_tokens, 1, 2**31 - 1)
        check_seed(sampler, seed)
        uniforms = np.asarray(python_uniforms(seed, n), np.float64) if sampler == "python" else None
        ptr = self._scratch(n * (4 + (8 if uniforms is not None else 0)))
        out = ptr + 8 * n if uniforms is not None else ptr
        if uniforms is not None:
            self._write(ptr, uniforms)
        # greedy (argmax, or temperature 0 in the module): the seed plays no part
        xs_seed = as_i32(seed) if sampler == "xorshift32" else 0
        check_code(self._call("mg_generate", n, xs_seed, ptr if uniforms is not None else 0, out,
                              int(sampler == "argmax")), "mg_generate")
        return self._read(out, n, np.int32).tolist()

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        n = _check_count("n_tokens", n_tokens, 1, 2**31 - 1)
        check_seed("xorshift32", seed)
        return check_code(self._call("mg_generate", n, as_i32(seed), 0, 0, 0), "mg_generate")

    # ----------------------------------------------------------------- offline
    def generate_offline(self, n_streams, tokens_per_stream, seed, threads=1) -> np.ndarray:
        ns, tps, seed = check_offline_args(n_streams, tokens_per_stream, seed, threads)
        ptr = self._scratch(ns * tps * 4)
        check_code(self._call("mg_generate_offline", ns, tps, as_i32(seed), ptr), "mg_generate_offline")
        return self._read(ptr, ns * tps, np.int32).reshape(ns, tps)

    def timed_offline(self, n_streams, tokens_per_stream, seed, threads=1) -> int:
        ns, tps, seed = check_offline_args(n_streams, tokens_per_stream, seed, threads)
        return check_code(self._call("mg_generate_offline", ns, tps, as_i32(seed), 0), "mg_generate_offline")

    def close(self) -> None:
        self._fns, self.memory, self.store = {}, None, None


def _import_wasmtime():
    try:
        import wasmtime
    except ImportError as exc:
        raise Unavailable(f"the wasmtime Python package is not installed ({exc}); "
                          "pip install 'microgpt-bench[browser]' (or: pip install wasmtime)") from exc
    return wasmtime
