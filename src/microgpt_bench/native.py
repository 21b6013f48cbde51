"""Building and loading the native kernels (C with the host compiler, CUDA with nvcc).

Kernels are compiled on first use into a per-user cache, keyed by the sources'
hash, the compiler and its version, the flags and the CPU, then loaded with
ctypes. A failed build raises BuildError carrying the compiler's message, which
backends turn into an "unavailable" row.

Environment:
  CC                        the C compiler (else cc, gcc, clang: the first found)
  MICROGPT_BENCH_CACHE      the cache directory (else $XDG_CACHE_HOME/microgpt-bench)
  MICROGPT_BENCH_SIMD       force a vector path: scalar | avx2 | avx512 | neon, or a variant (avx2-evex, avx512-scalef)
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

KERNEL_DIR = Path(__file__).parent / "kernels"
# a forced vector path or compiled variant -> its MG_FORCE_* macro (avx2-evex: the AVX2
# code with the compiler free to use AVX-512VL encodings and 32 registers; avx512-scalef:
# the AVX-512 code with its exp2 on VREDUCEPS and VSCALEFPS, c_native.VARIANT_FLAGS)
SIMD_VARIANTS = {"scalar": "SCALAR", "avx2": "AVX2", "avx512": "AVX512", "neon": "NEON", "avx2-evex": "AVX2",
                 "avx512-scalef": "AVX512"}
SIMD_CHOICES = tuple(SIMD_VARIANTS)


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    """The build cache: the configured one if it can be written, else a private per-user
    directory under the system's temporary directory (a read-only HOME or an
    XDG_CACHE_HOME of /proc must not stop the native rows)."""
    root = os.environ.get("MICROGPT_BENCH_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "microgpt-bench")
    path = Path(root) / "build"
    if _usable_dir(path):
        return path
    fallback = Path(tempfile.gettempdir()) / f"microgpt-bench-cache-{os.getuid()}" / "build"
    if _usable_dir(fallback, private=True):
        return fallback
    raise BuildError(f"no writable build cache: neither {path} nor {fallback} can be written "
                     "(set MICROGPT_BENCH_CACHE to a writable directory)")


def _usable_dir(path: Path, private: bool = False) -> bool:
    """Create path if needed; True if it is a writable directory. A private one (in a
    shared temporary directory) must be ours, not a symlink, and closed to others."""
    try:
        if private:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(path.parent)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                return False
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-")
        probe.close()
        return True
    except OSError:
        return False


def find_c_compiler() -> str | None:
    words = os.environ.get("CC", "").split()
    if words:  # a blank $CC counts as unset
        return " ".join(words) if shutil.which(words[0]) else None
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
        flags.append(f"-DMG_FORCE_{SIMD_VARIANTS[simd]}")
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


def build(name: str, sources: list[Path], compiler: str, flags: list[str], link: list[str] = (),
          suffix: str | None = None) -> Path:
    """Compile sources into a shared library (or `suffix`: another artefact) in the cache, or reuse it."""
    suffix = suffix or (".dylib" if platform.system() == "Darwin" else ".so")
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


def build_and_load(name: str, sources: list[Path], compiler: str, flags: list[str],
                   link: list[str] = ()) -> tuple[ctypes.CDLL, Path]:
    """build() then load with ctypes. A cached library that will not load (truncated,
    or corrupt) is deleted and rebuilt once, so a bad cache entry never sticks."""
    path = build(name, sources, compiler, flags, link)
    try:
        return ctypes.CDLL(str(path)), path
    except OSError:
        try:
            path.unlink()
        except OSError:
            pass
    path = build(name, sources, compiler, flags, link)
    try:
        return ctypes.CDLL(str(path)), path
    except OSError as exc:
        raise BuildError(f"the freshly built {path.name} does not load: {exc}") from exc


def build_c(name: str, sources: list[str]) -> tuple[ctypes.CDLL, dict]:
    """Build kernels/<sources> with the host C compiler; return the library and its build info."""
    cc = find_c_compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    paths = [KERNEL_DIR / s for s in sources]
    flags = c_flags()
    lib, lib_path = build_and_load(name, paths, cc, flags, link=["-lm"])
    info = {"compiler": cc, "compiler_version": compiler_version(cc), "flags": " ".join(flags),
            "library": str(lib_path)}
    return lib, info


class ProbeError(RuntimeError):
    """A native probe run in a subprocess crashed, hung or printed no result."""


def run_probe(target: str, timeout: float = 60.0, **kwargs):
    """Call target ("package.module:function") with kwargs in a fresh Python process and
    return its JSON-able result. Native code (a library built with a sanitizer, a probe
    that crashes) then cannot abort the tool; the caller falls back on ProbeError."""
    from .procs import run_isolated

    module, _, func = target.partition(":")
    code = ("import json, sys, importlib; "
            f"f = getattr(importlib.import_module({module!r}), {func!r}); "
            "r = f(**json.loads(sys.argv[1])); print(); print(json.dumps(r))")
    done = run_isolated([sys.executable, "-c", code, json.dumps(kwargs)], timeout)
    if done.returncode != 0:
        raise ProbeError(f"{target} probe {done.how()}: {done.last_lines(limit=200)}")
    try:
        return json.loads(done.stdout_tail.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{target} probe printed no result ({exc})") from exc


def float_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def int_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


def double_ptr(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
