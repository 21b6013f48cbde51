"""Per-token and per-name latency of a single-stream loop, beside the FPGA's fixed latency.

The pass is separate from the throughput repeats (the stamps cost time). The
backend's `generate_stamped` gives every token's end time from one stamp taken
before token 0 (native loops stamp in native code; Python loops with
perf_counter_ns). A token's latency is the gap between consecutive end times; a
name's (one generation from BOS to BOS, or 16 tokens) is the span of its tokens.
Both go into log-bucketed histograms (histogram.py).

The FPGA row comes from TALOS-V2's cycle model over the same tokens: a step at
position p takes 866 + 20p cycles in the core and 868 + 20p back to back on the
board (talos-rtl-spec section 6; the back-to-back figure is used, as a stream of
names runs; 752 + 20p and 754 + 20p when a greedy run is compared with its greedy
mode), at 56.25 MHz unless the job says otherwise; a name is the sum of its steps. The rare RMS shortcut (-25 cycles) is not modelled, so the band is an
upper bound by at most 75 cycles a step. The timer's own overhead is measured and
reported, never subtracted.
"""
from __future__ import annotations

import os
import resource

import numpy as np

from . import talos
from .backends.base import Backend
from .histogram import LogHistogram
from .model import BLOCK_SIZE, BOS

LATENCY_MAX_TOKENS = 1_000_000   # one stamped pass: at most this many tokens (or one repeat's worth)
# back-to-back period at pos 0: 868 sampling, 754 greedy (sample_mode = 0)
FPGA_CYCLES_AT_POS0 = {True: talos.CYCLES_SAMPLE + talos.BOARD_EXTRA_CYCLES,
                       False: talos.CYCLES_ARGMAX + talos.BOARD_EXTRA_CYCLES}


def fpga_model_text(sample_mode: bool = True) -> str:
    base = FPGA_CYCLES_AT_POS0[sample_mode]
    return (f"{base} + 20*pos board cycles a step (back-to-back, core {base - talos.BOARD_EXTRA_CYCLES} + 20*pos"
            f"{'' if sample_mode else ', greedy: sample_mode = 0'}); a name is the sum of its steps")


def positions(tokens: np.ndarray) -> np.ndarray:
    """The position each token was generated at, by the loop's reset rule."""
    out = np.empty(len(tokens), np.int64)
    pos = 0
    for i, tok in enumerate(tokens.tolist()):
        out[i] = pos
        pos = 0 if tok == BOS or pos + 1 == BLOCK_SIZE else pos + 1
    return out


def name_ends(tokens: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Indices of the last token of every complete name."""
    return np.nonzero((tokens == BOS) | (pos == BLOCK_SIZE - 1))[0]


def fpga_step_cycles(pos: np.ndarray, sample_mode: bool = True) -> np.ndarray:
    return FPGA_CYCLES_AT_POS0[sample_mode] + talos.CYCLES_PER_POS * np.asarray(pos, np.int64)


def per_name(values: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sum of per-token values over each complete name (ends: last index of each name)."""
    cum = np.concatenate([[0], np.cumsum(values)])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return cum[ends + 1] - cum[starts]


def fpga_latency(tokens, mhz: float = talos.FPGA_MHZ, sample_mode: bool = True) -> dict:
    """The FPGA's per-token and per-name latency (ns and board cycles) for this token stream
    (sample_mode False: the core's greedy decoding, as a greedy run is compared with)."""
    tokens = np.asarray(tokens, np.int64)
    pos = positions(tokens)
    cycles = fpga_step_cycles(pos, sample_mode)
    ends = name_ends(tokens, pos)
    name_cycles = per_name(cycles, ends)
    ns_per_cycle = 1e3 / mhz
    return {"pos": pos, "ends": ends, "token_cycles": cycles, "name_cycles": name_cycles,
            "token_ns": cycles * ns_per_cycle, "name_ns": name_cycles * ns_per_cycle}


def _histogram(values) -> LogHistogram:
    h = LogHistogram()
    h.record(np.rint(np.asarray(values, np.float64)).astype(np.int64))
    return h


def _slower(measured: np.ndarray, fpga: np.ndarray) -> dict:
    n = int(measured.size)
    slower = int(np.count_nonzero(measured > fpga))
    return {"count": slower, "of": n, "share": slower / n if n else None}


def analyse(tokens, end_ns, mhz: float = talos.FPGA_MHZ, sample_mode: bool = True) -> dict:
    """Histograms, summaries and the FPGA comparison of one stamped pass."""
    tokens, end_ns = np.asarray(tokens, np.int64), np.asarray(end_ns, np.int64)
    token_ns = np.diff(np.concatenate([[0], end_ns]))
    fpga = fpga_latency(tokens, mhz, sample_mode)
    name_ns = per_name(token_ns, fpga["ends"])
    tok_h, name_h = _histogram(token_ns), _histogram(name_ns)
    ftok_h, fname_h = _histogram(fpga["token_ns"]), _histogram(fpga["name_ns"])
    return {"tokens": int(tokens.size), "names": int(fpga["ends"].size),
            "per_token_ns": tok_h.summary(), "per_name_ns": name_h.summary() if name_h.count else None,
            "mlperf_single_stream_ns": name_h.percentile(90) if name_h.count else None,
            "histograms": {"per_token_ns": tok_h.to_dict(), "per_name_ns": name_h.to_dict()},
            "slower_than_fpga": {"tokens": _slower(token_ns, fpga["token_ns"]),
                                 "names": _slower(name_ns, fpga["name_ns"])},
            "fpga": {"mhz": mhz, "model": fpga_model_text(sample_mode), "per_token_ns": ftok_h.summary(),
                     "per_name_ns": fname_h.summary() if fname_h.count else None,
                     "board_cycles": int(fpga["token_cycles"].sum())}}


def current_cpu() -> int | None:
    """The CPU this process last ran on (field 39 of /proc/self/stat), where Linux says."""
    try:
        with open("/proc/self/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def _switches() -> tuple[int, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_nvcsw, ru.ru_nivcsw


def measure_latency(backend, job: dict, tokens_per_repeat: int) -> dict:
    """The stamped pass of a single-stream row: its latency section, or why there is none."""
    if not backend.has_stamps():
        return {"status": "unavailable",
                "reason": f"{backend.name} has no per-token primitive (its loop is one native call; "
                          "per-token stamps need a native generate_stamped)"}
    n = max(1, min(tokens_per_repeat, job.get("latency_tokens", LATENCY_MAX_TOKENS)))
    timer = backend.timer_info()
    native = type(backend).generate_stamped is not Backend.generate_stamped
    vol0, invol0 = _switches()
    tokens, end_ns = backend.generate_stamped(n, job["seed"])
    vol1, invol1 = _switches()
    context = {"cpu": current_cpu(), "affinity": sorted(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else None, "context_switches": {"voluntary": vol1 - vol0,
                                                                   "involuntary": invol1 - invol0}}
    if not np.array_equal(np.asarray(tokens), np.asarray(backend.generate(n, job["seed"]))):
        return {"status": "failed", "reason": "the stamped pass's tokens differ from generate()'s", **context}
    if np.any(np.diff(np.concatenate([[0], end_ns])) < 0):
        return {"status": "failed", "reason": "the stamps go backwards", **context}
    return {"status": "ok", "timer": timer, "stamped_in": "native code" if native else
            "Python (perf_counter_ns after each token of iter_tokens)", **context,
            **analyse(tokens, end_ns, job.get("fpga_mhz") or talos.FPGA_MHZ, not is_greedy(backend, job))}


def is_greedy(backend, job: dict) -> bool:
    """The run decodes greedily (--sampler argmax, or temperature 0 on a float backend)."""
    return job.get("sampler") == "argmax" or (backend.temperature == 0 and type(backend).greedy_at_zero_temperature)
