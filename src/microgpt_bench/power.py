"""Power per benchmark row: measured where the machine lets us, else a documented assumption.

Every row's power figure is one dict (see docs/results-schema.md, row["power"]):

    {"watts": float | None, "measured": bool, "basis": "measured" | "given" | "assumed" | "none",
     "method": str, "scope": str, "idle_baseline_w": float | None, ...}

How a figure is chosen, first that applies:
  1. measured during the timed repeats:
     - Linux CPU rows: the powercap/RAPL package energy counters
       (/sys/class/powercap/intel-rapl:N/energy_uj; AMD exposes its RAPL there too
       on recent kernels), read before and after the timed window, wraparound
       handled with max_energy_range_uj. The counter covers the whole socket (every
       core, uncore, other processes), so an idle baseline is sampled just before the
       window and subtracted: `watts` is what the load added, `package_w` the raw
       socket figure.
     - NVIDIA GPU rows (backend names with "cuda" or "gpu"): board power sampled in a
       background thread during the window, through NVML (pynvml) when installed, else
       `nvidia-smi --query-gpu=power.draw -lms 100`. The whole board's draw, nothing
       subtracted (like the write-up's 19.96 W figure); the idle draw is recorded.
     - macOS: not measured (powermetrics needs root); the row says so.
  2. given: `microgpt-bench report --watts BACKEND=W` (an explicit user value beats
     any assumption, never a measurement).
  3. assumed: a per-core default by CPU vendor times the row's threads (DEFAULT_W_PER_CORE),
     or for a GPU row the board's power limit (an upper bound) when known.
"""
from __future__ import annotations

import atexit
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

POWERCAP_ROOT = Path("/sys/class/powercap")
IDLE_SECONDS = 0.3
NVSMI_INTERVAL_MS = 100
SMI_LOOP = 'nvidia-smi "$@" & pid=$!; read line; kill $pid 2>/dev/null; wait $pid'

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


def is_gpu_backend(backend: str) -> bool:
    name = backend.lower()
    return "cuda" in name or "gpu" in name


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
    if is_gpu_backend(backend) and family == "apple":
        per_core = DEFAULT_W_PER_CORE["apple"][0]
        return {"watts": per_core, "measured": False, "basis": "assumed", "scope": "Apple GPU",
                "method": f"assumed: ~{per_core:g} W, the write-up's Apple figure (it gives no separate GPU figure)",
                "cpu_family": family}
    if is_gpu_backend(backend):
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
    per_core, why = DEFAULT_W_PER_CORE[family]
    return {"watts": per_core * threads, "measured": False, "basis": "assumed",
            "scope": f"{threads} CPU core{'s' if threads > 1 else ''}",
            "method": f"assumed: {why}" + (f" x {threads} threads" if threads > 1 else ""),
            "cpu_family": family}


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


def resolve_power(row: dict, machine: dict | None = None, given: dict[str, float] | None = None) -> dict:
    """The power figure a report uses for a row: measured > --watts > assumed default."""
    stored = row.get("power") if isinstance(row.get("power"), dict) else None
    if stored and stored.get("measured") and _positive(stored.get("watts")):
        return {**stored, "basis": "measured"}
    backend = row.get("backend", "?")
    if given and backend in given:
        out = {"watts": given[backend], "measured": False, "basis": "given", "scope": "as given",
               "method": f"given on the command line: --watts {backend}={given[backend]:g}"}
        if stored and stored.get("unmeasured"):
            out["unmeasured"] = stored["unmeasured"]
        return out
    if stored and _positive(stored.get("watts")):
        return {**stored, "basis": stored.get("basis") or "assumed"}
    out = default_power(backend, row.get("threads", 1), machine)
    if stored and stored.get("unmeasured"):
        out["unmeasured"] = stored["unmeasured"]
    return out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


# ---------------------------------------------------------------- meters


class PowerMeter:
    """start() before the timed window, stop() after: stop() returns the row's power dict.

    The base class measures nothing: stop() gives the assumed default and the reason.
    stop() never raises: a meter that breaks turns into that default.
    """

    def __init__(self, backend: str = "?", threads: int = 1, why: str = "no power meter here",
                 machine: dict | None = None):
        self.backend, self.threads, self.why, self.machine = backend, threads, why, machine

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def measure(self) -> dict:
        raise NotImplementedError

    def stop(self) -> dict:
        try:
            result = self.measure()
            if result and _positive(result.get("watts")):
                return {**result, "measured": True, "basis": "measured"}
            why = (result or {}).get("unmeasured") or self.why
        except NotImplementedError:
            why = self.why
        except Exception as exc:  # a meter must never fail a row
            why = f"{type(self).__name__} failed: {type(exc).__name__}: {exc}"
        try:
            machine = self.machine or this_machine(is_gpu_backend(self.backend))
        except Exception:
            machine = {}
        return {**default_power(self.backend, self.threads, machine), "unmeasured": why}


def rapl_zones(root: Path = POWERCAP_ROOT) -> list[Path]:
    """Top-level package zones (intel-rapl:N), not their subzones (which they include)."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [p for p in entries if re.fullmatch(r"intel-rapl:\d+", p.name)]


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_unreadable_reason(root: Path = POWERCAP_ROOT) -> str | None:
    zones = rapl_zones(root)
    if not zones:
        return f"no RAPL package zones under {root} (no powercap driver, or a VM)"
    try:
        for zone in zones:
            _read_int(zone / "energy_uj")
    except PermissionError:
        return f"RAPL counters under {root} are not readable by this user (root needed on recent kernels)"
    except (OSError, ValueError) as exc:
        return f"RAPL counters under {root} unreadable: {exc}"
    return None


class RaplMeter(PowerMeter):
    """Package energy (all sockets) over the window, minus an idle baseline sampled before it."""

    def __init__(self, backend: str = "?", threads: int = 1, root: Path = POWERCAP_ROOT,
                 idle_seconds: float = IDLE_SECONDS, machine: dict | None = None):
        super().__init__(backend, threads, "RAPL unreadable", machine)
        self.root, self.idle_seconds = Path(root), idle_seconds
        self.zones = rapl_zones(self.root)

    def _snapshot(self) -> list[int]:
        return [_read_int(z / "energy_uj") for z in self.zones]

    def _joules(self, before: list[int], after: list[int]) -> float:
        total = 0
        for zone, a, b in zip(self.zones, before, after):
            delta = b - a
            if delta < 0:  # the counter wrapped (at most once: windows are seconds long)
                delta += _read_int(zone / "max_energy_range_uj") + 1
            total += delta
        return total / 1e6

    def start(self) -> None:
        self.idle_w = None
        try:
            if self.idle_seconds > 0:
                e0, t0 = self._snapshot(), time.perf_counter()
                time.sleep(self.idle_seconds)
                self.idle_w = self._joules(e0, self._snapshot()) / (time.perf_counter() - t0)
            self._e0, self._t0 = self._snapshot(), time.perf_counter()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            self._e0 = None

    def measure(self) -> dict:
        if getattr(self, "_e0", None) is None:
            return {"unmeasured": f"RAPL read failed: {getattr(self, '_error', 'no zones')}"}
        e1, t1 = self._snapshot(), time.perf_counter()
        seconds = t1 - self._t0
        package_w = self._joules(self._e0, e1) / seconds
        idle = self.idle_w
        load_w = package_w - idle if idle is not None else package_w
        note = ""
        if idle is not None and load_w <= 0:  # a busy neighbour during the baseline: keep the raw figure
            load_w, note = package_w, "; baseline not subtracted (the window drew no more than it)"
        return {"watts": load_w, "package_w": package_w, "idle_baseline_w": idle, "seconds": seconds,
                "method": f"RAPL package energy counters ({', '.join(z.name for z in self.zones)}) over the "
                          f"timed window" + (f", minus an idle baseline over {self.idle_seconds:g} s before it"
                                             if idle is not None else "") + note,
                "scope": "whole CPU package(s): every core, uncore and other processes, not just this row"}


class NvidiaMeter(PowerMeter):
    """GPU board power sampled in a background thread during the window (NVML, else nvidia-smi)."""

    def __init__(self, backend: str = "?", threads: int = 1, gpu_index: int | None = None,
                 interval_ms: int = NVSMI_INTERVAL_MS, machine: dict | None = None):
        super().__init__(backend, threads, "GPU power not sampled", machine)
        self.gpu_index = gpu_index if gpu_index is not None else _first_visible_gpu()
        self.interval = interval_ms / 1000
        self.samples: list[float] = []
        self.source = ""

    def _read_once(self) -> float | None:
        if self._nvml is not None:
            return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        out = subprocess.run(["nvidia-smi", "-i", str(self.gpu_index), "--query-gpu=power.draw",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        return _parse_float(out.stdout)

    def start(self) -> None:
        self._nvml, self._stop, self._proc, self.idle_w = None, threading.Event(), None, None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            self.source = "NVML nvmlDeviceGetPowerUsage (pynvml)"
        except Exception:
            self._nvml = None
            self.source = f"nvidia-smi --query-gpu=power.draw -lms {int(self.interval * 1000)}"
        try:
            self.idle_w = self._read_once()
        except Exception:
            self.idle_w = None
        self._t0 = time.perf_counter()
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._poll_nvml, daemon=True)
        else:
            try:
                # nvidia-smi loops until killed: a shell holds it and kills it when our end of its
                # stdin closes, which also happens if this process dies (no fork hooks needed)
                self._proc = subprocess.Popen(
                    ["sh", "-c", SMI_LOOP, "sh", "-i", str(self.gpu_index), "--query-gpu=power.draw",
                     "--format=csv,noheader,nounits", "-lms", str(int(self.interval * 1000))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                atexit.register(_terminate, self._proc)
            except OSError as exc:
                self._error = str(exc)
                self._thread = None
                return
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        self._thread.start()

    def _poll_nvml(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._read_once())
            except Exception:
                pass
            self._stop.wait(self.interval)

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            value = _parse_float(line)
            if value is not None:
                self.samples.append(value)

    def measure(self) -> dict:
        self._stop.set()
        if self._proc is not None:
            _terminate(self._proc)
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=5)
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        samples = [s for s in self.samples if s is not None and s > 0]
        if not samples:
            return {"unmeasured": f"no GPU power samples from {self.source or 'nvidia-smi'}"
                                  f"{': ' + self._error if getattr(self, '_error', None) else ''}"}
        return {"watts": sum(samples) / len(samples), "max_w": max(samples), "samples": len(samples),
                "idle_baseline_w": self.idle_w, "seconds": time.perf_counter() - self._t0,
                "method": f"{self.source}, mean of {len(samples)} samples over the timed window "
                          f"(GPU {self.gpu_index}); idle draw recorded, not subtracted",
                "scope": "whole GPU board, not the host CPU"}


def _terminate(proc: subprocess.Popen) -> None:
    """Stop the sampler: close its stdin (the shell then kills nvidia-smi), else kill it."""
    if proc.poll() is not None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=3)
    except Exception:
        proc.kill()
        try:
            proc.wait(timeout=3)
        except Exception:
            pass


def _parse_float(text: str) -> float | None:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError, AttributeError):
        return None


def _first_visible_gpu() -> int:
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def meter_for(backend_name: str, threads: int = 1, machine: dict | None = None,
              powercap_root: Path = POWERCAP_ROOT) -> PowerMeter:
    """The best meter this machine offers for a backend's rows."""
    system = platform.system()
    if system == "Darwin":
        return PowerMeter(backend_name, threads, "macOS: not measured (powermetrics needs root; "
                                                 "no unprivileged energy counter)", machine)
    if is_gpu_backend(backend_name):
        if shutil.which("nvidia-smi") or _has_pynvml():
            return NvidiaMeter(backend_name, threads, machine=machine)
        return PowerMeter(backend_name, threads, "GPU power not measured: neither NVML (pynvml) nor "
                                                 "nvidia-smi is available", machine)
    if system != "Linux":
        return PowerMeter(backend_name, threads, f"{system}: no power meter implemented", machine)
    reason = rapl_unreadable_reason(powercap_root)
    if reason:
        return PowerMeter(backend_name, threads, reason, machine)
    return RaplMeter(backend_name, threads, root=powercap_root, machine=machine)


def _has_pynvml() -> bool:
    try:
        import pynvml  # noqa: F401
    except Exception:
        return False
    return True
