"""Power meters: what each one reads and how. Which meter a row gets, and what a row
without a measurement assumes, is policy and lives in power.py.

A meter is started just before a row's timed window and stopped just after it.
stop() returns the row's power dict: the measurement when there is one, else what
the meter's `fallback(why)` gives (power.py passes the assumed default). stop()
never raises: a meter that breaks turns into its fallback, with the reason.

The clock and the sleep are injected (tests pass a fake clock; nothing sleeps).
"""
from __future__ import annotations

import atexit
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

POWERCAP_ROOT = Path("/sys/class/powercap")
IDLE_SECONDS = 0.3
NVSMI_INTERVAL_MS = 100
SMI_LOOP = 'nvidia-smi "$@" & pid=$!; read line; kill $pid 2>/dev/null; wait $pid'

Fallback = Callable[[str], dict]


def no_figure(why: str) -> dict:
    """The fallback when the caller gives none: no watts, and why."""
    return {"watts": None, "measured": False, "basis": "none", "method": "not measured", "scope": "",
            "unmeasured": why}


class PowerMeter:
    """Measures nothing: stop() gives the fallback with the reason this machine has no meter."""

    def __init__(self, why: str = "no power meter here", fallback: Fallback | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.why = why
        self.fallback = fallback or no_figure
        self.clock = clock

    def start(self) -> None:
        """Called just before the timed window."""

    def measure(self) -> dict:
        """The measured power dict (with positive "watts"), or {"unmeasured": why}."""
        return {"unmeasured": self.why}

    def stop(self) -> dict:
        try:
            result = self.measure()
            if _positive(result.get("watts")):
                return {**result, "measured": True, "basis": "measured"}
            why = result.get("unmeasured") or self.why
        except Exception as exc:  # a meter must never fail a row
            why = f"{type(self).__name__} failed: {type(exc).__name__}: {exc}"
        return {**self.fallback(why), "unmeasured": why}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


# ---------------------------------------------------------------- RAPL (Linux CPUs)


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
    """Package energy (all sockets) over the window, minus an idle baseline sampled before it.

    The counter covers the whole socket (every core, uncore, other processes), so the
    baseline is what the load did not add: `watts` is the difference, `package_w` the raw figure.
    """

    def __init__(self, root: Path = POWERCAP_ROOT, idle_seconds: float = IDLE_SECONDS,
                 fallback: Fallback | None = None, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__("RAPL unreadable", fallback, clock)
        self.root, self.idle_seconds, self.sleep = Path(root), idle_seconds, sleep
        self.zones = rapl_zones(self.root)
        self.idle_w: float | None = None
        self.start_energy: list[int] | None = None
        self.start_time = 0.0
        self.error = "not started"

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
        try:
            if self.idle_seconds > 0:
                e0, t0 = self._snapshot(), self.clock()
                self.sleep(self.idle_seconds)
                self.idle_w = self._joules(e0, self._snapshot()) / (self.clock() - t0)
            self.start_energy, self.start_time = self._snapshot(), self.clock()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def measure(self) -> dict:
        if self.start_energy is None:
            return {"unmeasured": f"RAPL read failed: {self.error}"}
        e1, t1 = self._snapshot(), self.clock()
        seconds = t1 - self.start_time
        package_w = self._joules(self.start_energy, e1) / seconds
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


# ---------------------------------------------------------------- NVIDIA boards


class NvidiaMeter(PowerMeter):
    """GPU board power sampled in a background thread during the window (NVML, else nvidia-smi).

    The whole board's draw, nothing subtracted; the idle draw before the window is recorded.
    """

    def __init__(self, gpu_index: int = 0, interval_ms: int = NVSMI_INTERVAL_MS, fallback: Fallback | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__("GPU power not sampled", fallback, clock)
        self.gpu_index = gpu_index
        self.interval = interval_ms / 1000
        self.samples: list[float] = []
        self.source = ""
        self.idle_w: float | None = None
        self.start_time = 0.0
        self.error = ""
        self.nvml = None  # the pynvml module once initialised
        self.handle = None
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def _read_once(self) -> float | None:
        if self.nvml is not None:
            return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        out = subprocess.run(["nvidia-smi", "-i", str(self.gpu_index), "--query-gpu=power.draw",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        return parse_float(out.stdout)

    def _open_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            self.source = "NVML nvmlDeviceGetPowerUsage (pynvml)"
        except Exception:
            self.nvml = None
            self.source = f"nvidia-smi --query-gpu=power.draw -lms {int(self.interval * 1000)}"

    def start(self) -> None:
        self._open_nvml()
        try:
            self.idle_w = self._read_once()
        except Exception:
            self.idle_w = None
        self.start_time = self.clock()
        if self.nvml is not None:
            self.thread = threading.Thread(target=self._poll_nvml, daemon=True)
        else:
            try:
                # nvidia-smi loops until killed: a shell holds it and kills it when our end of its
                # stdin closes, which also happens if this process dies (no fork hooks needed)
                self.proc = subprocess.Popen(
                    ["sh", "-c", SMI_LOOP, "sh", "-i", str(self.gpu_index), "--query-gpu=power.draw",
                     "--format=csv,noheader,nounits", "-lms", str(int(self.interval * 1000))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                atexit.register(terminate, self.proc)
            except OSError as exc:
                self.error = str(exc)
                return
            self.thread = threading.Thread(target=self._read_smi, daemon=True)
        self.thread.start()

    def _poll_nvml(self) -> None:
        while not self.stopping.is_set():
            try:
                self.samples.append(self._read_once())
            except Exception:
                pass
            self.stopping.wait(self.interval)

    def _read_smi(self) -> None:
        for line in self.proc.stdout:
            value = parse_float(line)
            if value is not None:
                self.samples.append(value)

    def measure(self) -> dict:
        self.stopping.set()
        if self.proc is not None:
            terminate(self.proc)
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
        samples = [s for s in self.samples if s is not None and s > 0]
        if not samples:
            return {"unmeasured": f"no GPU power samples from {self.source or 'nvidia-smi'}"
                                  f"{': ' + self.error if self.error else ''}"}
        return {"watts": sum(samples) / len(samples), "max_w": max(samples), "samples": len(samples),
                "idle_baseline_w": self.idle_w, "seconds": self.clock() - self.start_time,
                "method": f"{self.source}, mean of {len(samples)} samples over the timed window "
                          f"(GPU {self.gpu_index}); idle draw recorded, not subtracted",
                "scope": "whole GPU board, not the host CPU"}


def terminate(proc: subprocess.Popen) -> None:
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


def parse_float(text: str) -> float | None:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError, AttributeError):
        return None


def have_pynvml() -> bool:
    try:
        import pynvml  # noqa: F401
    except Exception:
        return False
    return True
