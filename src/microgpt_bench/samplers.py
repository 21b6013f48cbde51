"""The two samplers of the spec, and the per-stream seeding of the offline scenario.

`python`: random.Random(seed); next token = rng.choices(range(27), weights=probs)[0].
  choices() draws one rng.random() u per call and returns the first id whose
  running sum exceeds u * total. Native backends get the same behaviour by being
  handed the u values (see python_uniforms) and applying that rule.
`xorshift32`: the 13/17/5 xorshift on a 32-bit state; r = (x >> 8) / 2**24; the
  first id whose running sum c has r < c, else the last id.
`argmax`: greedy decoding, the lowest index of the maximum logit; no random state.

Temperature 0 is greedy decoding for every float backend (the usual convention, the
T -> 0 limit of softmax(logits / T) with ties going to the lowest index): softmax_t
returns that one-hot distribution, so any sampler drawing from it picks the argmax.
Positive temperatures must lie in [MIN_TEMPERATURE, MAX_TEMPERATURE]: below 1e-3,
logits / T leaves float32's exponent range in the native kernels for no gain (the
result is already greedy to within rounding), so those values are refused, not run.
"""
from __future__ import annotations

import random
from bisect import bisect

import numpy as np

SAMPLERS = ("xorshift32", "python", "argmax")
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1e3
MASK32 = 0xFFFFFFFF


def check_temperature(temperature) -> float:
    """0 (greedy) or a finite value in [MIN_TEMPERATURE, MAX_TEMPERATURE]; else ValueError."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number, got {temperature!r}") from None
    if value == 0.0 or MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        return value
    raise ValueError(f"temperature must be 0 (greedy) or in {MIN_TEMPERATURE:g}..{MAX_TEMPERATURE:g}, "
                     f"got {temperature!r}")


def check_seed(sampler: str, seed: int) -> int:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if sampler == "xorshift32" and not 1 <= seed <= MASK32:
        raise ValueError(f"xorshift32 needs a seed in 1..{MASK32} (0 would stay 0 forever), got {seed}")
    return seed


def xorshift32_next(x: int) -> int:
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x


def argmax_onehot(logits) -> np.ndarray:
    """The greedy distribution: 1 at the lowest index of the maximum, 0 elsewhere."""
    z = np.asarray(logits, np.float64)
    out = np.zeros(z.shape)
    np.put_along_axis(out, np.argmax(z, axis=-1)[..., None], 1.0, axis=-1)
    return out


def softmax_t(logits, temperature: float) -> np.ndarray:
    """softmax(logits / T) in float64 over the last axis: the distribution every sampler draws
    from; at T = 0 the greedy one-hot (argmax_onehot)."""
    if temperature == 0:
        return argmax_onehot(logits)
    z = np.asarray(logits, np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def pick_cumulative(cumulative: np.ndarray, r: float) -> int:
    """First id whose running sum exceeds r, else the last id: pick_xorshift's rule
    (and, with r = u * total, choices()'s) in one searchsorted."""
    return min(int(cumulative.searchsorted(r, side="right")), len(cumulative) - 1)


def pick_xorshift(probs, r: float) -> int:
    c = 0.0
    last = len(probs) - 1
    for i in range(last):
        c += probs[i]
        if r < c:
            return i
    return last


class XorShift32Sampler:
    def __init__(self, seed: int):
        self.state = check_seed("xorshift32", seed)

    def __call__(self, probs) -> int:
        self.state = xorshift32_next(self.state)
        return pick_xorshift(probs, (self.state >> 8) / 16777216.0)


class PythonSampler:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def __call__(self, probs) -> int:
        return self.rng.choices(range(len(probs)), weights=probs)[0]


def argmax_sampler(probs) -> int:
    """Greedy: the lowest index of the maximum (of the logits, or of any monotone map of them)."""
    return int(np.argmax(probs))


def make_sampler(sampler: str, seed: int):
    check_seed(sampler, seed)
    if sampler == "argmax":
        return argmax_sampler
    return XorShift32Sampler(seed) if sampler == "xorshift32" else PythonSampler(seed)


def python_uniforms(seed: int, n: int) -> list[float]:
    """The n values rng.random() returns for random.Random(seed): what choices() draws."""
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def pick_python(cumulative, u: float) -> int:
    """choices()'s rule given the running sums of the weights and its draw u."""
    return bisect(cumulative, u * cumulative[-1], 0, len(cumulative) - 1)


def stream_seed(base_seed: int, stream: int) -> int:
    """Seed of stream i in the offline scenario: murmur3's fmix32 of base + golden*i.

    Stream 0 gets fmix32(base), not base, so that no stream's sequence is a
    shifted copy of another's. A zero result (impossible for xorshift32) maps to 1.
    """
    h = (base_seed + 0x9E3779B9 * stream) & MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h or 1
