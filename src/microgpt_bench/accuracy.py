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
            "distribution": getattr(backend, "sampling_distribution_name", "softmax(logits / T)")}
