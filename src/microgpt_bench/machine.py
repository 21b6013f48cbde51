"""What machine the figures were measured on, and how fast its core clock runs."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from . import __version__, native
from . import peaks as peak_probe
from .peaks import measure_peaks


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


def estimate_clock_ghz(peaks: dict | None = None) -> dict:
    """The core clock from the peak probe's dependent integer add chain (kernels/clock.c,
    run in a subprocess by peaks.py; one add retires per cycle).

    Falls back to /proc/cpuinfo's "cpu MHz" (the nominal, not the boosted clock)
    when the probe cannot be built or run.
    """
    peaks = peaks if peaks is not None else measure_peaks()
    if "error" in peaks or not peaks.get("clock_ghz"):
        return _clock_from_cpuinfo(f"no add-chain estimate ({peaks.get('error', 'no figure')[:200]})")
    after = peaks.get("clock_ghz_after")
    note = f"; {after:.3f} GHz after the peak probes" if after else ""
    return {"ghz": round(peaks["clock_ghz"], 3),
            "method": f"dependent integer add chain, best of 15 x 3 ms (one add per cycle){note}"}


def measure_clock_ghz(timeout: float = 10.0) -> float | None:
    """The core clock now: kernels/peak.c's dependent add chain alone (`peak-probe clock`,
    best of 15 x 3 ms), run as its own program, so a sanitizing or broken compiler's build
    fails only the figure; None where it cannot be built or run. A row measures it just
    before and after its timed windows, since a host can move the clock between rows (2.3
    to 2.9 GHz within minutes on the shared development VM), and one figure from the start
    of a run then misstates every cycle count."""
    try:
        proc = subprocess.run([str(peak_probe.probe_program()), "clock"], capture_output=True, text=True, timeout=timeout)
        ghz = json.loads(proc.stdout)["clock_ghz"] if proc.returncode == 0 else None
    except (native.BuildError, OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return round(float(ghz), 4) if isinstance(ghz, (int, float)) and ghz > 0 else None


def clock_beside(work):
    """(work(), the clock measured just before and after it: {"before", "after"} GHz, or None
    where it could not be measured)."""
    before = measure_clock_ghz()
    out = work()
    after = measure_clock_ghz() if before else None
    return out, ({"before": before, "after": after} if before and after else None)


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

    peaks = measure_peaks()
    return {
        "label": label or default_label(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "simd": simd_capabilities(),
        "clock": clock or estimate_clock_ghz(peaks),
        "peaks": peaks,
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
