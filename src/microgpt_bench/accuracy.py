"""Accuracy next to speed (the MLPerf idea): how far each backend's next-token
distribution is from the float64 model's, over a fixed set of contexts.

Contexts: the names of a 2,000-step float64 reference generation (xorshift32,
seed 42, the run's temperature), every position of every name. For each step:
  p = softmax(reference_logits / T)           the model's distribution
  q = backend.sampling_distribution(logits)   what the backend's sampler draws from
                                              (softmax(logits/T) for float backends;
                                              TALOS's interpolated weight table for talos-emu)
  KL(p || q), and whether inverse-CDF sampling with the same uniform draw r picks a
  different token from p than from q.
The sampler that actually runs is checked too (sampler_check): the backend's own
generation loop (a native backend's C sampler included), at the run's temperature,
xorshift32 seed 42; each token it drew must be the one the spec's rule picks from
the backend's own logits (float64 softmax at T, same draw r). A sampler that breaks
at some temperature (float32 overflow of logits / T) shows here even when its
logits, and so KL and the differing-token share above, are fine.
Both p and q are floored at 2**-24 (and renormalised) before the KL: every sampler
here draws with 24-bit resolution, so a smaller probability cannot be told from
zero, and the floor keeps a zero in q (TALOS's table has them) from making the
divergence infinite. Flooring both keeps KL(p || p) exactly 0.
"""
from __future__ import annotations

import numpy as np

from .model import BLOCK_SIZE, BOS, Params, reference_forward, softmax
from .samplers import XorShift32Sampler, pick_cumulative, softmax_t, xorshift32_next

STEPS = 2000
Q_FLOOR = 2.0 ** -24


def describe() -> str:
    """What the accuracy figures are, in the words the report prints."""
    return (f"Over a fixed {STEPS:,}-step float64 reference generation: the KL divergence from the model's "
            "softmax(logits/T) to the distribution each backend's sampler draws from, and the share of steps "
            "where the same uniform draw picks a different token.")


def reference_contexts(params: Params, temperature: float, steps: int = STEPS, seed: int = 42):
    """(sequences, reference logits per sequence): the reference generation split into names."""
    w = params.as_lists()
    draw = XorShift32Sampler(seed)
    sequences, logits, seq, rows, keys, values = [], [], [BOS], [], [], []
    for _ in range(steps):
        row = reference_forward(w, seq[-1], len(seq) - 1, keys, values)
        rows.append(row)
        tok = draw(softmax([v / temperature for v in row]) if temperature else softmax_t(row, 0).tolist())
        if tok == BOS or len(seq) == BLOCK_SIZE:
            sequences.append(seq)
            logits.append(np.array(rows))
            seq, rows, keys, values = [BOS], [], [], []
        else:
            seq.append(tok)
    if rows:  # the unfinished last name: only the positions already run
        sequences.append(seq[: len(rows)])
        logits.append(np.array(rows))
    return sequences, logits


def uniform_draws(n: int, seed: int = 42) -> np.ndarray:
    x, out = seed, np.empty(n)
    for i in range(n):
        x = xorshift32_next(x)
        out[i] = (x >> 8) / 16777216.0
    return out


def kl_floored(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.maximum(p, Q_FLOOR), np.maximum(q, Q_FLOOR)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * (np.log(p) - np.log(q))))


def expected_pick(logits: np.ndarray, r: float, temperature: float) -> int:
    """The spec's xorshift32 pick for one position: softmax(logits / T) in float64, draw r."""
    return pick_cumulative(np.cumsum(softmax_t(logits, temperature)), r)


def generation_contexts(tokens: list[int]):
    """(first step, tokens fed, tokens drawn) per name of a generated stream, with the
    generation loop's reset rule (a name ends on BOS or at the 16th position)."""
    start, drawn = 0, []
    for step, tok in enumerate(tokens):
        drawn.append(tok)
        if tok == BOS or len(drawn) == BLOCK_SIZE or step == len(tokens) - 1:
            yield start, [BOS] + drawn[:-1], drawn
            start, drawn = step + 1, []


def sampler_check(backend, temperature: float, steps: int = STEPS, seed: int = 42) -> dict | None:
    """Share of the tokens the backend's own sampler drew that differ from the spec's pick
    on the backend's own logits with the same draw. None for a backend without xorshift32
    (talos-emu: its sampler is the core's, held bit-exact by its gate)."""
    if "xorshift32" not in backend.samplers:
        return None
    tokens = [int(t) for t in backend.generate(steps, seed, "xorshift32")]
    draws = uniform_draws(len(tokens), seed)
    differ = 0
    for start, fed, drawn in generation_contexts(tokens):
        got = np.asarray(backend.logits(fed), np.float64)
        differ += sum(expected_pick(got[j], draws[start + j], temperature) != tok for j, tok in enumerate(drawn))
    return {"steps": len(tokens), "differs_share": differ / max(1, len(tokens)),
            "method": f"the backend's own xorshift32 generation at T = {temperature:g}, seed {seed}, "
                      "vs the spec's pick from its own logits"}


def measure_accuracy(backend, sequences, reference_logits, temperature: float) -> dict:
    """Mean / max KL(p || q) and the share of differing sampled tokens over every context."""
    kls, differ = [], 0
    draws = uniform_draws(sum(len(s) for s in sequences))
    step = 0
    for seq, ref in zip(sequences, reference_logits):
        got = np.asarray(backend.logits(seq), np.float64)
        for pos in range(len(seq)):
            p = softmax_t(ref[pos], temperature)
            q = backend.sampling_distribution(got[pos])
            kls.append(kl_floored(p, q))
            differ += pick_cumulative(np.cumsum(p), draws[step]) != pick_cumulative(np.cumsum(q), draws[step])
            step += 1
    return {"steps": step, "mean_kl": float(np.mean(kls)), "max_kl": float(np.max(kls)),
            "token_differs_share": differ / step,
            "distribution": getattr(backend, "sampling_distribution_name", "softmax(logits / T)"),
            # the temperature the backend itself runs at (0 for a greedy run's float backends)
            "sampler": sampler_check(backend, getattr(backend, "temperature", temperature))}
