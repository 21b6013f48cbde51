"""This machine's measured peak, and each native row's share of the floor it sets.

kernels/peak.c (with clock.c) is built as a small program and run in a
subprocess: a probe that crashes (an instruction the OS has not enabled, a
sanitizing or broken compiler) fails only itself, and the tool carries on with
an "error" entry. It measures the core clock (a dependent add chain), fp32 FMA
lanes per cycle at each vector width the CPU has and int16 multiply-adds per
cycle (VNNI vpdpwssd, vpmaddwd, NEON smlal), each with 12 independent
accumulator chains.

The model does exactly MACS_FIXED + MACS_PER_POS * (pos + 1) multiply-adds for a
token at position pos (kernels/mg_model.h), so a run's floor is its multiply-add
count over the peak: floor cycles/token = MACs/token / (lanes a cycle). A row's
share of the floor is floor / measured cycles per token (per core for offline). The
peak is the best any steady probe has read on this CPU (measure_peaks), so a probe
disturbed by a shared core cannot lower the floor.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import native
from .model import BLOCK_SIZE, BOS

MACS_FIXED = 3504     # kernels/mg_model.h MG_MACS_FIXED
MACS_PER_POS = 32     # kernels/mg_model.h MG_MACS_PER_POS
PROBE_TIMEOUT_S = 120
PEAK_KIND = {"fp32": "fp32", "q412": "int16"}  # a backend's precision -> the peak that bounds it
PEAK_FIGURES = (("fp32", "fp32_lanes_per_cycle"), ("int16", "int16_macs_per_cycle"))  # a peak kind -> its figures


def probe_program() -> Path:
    """kernels/peak.c with clock.c, built (cached) as a small program."""
    cc = native.find_c_compiler()
    if cc is None:
        raise native.BuildError("no C compiler found (set CC, or install cc, gcc or clang)")
    sources = [native.KERNEL_DIR / "peak.c", native.KERNEL_DIR / "clock.c"]
    return native.build("peak-probe", sources, cc, ["-O2", "-std=c11"], link=[])


def run_probe(timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Build and run the probe, both in a fresh process (native.run_probe: a compiler or
    probe that aborts costs the figures, never the tool); its JSON, or {"error": why}."""
    try:
        return native.run_probe("microgpt_bench.peaks:probe_here", timeout=timeout)
    except native.ProbeError as exc:
        return {"error": f"probe failed: {str(exc)[:300]}"}


def probe_here(timeout: float = PROBE_TIMEOUT_S) -> dict:
    """run_probe's work, in this process: build kernels/peak.c, run it, read its JSON."""
    try:
        program = probe_program()
        proc = subprocess.run([str(program)], capture_output=True, text=True, timeout=timeout)
    except native.BuildError as exc:
        return {"error": f"probe not built: {str(exc)[:300]}"}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"probe did not run: {exc}"}
    if proc.returncode != 0:
        return {"error": f"probe exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"}
    try:
        raw = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"probe output is not JSON ({exc}): {proc.stdout[:200]!r}"}
    return summarise(raw)


def summarise(raw: dict) -> dict:
    """The probe's figures plus the best of each kind (the peak a floor divides by)."""
    out = {"clock_ghz": raw.get("clock_ghz"), "clock_ghz_after": raw.get("clock_ghz_after"),
           "stable": raw.get("stable"), "fp32_lanes_per_cycle": raw.get("fp32", {}),
           "int16_macs_per_cycle": raw.get("int16", {}),
           "fp32_mixed_ops_per_cycle": raw.get("mixed", {}),
           "method": "kernels/peak.c in a subprocess: 12 independent accumulator chains per "
                     "instruction, best of 15 x 3 ms, divided by a dependent-add-chain clock estimate"}
    for kind, key in PEAK_FIGURES:
        if out[key]:
            out[f"{kind}_peak"] = best_figure(out[key])
    out["adds_beside_fmas"] = adds_beside_fmas(out)
    return out


def best_figure(figures: dict) -> dict:
    """The largest of a probe's figures ({name: per cycle}): the peak a floor divides by."""
    name = max(figures, key=figures.get)
    return {"per_cycle": figures[name], "by": name}


def adds_beside_fmas(peaks: dict) -> dict | None:
    """At the widest width: the mixed probe's instructions a cycle (2 FMAs to an add) over
    the FMA probe's. Near 1.0: adds take FMA slots, so every non-multiply-add vector
    instruction of a kernel raises its true floor above the multiply-add floor; near 1.5:
    they issue beside the FMAs."""
    mixed, lanes = peaks.get("fp32_mixed_ops_per_cycle") or {}, peaks.get("fp32_lanes_per_cycle") or {}
    widths = [w for w in mixed if w in lanes and lanes[w] > 0]
    if not widths:
        return None
    w = max(widths, key=int)
    ratio = mixed[w] / (lanes[w] / (int(w) / 32))
    return {"width": w, "ratio": round(ratio, 3),
            "meaning": "adds share the FMA pipes" if ratio < 1.25 else "adds issue beside the FMAs"}


def _cache_path() -> Path:
    return native.cache_dir() / f"peaks-{native.cpu_signature()}.json"


def measure_peaks() -> dict:
    """Measure now and remember the figures for this CPU (worker processes read them).

    The floors divide by the best figure any steady probe has read on this CPU, not by this
    run's: a disturbed probe (another tenant on the core's other hyperthread, a preemption)
    reads low, and a floor from it flatters every row, while the only error upward is the
    clock estimate's, which steadiness bounds (_steady). This run's own figures stay in the
    record beside the best."""
    peaks = run_probe()
    if "error" not in peaks:
        peaks = with_best_seen(peaks, _read_cache())
        path = _cache_path()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(peaks, fh)
        os.replace(tmp, path)
    return peaks


def with_best_seen(peaks: dict, previous: dict | None) -> dict:
    """peaks (one probe) with best_seen: each figure's max over this and the earlier steady
    probes of this CPU, and the *_peak a floor divides by taken from it. An unsteady probe
    (the clock moved by over 2% while it ran, so its per-cycle figures are suspect) is
    recorded but not merged."""
    seen = (previous or {}).get("best_seen")
    seen = seen if isinstance(seen, dict) else {}  # a damaged cache starts the best afresh
    steady = _steady(peaks)
    probes = seen.get("probes")
    best = {"probes": (probes if isinstance(probes, int) and probes >= 0 else 0) + steady}
    for key in ("fp32_lanes_per_cycle", "int16_macs_per_cycle", "fp32_mixed_ops_per_cycle"):
        old = seen.get(key)
        merged = {k: v for k, v in old.items() if isinstance(v, (int, float)) and v > 0} if isinstance(old, dict) else {}
        if steady:
            for name, value in (peaks.get(key) or {}).items():
                merged[name] = max(value, merged.get(name, 0.0))
        best[key] = merged
    out = {**peaks, "best_seen": best}
    if best["fp32_mixed_ops_per_cycle"]:
        out["adds_beside_fmas"] = adds_beside_fmas(best)
    for kind, key in PEAK_FIGURES:
        figures = best[key] or peaks.get(key) or {}
        if figures:
            peak = best_figure(figures)
            out[f"{kind}_peak"] = {**peak, "this_probe": (peaks.get(key) or {}).get(peak["by"]),
                                   "of": f"best of {best['probes']} steady probes on this CPU"
                                   if best[key] else "this probe (none steady yet)"}
    return out


def _steady(peaks: dict) -> bool:
    """A probe whose clock estimates before and after agree within 2%: a figure per cycle is
    only as good as the clock it divides by, and the best of many is biased up by that error
    (peak.c's own "stable" allows 5%)."""
    before, after = peaks.get("clock_ghz"), peaks.get("clock_ghz_after")
    return bool(peaks.get("stable") and before and after and abs(before - after) <= 0.02 * max(before, after))


def _read_cache() -> dict | None:
    try:
        peaks = json.loads(_cache_path().read_text())
        if isinstance(peaks, dict) and "clock_ghz" in peaks:
            return peaks
    except (OSError, json.JSONDecodeError):
        pass
    return None


def cached_peaks() -> dict:
    """This CPU's last measured peaks, measuring them first if there are none."""
    return _read_cache() or measure_peaks()


def positions(tokens: np.ndarray) -> np.ndarray:
    """The position each token was generated at: 0 after BOS, wrapping at the block size."""
    tokens = np.asarray(tokens).reshape(-1)
    idx = np.arange(tokens.size)
    start = np.zeros(tokens.size, dtype=np.int64)
    after_bos = np.flatnonzero(tokens[:-1] == BOS) + 1
    start[after_bos] = after_bos
    return (idx - np.maximum.accumulate(start)) % BLOCK_SIZE


def macs_of_run(tokens: np.ndarray) -> int:
    """The model's exact multiply-add count for generating these tokens (one stream)."""
    return int(MACS_FIXED * np.asarray(tokens).size + MACS_PER_POS * (positions(tokens) + 1).sum())


def floor_info(precision: str, total_macs: int, n_tokens: int, peaks: dict) -> dict:
    """What a row's info carries about its floor (the table divides by its cycles/token)."""
    kind = PEAK_KIND.get(precision)
    peak = (peaks.get(f"{kind}_peak") or {}) if kind else {}
    info = {"macs_per_token": total_macs / n_tokens}
    if peak.get("per_cycle"):
        info.update(floor_cycles_per_token=info["macs_per_token"] / peak["per_cycle"],
                    floor_peak={"kind": kind, **peak})
    return info
