"""Building and loading the native kernels (C with the host compiler, CUDA with nvcc).

Kernels are compiled on first use into a per-user cache, keyed by the sources'
hash, the compiler and its version, the flags and the CPU, then loaded with
ctypes. A failed build raises BuildError carrying the compiler's message, which
backends turn into an "unavailable" row.

Environment:
  CC                        the C compiler (else cc, gcc, clang: the first found)
  MICROGPT_BENCH_CACHE      the cache directory (else $XDG_CACHE_HOME/microgpt-bench)
  MICROGPT_BENCH_SIMD       force a vector path: scalar | avx2 | avx512 | neon
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

KERNEL_DIR = Path(__file__).parent / "kernels"
SIMD_CHOICES = ("scalar", "avx2", "avx512", "neon")


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("MICROGPT_BENCH_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "microgpt-bench")
    path = Path(root) / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_c_compiler() -> str | None:
    env = os.environ.get("CC")
    if env:
        return shutil.which(env.split()[0]) and env
    for cand in ("cc", "gcc", "clang"):
        if shutil.which(cand):
            return cand
    return None


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


@lru_cache(maxsize=None)
def compiler_version(compiler: str) -> str:
    try:
        out = subprocess.run([*compiler.split(), "--version"], capture_output=True, text=True, timeout=30)
        lines = (out.stdout or out.stderr).strip().splitlines() or ["?"]
        release = [ln for ln in lines if "release" in ln]  # nvcc puts its version last
        return (release or lines)[0].strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


@lru_cache(maxsize=None)
def cpu_signature() -> str:
    """CPU model and feature flags: a build for one CPU is never reused on another."""
    text = platform.machine() + platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        text += "\n".join(sorted(set(keep)))
    except OSError:
        try:
            text += subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                   text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def forced_simd() -> str | None:
    value = os.environ.get("MICROGPT_BENCH_SIMD", "").strip().lower()
    if value and value not in SIMD_CHOICES:
        raise BuildError(f"MICROGPT_BENCH_SIMD={value!r}: choose one of {', '.join(SIMD_CHOICES)}")
    return value or None


def c_flags() -> list[str]:
    """-O3 for the host CPU, plus the forced vector path, if any."""
    machine = platform.machine().lower()
    arch = ["-mcpu=native"] if machine in ("arm64", "aarch64") else ["-march=native"]
    if platform.system() == "Darwin" and machine == "arm64":
        arch = ["-mcpu=apple-m1"]  # Apple clang rejects -mcpu=native on older releases
    flags = ["-O3", *arch, "-fPIC", "-shared", "-std=c11", "-Wall", "-Wextra", "-fno-math-errno"]
    simd = forced_simd()
    if simd:
        flags.append(f"-DMG_FORCE_{simd.upper()}")
    return flags


def _cache_key(sources: list[Path], command: list[str]) -> str:
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    for header in sorted(KERNEL_DIR.glob("*.h")):
        digest.update(header.read_bytes())
    digest.update(" ".join(command).encode())
    digest.update(compiler_version(command[0]).encode())
    digest.update(cpu_signature().encode())
    return digest.hexdigest()[:20]


def build(name: str, sources: list[Path], compiler: str, flags: list[str], link: list[str] = ()) -> Path:
    """Compile sources into a shared library in the cache (or reuse the cached one)."""
    suffix = ".dylib" if platform.system() == "Darwin" else ".so"
    command = [*compiler.split(), *flags]
    target = cache_dir() / f"{name}-{_cache_key(sources, command + list(link))}{suffix}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        out = Path(tmp) / target.name
        full = [*command, *map(str, sources), "-o", str(out), *link]
        try:
            proc = subprocess.run(full, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BuildError(f"{' '.join(full)}: {exc}") from exc
        if proc.returncode != 0 or not out.exists():
            msg = (proc.stderr or proc.stdout).strip()
            raise BuildError(f"{compiler} failed (exit {proc.returncode}): {msg[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent build never sees half a file
    return target


def build_c(name: str, sources: list[str]) -> tuple[ctypes.CDLL, dict]:
    """Build kernels/<sources> with the host C compiler; return the library and its build info."""
    cc = find_c_compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    paths = [KERNEL_DIR / s for s in sources]
    flags = c_flags()
    lib_path = build(name, paths, cc, flags, link=["-lm"])
    info = {"compiler": cc, "compiler_version": compiler_version(cc), "flags": " ".join(flags),
            "library": str(lib_path)}
    return ctypes.CDLL(str(lib_path)), info


def float_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def int_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


def double_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
