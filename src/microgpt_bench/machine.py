"""What machine the figures were measured on, and how fast its core clock runs."""
from __future__ import annotations

import ctypes
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import __version__, native

ADDS_PER_ITERATION = 16


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out
    return platform.processor() or platform.machine()


def cpu_family_model() -> str | None:
    """'family 6 model 167' from /proc/cpuinfo (x86), else None: it tells apart CPUs a VM names alike."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return None
    family, model = fields.get("cpu family"), fields.get("model")
    return f"family {family} model {model}" if family and model else None


def default_label() -> str:
    """The machine as reports name it by default: the CPU model and core count, not the host name
    (a VM's host name says nothing). A model name without digits (a VM's generic 'Intel Xeon
    Processor') gets its family and model numbers."""
    name = " ".join(cpu_model().replace("(R)", "").replace("(TM)", "").split())
    if not any(ch.isdigit() for ch in name):
        fm = cpu_family_model()
        name += f" ({fm})" if fm else ""
    cores = os.cpu_count() or 1
    return f"{name}, {cores} core{'s' if cores != 1 else ''}"


def _run(cmd: list[str], timeout: float = 10) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return proc.stdout.strip() if proc.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def simd_capabilities() -> list[str]:
    """The vector extensions this CPU reports that our kernels can use."""
    flags = set(cpu_flags())
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "asimd", "asimddp"]
    found = [f for f in wanted if f in flags]
    if platform.machine().lower() in ("arm64", "aarch64") and "asimd" not in found:
        found.append("neon")
    return found


def estimate_clock_ghz(seconds: float = 0.05, trials: int = 5) -> dict:
    """Estimate the core clock from a dependent integer add chain (kernels/clock.c).

    The probe runs in a subprocess (native.run_probe): a library that aborts on load
    (CC='gcc -fsanitize=address') or crashes costs the estimate, never the tool.
    Falls back to /proc/cpuinfo's "cpu MHz" (the nominal, not the boosted clock)
    when no C compiler is available or the probe fails.
    """
    try:
        return native.run_probe("microgpt_bench.machine:clock_probe", timeout=120,
                                seconds=seconds, trials=trials)
    except native.ProbeError as exc:
        return _clock_from_cpuinfo(f"no add-chain estimate ({str(exc)[:200]})")


def clock_probe(seconds: float, trials: int) -> dict:
    """The add-chain estimate itself, in this process (estimate_clock_ghz runs it apart).
    The best of a few trials is taken: interruptions only ever make a trial slower."""
    try:
        lib, _ = native.build_c("clock", ["clock.c"])
    except native.BuildError as exc:
        return _clock_from_cpuinfo(f"no add-chain estimate ({str(exc)[:200]})")
    chain = lib.mg_add_chain
    chain.argtypes, chain.restype = [ctypes.c_uint64], ctypes.c_uint64
    iterations, best = 100_000, 0.0
    chain(iterations)
    while True:  # calibrate to about `seconds` per trial
        t0 = time.perf_counter()
        chain(iterations)
        elapsed = time.perf_counter() - t0
        if elapsed > seconds / 4:
            break
        iterations *= 4
    iterations = int(iterations * seconds / elapsed)
    for _ in range(trials):
        t0 = time.perf_counter()
        chain(iterations)
        best = max(best, iterations * ADDS_PER_ITERATION / (time.perf_counter() - t0) / 1e9)
    return {"ghz": round(best, 3), "method": "dependent integer add chain, best of "
            f"{trials} x {seconds * 1000:.0f} ms (one add per cycle)"}


def _clock_from_cpuinfo(why: str) -> dict:
    try:
        mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())]
        if mhz:
            return {"ghz": round(max(mhz) / 1000, 3), "method": f"/proc/cpuinfo cpu MHz; {why}"}
    except OSError:
        pass
    return {"ghz": None, "method": f"unknown; {why}"}


def blas_info() -> str:
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        return "unknown"


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not shutil.which("git"):
        return None
    out = _run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"])
    if out and _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]):
        out += "-dirty"
    return out or None


def gpu_info() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                "--format=csv,noheader,nounits"])
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append({"name": parts[0], "driver": parts[1], "max_sm_mhz": parts[2], "power_limit_w": parts[3]})
    return gpus


def compilers() -> dict:
    cc, nvcc = native.find_c_compiler(), native.find_nvcc()
    return {"cc": cc and {"command": cc, "version": native.compiler_version(cc)},
            "nvcc": nvcc and {"command": nvcc, "version": native.compiler_version(nvcc).strip()}}


def machine_info(label: str | None = None, clock: dict | None = None) -> dict:
    import numpy as np

    return {
        "label": label or default_label(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "simd": simd_capabilities(),
        "clock": clock or estimate_clock_ghz(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "compilers": compilers(),
        "gpus": gpu_info(),
        "tool_version": __version__,
        "git_commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
