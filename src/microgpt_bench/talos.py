"""TALOS-V2's FPGA core, bit for bit, in plain Python (the readable reference).

This follows the project's TALOS-V2 RTL notes (talos-rtl-spec.md, TALOS-V2 commit 86d346e):
every activation and weight is a Q4.12 int16, sums are exact integers, shifts
floor (Python's >> and // floor, like the RTL's arithmetic shifts), results
saturate to int16, softmax is a 32-entry exp table, and the sampler is an
interpolated exp table driven by xorshift32. The section numbers in comments
refer to that spec. kernels/talos_emu.c is the same core in C, for speed; the
tests hold both to the reference vectors (rtl-vectors.jsonl).

Generation (spec section 4) runs positions 0..15 from BOS and stops at BOS or
after pos 15. For a continuous benchmark stream the next name starts again at
BOS/pos 0 with the RNG state carried on (rng_in = the last rng_out), so the
first name of a stream is exactly what the board prints for that seed.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np

from .model import BLOCK_SIZE, BOS, C_ORDER, HEAD_DIM, N_EMBD, N_HEAD, TENSOR_SHAPES, VOCAB, Params, decode
from .weights import WeightsError

MASK32 = 0xFFFFFFFF
Q = 12  # Q4.12: value = int / 4096
ONE = 1 << Q
RNG_MIX = 0x149FB  # the sampler multiplies the RNG state by this before taking 24 bits

# 4096 * exp(-k/4), k = 0..31, exactly as in the RTL (a few entries are off by one
# from exact rounding; the RTL's values are what count). Index >= 32 reads as 1.
EXP_LUT = (4096, 3189, 2484, 1935, 1507, 1174, 914, 712, 555, 432, 337, 262, 204, 159, 124, 97,
           75, 59, 46, 36, 28, 22, 17, 13, 10, 8, 6, 5, 4, 3, 2, 1)

# Cycle model (section 6): core latency of one step is base + 20*pos, minus 25 for
# each RMS scale that takes the denom <= 512 shortcut; the board adds 2 per step.
CYCLES_SAMPLE = 866
CYCLES_ARGMAX = 752
CYCLES_PER_POS = 20
CYCLES_RMS_SHORTCUT = 25
BOARD_EXTRA_CYCLES = 2
FPGA_MHZ = 56.25


# ------------------------------------------------------------ primitives (§2)


def sat16(v: int) -> int:
    return -32768 if v < -32768 else 32767 if v > 32767 else v


def mulq(a: int, b: int) -> int:
    return sat16((a * b) >> Q)


def matvec(w: list[list[int]], x: list[int]) -> list[int]:
    """Exact dot products, one floor shift at the end, then saturation (no rounding constant)."""
    return [sat16(sum(wi * xi for wi, xi in zip(row, x)) >> Q) for row in w]


def lut(i: int) -> int:
    return EXP_LUT[i] if i < len(EXP_LUT) else 1


def rms_scale(x: list[int]) -> tuple[int, bool]:
    """(scale ~ 4096/rms(x) in Q12, whether the RTL took its 25-cycle shortcut)."""
    sumsq = sum((xi * xi) >> Q for xi in x)  # each square floored before summing
    ms = (sumsq >> 4) + 1  # the +1 is the RTL's epsilon (1/4096), added after the floor
    denom = math.isqrt(ms << Q)  # the RTL's 32-step restoring sqrt is exact
    if denom <= 512:  # shortcut branch; equals sat16(2^24 // denom) anyway
        return 32767, True
    return min(32767, (1 << 24) // denom), False


def rmsnorm(x: list[int]) -> tuple[list[int], bool]:
    scale, shortcut = rms_scale(x)
    return [mulq(xi, scale) for xi in x], shortcut


def exp_attn(d: int) -> int:
    """exp(d) for a Q12 score difference d <= 0, |d| rounded to steps of 0.25 (ties down)."""
    if d >= 0:
        return ONE
    return lut((((-d) + 511) >> 10) & 63)  # 6-bit index: wraps only for d <= -65025


def trunc_div(num: int, den: int) -> int:
    """The attention divider: magnitude divide, sign restored (rounds toward zero)."""
    q = abs(num) // den
    return -q if num < 0 else q


def xorshift32(x: int) -> int:
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x


# --------------------------------------------------------------- sampler (§3.10)


MAX_TEMPERATURE = 0xFFFF / 256  # 255.996: the largest Q8.8 input


def temperature_q8_8(temperature: float) -> int:
    """The core's 16-bit Q8.8 temperature input for a float temperature, rounded to the nearest
    1/256. Every value 0..255.996 is legal (T = 0 and T < 1/512 give input 0, which the core
    samples at as T = 0.5: see effective_temperature); others raise ValueError."""
    if not isinstance(temperature, (int, float, np.integer, np.floating)) or not math.isfinite(temperature) \
            or temperature < 0 or round(temperature * 256) > 0xFFFF:
        raise ValueError(f"TALOS-V2's temperature input is Q8.8: 0..{MAX_TEMPERATURE:.3f}, got {temperature!r}")
    return int(round(temperature * 256))


def effective_temperature(tq: int) -> float:
    """The core only has four behaviours: every Q8.8 input acts as 0.5, 1, 2 or 4."""
    return 0.5 if tq <= 128 else 1.0 if tq <= 256 else 2.0 if tq <= 512 else 4.0


def temper(d: int, tq: int) -> int:
    """Scale a logit gap d <= 0 by 1/T with shifts (floor), T quantised as above."""
    if tq <= 128:
        return 2 * d
    if tq <= 256:
        return d
    if tq <= 512:
        return d >> 1
    return d >> 2


def sampler_weight(d: int) -> int:
    """exp(d/4096) as a u32 weight from the interpolated table, wraps included (ambiguity A2).

    f indexes a 1/16 grid: c = the 0.25 LUT step, r = quarters between LUT[c] and LUT[c+1].
    f is only 8 bits wide, so gaps >= 32705 (after tempering) wrap round to small f,
    and c = 63 reads LUT[0] as its neighbour, giving ~3.2e9 weights through u32 wrap.
    """
    if d >= 0:
        return ONE
    f = (((-d) + 127) >> 8) & 0xFF
    c, r = f >> 2, f & 3
    w0, w1 = lut(c), lut((c + 1) & 63)
    w = (w0 - ((((w0 - w1) & MASK32) * r & MASK32) >> 2)) & MASK32
    return w or 1


def sampler_weights(logits: list[int], tq: int) -> list[int]:
    top = max(logits)
    return [sampler_weight(temper(v - top, tq)) for v in logits]


def sampler_cut(rng_out: int, total: int) -> int:
    """The draw: 24 bits of the mixed RNG state scaled to [0, total)."""
    mixed = (rng_out * RNG_MIX) & MASK32
    return ((mixed >> 8) * total) >> 24


def pick(weights: list[int], cut: int, fallback: int) -> int:
    """The first token whose u32 running sum exceeds cut (the RTL compares wrapped sums)."""
    running = 0
    for v, w in enumerate(weights):
        running = (running + w) & MASK32
        if running > cut:
            return v
    return fallback


def sample(logits: list[int], rng_out: int, tq: int) -> int:
    weights = sampler_weights(logits, tq)
    total = (sum(weights) & MASK32) or 1
    return pick(weights, sampler_cut(rng_out, total), argmax(logits))


def argmax(logits: list[int]) -> int:
    return logits.index(max(logits))  # lowest index attaining the max, as the RTL's reduce


def sampler_distribution_q8_8(logits_q12, tq: int) -> np.ndarray:
    """Exact probabilities of each token under the core's sampler, for Q8.8 temperature tq.

    The draw uses m = 24 bits of a bijectively mixed xorshift state (uniform over 2^24
    values) and cut = floor(m*S/2^24). Token v wins for cut in [max(R_0..R_v-1), R_v),
    R the u32 running sums, so its probability is the count of such m over 2^24.
    Equals weight/S up to 2^-24 steps when nothing wraps; includes the A2 wraps when they do.
    """
    logits = [int(v) for v in logits_q12]
    if len(logits) != VOCAB:
        raise ValueError(f"expected {VOCAB} logits, got {len(logits)}")
    weights = sampler_weights(logits, tq)
    total = (sum(weights) & MASK32) or 1
    counts = np.zeros(VOCAB, dtype=np.int64)
    covered, running = 0, 0  # covered = max running sum so far: cuts below it are taken
    for v, w in enumerate(weights):
        running = (running + w) & MASK32
        if running > covered:
            counts[v] += _m_below(running, total) - _m_below(covered, total)
            covered = running
    counts[argmax(logits)] += (1 << 24) - _m_below(min(covered, total), total)
    return counts / float(1 << 24)


def _m_below(c: int, total: int) -> int:
    """How many m in [0, 2^24) have floor(m*total/2^24) < c."""
    return min(1 << 24, -((-c << 24) // total))  # ceil(c * 2^24 / total)


def sampler_distribution(logits_q12, temperature: float) -> np.ndarray:
    """The distribution the core draws from, for a float temperature (quantised as the board does)."""
    return sampler_distribution_q8_8(logits_q12, temperature_q8_8(temperature))


# ------------------------------------------------------------- weights (§1)


def quantise(params: Params) -> dict[str, np.ndarray]:
    """Q4.12 integers of the float weights: rint(w * 4096) clipped to int16.

    For Params loaded from the ROMs this gives the ROMs back exactly.
    """
    return {name: np.clip(np.rint(params[name] * ONE), -32768, 32767).astype(np.int16)
            for name in TENSOR_SHAPES}


def check_rom(rom: dict, source: str = "ROM") -> dict[str, np.ndarray]:
    """Validate a name -> int array dict (shapes, integer values in int16 range)."""
    missing = [n for n in TENSOR_SHAPES if n not in rom]
    if missing:
        raise WeightsError(f"{source}: missing tensors {missing}")
    out = {}
    for name, shape in TENSOR_SHAPES.items():
        arr = np.asarray(rom[name])
        if arr.shape != shape:
            raise WeightsError(f"{source}: tensor {name} has shape {arr.shape}, expected {shape}")
        if arr.dtype.kind not in "iu" or arr.min() < -32768 or arr.max() > 32767:
            raise WeightsError(f"{source}: tensor {name} must hold int16 values")
        out[name] = arr.astype(np.int16)
    return out


def rom_flat_c_order(rom: dict[str, np.ndarray]) -> np.ndarray:
    """The 4,192 ROM words in the C flat order (wte, wpe, wq, wk, wv, wo, fc1, fc2, lm_head)."""
    rom = check_rom(rom)
    return np.ascontiguousarray(np.concatenate([rom[n].ravel() for n in C_ORDER]), dtype=np.int16)


# ---------------------------------------------------------- one core step (§3)


class Step(NamedTuple):
    token_out: int
    rng_out: int
    argmax: int
    top: int
    logits: list[int]
    cycles: int  # core latency of the step (section 6)


def step_cycles(pos: int, sample_mode: bool = True, shortcuts: int = 0) -> int:
    base = CYCLES_SAMPLE if sample_mode else CYCLES_ARGMAX
    return base + CYCLES_PER_POS * pos - CYCLES_RMS_SHORTCUT * shortcuts


class TalosCore:
    """The core with its ROMs and its K/V caches; step() is one start..done of the RTL."""

    def __init__(self, rom: dict):
        rom = check_rom(rom)
        self.w = {name: arr.astype(int).tolist() for name, arr in rom.items()}
        self.kc = [[0] * N_EMBD for _ in range(BLOCK_SIZE)]
        self.vc = [[0] * N_EMBD for _ in range(BLOCK_SIZE)]

    @classmethod
    def from_params(cls, params: Params) -> "TalosCore":
        return cls(quantise(params))

    def step(self, token: int, pos: int, rng_in: int, clear: bool, tq: int,
             sample_mode: bool = True) -> Step:
        check_step_args(token, pos, rng_in, tq)
        rng_out = xorshift32(rng_in) if sample_mode else rng_in
        if clear:  # cosmetic (only t <= pos is read) but it is what the RTL does
            for row in self.kc + self.vc:
                row[:] = [0] * N_EMBD
        logits, shortcuts = self._forward(token, pos)
        best = argmax(logits)
        token_out = sample(logits, rng_out, tq) if sample_mode else best
        return Step(token_out, rng_out, best, logits[best], logits,
                    step_cycles(pos, sample_mode, shortcuts))

    def _forward(self, token: int, pos: int) -> tuple[list[int], int]:
        w = self.w
        x = [sat16(a + b) for a, b in zip(w["wte"][token], w["wpe"][pos])]
        x, s0 = rmsnorm(x)
        resid = x
        n, s1 = rmsnorm(x)  # the model's second norm right after the first
        q = matvec(w["layer0.attn_wq"], n)
        self.kc[pos] = matvec(w["layer0.attn_wk"], n)
        self.vc[pos] = matvec(w["layer0.attn_wv"], n)
        xa = self._attention(q, pos)
        x = [sat16(o + r) for o, r in zip(matvec(w["layer0.attn_wo"], xa), resid)]
        resid = x
        n, s2 = rmsnorm(x)
        hid = [max(0, h) for h in matvec(w["layer0.mlp_fc1"], n)]  # relu after saturation
        x = [sat16(y + r) for y, r in zip(matvec(w["layer0.mlp_fc2"], hid), resid)]
        return matvec(w["lm_head"], x), s0 + s1 + s2

    def _attention(self, q: list[int], pos: int) -> list[int]:
        xa = [0] * N_EMBD
        for h in range(N_HEAD):
            chans = range(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            # score = q.k / sqrt(4): one floor shift by 13 of the exact dot product
            scores = [sat16(sum(q[j] * self.kc[t][j] for j in chans) >> 13) for t in range(pos + 1)]
            top = max(scores)
            ws = [exp_attn(s - top) for s in scores]
            total = sum(ws) or 1
            for j in chans:
                num = sum(wt * self.vc[t][j] for t, wt in enumerate(ws))
                xa[j] = sat16(trunc_div(num, total))
        return xa


def check_step_args(token: int, pos: int, rng_in: int, tq: int) -> None:
    if not 0 <= token < VOCAB:
        raise ValueError(f"token must be in 0..{VOCAB - 1}, got {token}")
    if not 0 <= pos < BLOCK_SIZE:  # pos >= 16 is undefined in the RTL
        raise ValueError(f"pos must be in 0..{BLOCK_SIZE - 1}, got {pos}")
    if not 0 <= rng_in <= MASK32:
        raise ValueError(f"the RNG state is 32-bit, got {rng_in}")
    if not 0 <= tq <= 0xFFFF:
        raise ValueError(f"the Q8.8 temperature is 16-bit, got {tq}")


# ------------------------------------------------------ generation protocol (§4)


def check_seed(seed: int) -> int:
    """The FPGA's seed: any u32. 0 is legal and a fixed point (every token is 'a')."""
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MASK32:
        raise ValueError(f"the TALOS seed is a 32-bit unsigned integer, got {seed!r}")
    return int(seed)


def run_generation(core: TalosCore, seed: int, tq: int, sample_mode: bool = True) -> list[Step]:
    """One generation as the testbench / board runs it: BOS at pos 0 until BOS or pos 15."""
    steps, token, rng = [], BOS, check_seed(seed)
    for pos in range(BLOCK_SIZE):
        st = core.step(token, pos, rng, pos == 0, tq, sample_mode)
        steps.append(st)
        token, rng = st.token_out, st.rng_out
        if token == BOS:
            break
    return steps


def generate_stream(core: TalosCore, n_tokens: int, seed: int, tq: int,
                    sample_mode: bool = True) -> tuple[list[int], int, int]:
    """The benchmark loop on the core: (tokens, board cycles, final RNG state).

    Names follow each other; each restarts at BOS/pos 0 with the RNG carried on.
    Board cycles are the back-to-back period L(p) + 2 of every step (section 6);
    sample_mode = False is the core's argmax decoding (752 + 20p a step).
    """
    tokens, cycles, rng = [], 0, check_seed(seed)
    for st in iter_steps(core, n_tokens, seed, tq, sample_mode):
        tokens.append(st.token_out)
        cycles += st.cycles + BOARD_EXTRA_CYCLES
        rng = st.rng_out
    return tokens, cycles, rng


def iter_steps(core: TalosCore, n_tokens: int, seed: int, tq: int, sample_mode: bool = True) -> Iterator[Step]:
    """The benchmark loop's core steps one at a time (names back to back, RNG carried on)."""
    token, pos, rng = BOS, 0, check_seed(seed)
    for _ in range(n_tokens):
        st = core.step(token, pos, rng, pos == 0, tq, sample_mode)
        yield st
        rng, token, pos = st.rng_out, st.token_out, pos + 1
        if token == BOS or pos == BLOCK_SIZE:
            token, pos = BOS, 0


def logits_q12(core: TalosCore, tokens: list[int]) -> list[list[int]]:
    """Integer logits of a sequence fed from position 0 (argmax mode: the RNG is irrelevant)."""
    if not 1 <= len(tokens) <= BLOCK_SIZE:
        raise ValueError(f"a probe sequence holds 1..{BLOCK_SIZE} tokens, got {len(tokens)}")
    return [core.step(t, p, 0, p == 0, 128, sample_mode=False).logits for p, t in enumerate(tokens)]


def talos_names(params: Params, seed: int, count: int, temperature: float = 0.5) -> list[str]:
    """The first `count` names the core generates; the first is what the board prints for seed."""
    core, tq, rng, names = TalosCore.from_params(params), temperature_q8_8(temperature), check_seed(seed), []
    for _ in range(count):
        steps = run_generation(core, rng, tq)
        names.append(decode(st.token_out for st in steps))
        rng = steps[-1].rng_out
    return names


# ------------------------------------------------------------- cycle model (§6)


def stream_board_cycles(tokens) -> int:
    """Nominal board cycles (868 + 20*pos per step) of a token stream, by the loop's reset rule.

    Ignores the rare RMS shortcut (-25 cycles); the emulators count it exactly.
    """
    cycles, pos = 0, 0
    for tok in tokens:
        cycles += step_cycles(pos) + BOARD_EXTRA_CYCLES
        pos += 1
        if tok == BOS or pos == BLOCK_SIZE:
            pos = 0
    return cycles


def fpga_rate(n_tokens: int, board_cycles: int, mhz: float = FPGA_MHZ, n_chars: int | None = None,
              sample_mode: bool = True) -> dict:
    """Modelled board throughput for n_tokens that took board_cycles at mhz.

    tokens = every sampled token (BOS included), the benchmark's unit. TALOS-V2's own
    figure counts printed characters (5 for "kelyn" in 5,508 cycles): given n_chars,
    that rate is reported too.
    """
    if board_cycles <= 0 or mhz <= 0:
        raise ValueError("board_cycles and mhz must be positive")
    seconds = board_cycles / (mhz * 1e6)
    out = {"fpga_mhz": mhz, "fpga_cycles": int(board_cycles), "fpga_tokens": int(n_tokens),
           "fpga_tokens_per_s": n_tokens / seconds,
           "fpga_rate_model": (f"cycle model of TALOS-V2's RTL (Verilator-measured): per step "
                               f"{CYCLES_SAMPLE if sample_mode else CYCLES_ARGMAX}+{CYCLES_PER_POS}*pos core cycles, +{BOARD_EXTRA_CYCLES} "
                               f"back to back on the board, -{CYCLES_RMS_SHORTCUT} per RMS shortcut; "
                               f"tokens / (cycles / {mhz} MHz)")}
    if n_chars is not None:
        out["fpga_chars_per_s"] = n_chars / seconds
    return out


def modelled_fpga_rate(tokens, mhz: float = FPGA_MHZ) -> dict:
    """Board tok/s for a token stream from the loop (nominal cycles, see stream_board_cycles)."""
    tokens = list(tokens)
    return fpga_rate(len(tokens), stream_board_cycles(tokens), mhz,
                     n_chars=sum(1 for t in tokens if t != BOS))


# ------------------------------------------------------------ the RTL's vectors


def find_vectors():
    """The RTL reference vectors: $MICROGPT_BENCH_TALOS_VECTORS if set, else the copy shipped
    in the package (data/talos-rtl-vectors.jsonl; provenance in data/README.md)."""
    import os
    from pathlib import Path

    from .weights import shipped_data_path

    env = os.environ.get("MICROGPT_BENCH_TALOS_VECTORS")
    return Path(env) if env else shipped_data_path("talos-rtl-vectors.jsonl")


def check_vectors(core, path) -> tuple[int, int]:
    """(steps checked, steps whose token, RNG state, logits or cycles differ) for a core."""
    import json

    steps = bad = 0
    with open(path) as fh:
        for line in fh:
            vec = json.loads(line)
            got = run_generation(core, vec["seed"], vec["temperature_q8_8"], vec["mode"] == "sample")
            bad += abs(len(got) - len(vec["steps"]))
            for g, w in zip(got, vec["steps"]):
                steps += 1
                bad += (g.token_out, g.rng_out, list(g.logits), g.cycles) != (
                    w["token_out"], w["rng_out"], w["logits"], w["cycles"])
    return steps, bad
