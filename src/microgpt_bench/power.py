"""Power per benchmark row: which meter a row gets, what a row without a measurement
assumes, and how a report picks the figure it shows. The meters themselves are in
power_meters.py.

Every row's power figure is one dict (see docs/results-schema.md, row["power"]):

    {"watts": float | None, "measured": bool, "basis": "measured" | "given" | "assumed" | "none",
     "method": str, "scope": str, "idle_baseline_w": float | None, ...}

How a figure is chosen, first that applies (describe() says the same for the report):
  1. measured during the timed repeats, by the meter for the backend's declared device
     (Backend.device): RAPL package counters for "cpu" rows on Linux, NVIDIA board
     power for "cuda" rows; nothing on macOS (powermetrics needs root).
  2. given: `microgpt-bench report --watts BACKEND=W` (an explicit user value beats
     any assumption, never a measurement).
  3. assumed: a per-core default by CPU vendor times the row's threads (DEFAULT_W_PER_CORE),
     or for a GPU row the board's power limit (an upper bound) when known.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from .power_meters import (IDLE_SECONDS, NVSMI_INTERVAL_MS, POWERCAP_ROOT, NvidiaMeter, PowerMeter, RaplMeter,
                           have_pynvml, rapl_unreadable_reason)

# Watts one busy core draws, by CPU family: assumptions, not measurements. Apple's and
# Grace's are the write-up's own figures; the x86 ones are round numbers for a desktop or
# server core under a single-threaded load (server cores at lower clocks draw less).
DEFAULT_W_PER_CORE = {
    "apple": (5.0, "~5 W per Apple P-core under load (the write-up's assumption)"),
    "grace": (3.0, "~3 W per Grace (Neoverse/Cortex-X) core (the write-up's estimate)"),
    "arm": (3.0, "~3 W per Arm core (the write-up's Grace estimate, applied to other Arm CPUs)"),
    "intel": (10.0, "~10 W per busy Intel x86 core (assumption: desktop/server core at boost clock)"),
    "amd": (8.0, "~8 W per busy AMD x86 core (assumption: desktop/server core at boost clock)"),
    "other": (5.0, "~5 W per busy core (assumption: CPU family unknown)"),
}


class PowerError(ValueError):
    """A bad --watts value and the like."""


def backend_device(backend: str) -> str:
    """The device a backend declares (Backend.device): "cpu", "cuda", "metal"; "cpu" if unknown here."""
    from .backends import backend_class

    try:
        return backend_class(backend).device
    except Exception:  # unknown, or a plugin that does not import here
        return "cpu"  # a row from another tool version or a plugin not installed here


# ---------------------------------------------------------------- defaults


def cpu_family(cpu: str = "", arch: str = "", system: str = "") -> str:
    text = f"{cpu} {arch}".lower()
    if system == "Darwin" and arch.lower() in ("arm64", "aarch64") or "apple" in text:
        return "apple"
    if "grace" in text or "neoverse-v2" in text or "cortex-x925" in text:
        return "grace"
    if "intel" in text or "genuineintel" in text:
        return "intel"
    if "amd" in text or "epyc" in text or "ryzen" in text or "authenticamd" in text:
        return "amd"
    if arch.lower() in ("arm64", "aarch64") or "arm" in text or "neoverse" in text:
        return "arm"
    return "other"


def default_power(backend: str, threads: int = 1, machine: dict | None = None) -> dict:
    """The assumed figure for a row that was not measured (basis "assumed", or "none")."""
    machine = machine or {}
    threads = max(1, int(threads or 1))
    system = machine.get("os", "").split(" ")[0]
    family = cpu_family(machine.get("cpu", ""), machine.get("arch", ""), system)
    device = backend_device(backend)
    if device != "cpu" and family == "apple":
        per_core = DEFAULT_W_PER_CORE["apple"][0]
        return {"watts": per_core, "measured": False, "basis": "assumed", "scope": "Apple GPU",
                "method": f"assumed: ~{per_core:g} W, the write-up's Apple figure (it gives no separate GPU figure)",
                "cpu_family": family}
    if device != "cpu":
        return _gpu_limit(machine)
    per_core, why = DEFAULT_W_PER_CORE[family]
    return {"watts": per_core * threads, "measured": False, "basis": "assumed",
            "scope": f"{threads} CPU core{'s' if threads > 1 else ''}",
            "method": f"assumed: {why}" + (f" x {threads} threads" if threads > 1 else ""),
            "cpu_family": family}


def _gpu_limit(machine: dict) -> dict:
    limits = []
    for gpu in machine.get("gpus") or []:
        try:
            limits.append(float(gpu.get("power_limit_w")))
        except (TypeError, ValueError):
            pass
    if limits:
        return {"watts": limits[0], "measured": False, "basis": "assumed", "scope": "GPU board",
                "method": "assumed: the GPU's power limit (an upper bound on its draw)"}
    return {"watts": None, "measured": False, "basis": "none", "scope": "GPU board",
            "method": "no figure: GPU power not measured and no power limit known; pass --watts"}


def this_machine(gpus: bool = False) -> dict:
    """The few machine facts default_power needs, cheaply (no clock estimate)."""
    from .machine import cpu_model, gpu_info

    return {"cpu": cpu_model(), "arch": platform.machine(), "os": f"{platform.system()} {platform.release()}",
            "gpus": gpu_info() if gpus else []}


# ---------------------------------------------------------------- --watts


def parse_watts(text: str) -> tuple[str, float]:
    """'BACKEND=W' -> (backend, watts); anything else raises PowerError with the reason."""
    if "=" not in text:
        raise PowerError(f"--watts {text!r}: expected BACKEND=WATTS, e.g. c-fp32=5")
    name, value = (part.strip() for part in text.rsplit("=", 1))
    if not name:
        raise PowerError(f"--watts {text!r}: no backend name before '='")
    try:
        watts = float(value)
    except ValueError:
        raise PowerError(f"--watts {text!r}: {value!r} is not a number of watts") from None
    if not (watts > 0 and watts < float("inf")):
        raise PowerError(f"--watts {text!r}: watts must be a finite number > 0")
    return name, watts


def parse_watts_list(items: list[str] | None) -> dict[str, float]:
    return dict(parse_watts(item) for item in items or [])


# ---------------------------------------------------------------- the report's choice


def resolve_power(row: dict, machine: dict | None = None, given: dict[str, float] | None = None) -> dict:
    """The power figure a report uses for a row: measured > --watts > assumed default."""
    stored = row.get("power") if isinstance(row.get("power"), dict) else {}
    if stored.get("measured") and _positive(stored.get("watts")):
        return {**stored, "basis": "measured"}
    backend = row.get("backend", "?")
    if given and backend in given:
        out = {"watts": given[backend], "measured": False, "basis": "given", "scope": "as given",
               "method": f"given on the command line: --watts {backend}={given[backend]:g}"}
    elif _positive(stored.get("watts")):
        out = {**stored, "basis": stored.get("basis") or "assumed"}
    else:
        out = default_power(backend, row.get("threads", 1), machine)
    if stored.get("unmeasured"):
        out["unmeasured"] = stored["unmeasured"]
    return out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def describe() -> list[str]:
    """How power figures are got, in the words the report prints (kept beside the code that does it)."""
    defaults = "; ".join(f"{fam}: {w:g} W" for fam, (w, _) in DEFAULT_W_PER_CORE.items())
    return [
        "Power per row, first that applies: (1) measured during the timed repeats; (2) --watts BACKEND=W given to "
        "the report; (3) an assumed default. A measurement is never overridden.",
        "Measured for rows on a CPU device on Linux from the RAPL package energy counters "
        f"({POWERCAP_ROOT}/intel-rapl:N, AMD too on recent kernels) read before and after the timed window, "
        "counter wraparound handled. That counter covers the whole CPU package (all cores, uncore, anything else "
        f"running), so an idle baseline sampled for {IDLE_SECONDS:g} s just before the window is subtracted; both "
        "figures are kept in the results file.",
        "Measured for rows on a CUDA device from the NVIDIA board's power draw (NVML, or nvidia-smi power.draw "
        f"every {NVSMI_INTERVAL_MS} ms) averaged over the timed window: the whole board, nothing subtracted.",
        "Not measured on macOS (powermetrics needs root) nor where RAPL is absent or unreadable (most VMs).",
        f"Assumed defaults, watts per busy core times the row's threads: {defaults}. A GPU row with no "
        "measurement assumes the board's power limit (an upper bound) when known.",
    ]


# ---------------------------------------------------------------- choosing a meter


def meter_for(backend_name: str, threads: int = 1, machine: dict | None = None,
              powercap_root: Path = POWERCAP_ROOT) -> PowerMeter:
    """The best meter this machine offers for the device a backend's rows run on."""
    device = backend_device(backend_name)

    def fallback(why: str) -> dict:
        try:
            facts = machine or this_machine(gpus=device != "cpu")
        except Exception:
            facts = {}
        return default_power(backend_name, threads, facts)

    system = platform.system()
    if system == "Darwin":
        return PowerMeter("macOS: not measured (powermetrics needs root; no unprivileged energy counter)", fallback)
    if device == "cuda":
        if shutil.which("nvidia-smi") or have_pynvml():
            return NvidiaMeter(_first_visible_gpu(), fallback=fallback)
        return PowerMeter("GPU power not measured: neither NVML (pynvml) nor nvidia-smi is available", fallback)
    if device != "cpu":
        return PowerMeter(f"{device} power: no meter implemented", fallback)
    if system != "Linux":
        return PowerMeter(f"{system}: no power meter implemented", fallback)
    reason = rapl_unreadable_reason(powercap_root)
    if reason:
        return PowerMeter(reason, fallback)
    return RaplMeter(powercap_root, fallback=fallback)


def _first_visible_gpu() -> int:
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0
