"""NumPy float32 backends, BLAS pinned to one thread by the harness.

numpy-simple: the straightforward port (one call per operation, a loop over heads).
numpy:        the same arithmetic in as few NumPy calls as batch 1 allows: fused
              Q/K/V projection, all heads' attention as two matmuls, both norms from
              one dot product, preallocated buffers. Constant factors (1/sqrt(head_dim))
              are folded into the weights once, at load time; nothing depends on the
              token or position, so every token still runs the whole forward pass.
The offline scenario (B streams per call) lives in NumpyBackend.generate_offline.
"""
from __future__ import annotations

import math

import numpy as np

from ..model import BLOCK_SIZE, BOS, HEAD_DIM, N_EMBD, N_HEAD, RMS_EPS, VOCAB
from ..samplers import (check_seed, pick_cumulative, python_uniforms, softmax_t, stream_seed,
                        xorshift32_next)
from .base import Backend


class TokenSampler:
    """Both samplers on a float64 probability vector, one searchsorted per token."""

    def __init__(self, kind: str, seed: int, n_tokens: int):
        check_seed(kind, seed)
        self.kind, self.state = kind, seed
        self.greedy = kind == "argmax"
        self.uniforms = iter(python_uniforms(seed, n_tokens)) if kind == "python" else None

    def __call__(self, probs: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(probs))
        cum = np.cumsum(probs)
        if self.uniforms is None:
            self.state = xorshift32_next(self.state)
            r = (self.state >> 8) * (1.0 / 16777216.0)
        else:
            r = next(self.uniforms) * cum[-1]
        return pick_cumulative(cum, r)


class NumpySimpleBackend(Backend):
    name = "numpy-simple"
    description = "NumPy float32, a straightforward port: one call per operation"

    def __init__(self, params, temperature=0.5):
        super().__init__(params, temperature)
        self.w = {k: v.astype(np.float32) for k, v in params.tensors.items()}

    @staticmethod
    def _rmsnorm(x):
        return x * np.float32((np.mean(x * x) + RMS_EPS) ** -0.5)

    def _forward(self, tok, pos, keys, values):
        w = self.w
        x = self._rmsnorm(w["wte"][tok] + w["wpe"][pos])
        res = x
        x = self._rmsnorm(x)
        q = w["layer0.attn_wq"] @ x
        keys[pos] = w["layer0.attn_wk"] @ x
        values[pos] = w["layer0.attn_wv"] @ x
        out = np.empty(N_EMBD, dtype=np.float32)
        for h in range(N_HEAD):
            s = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            att = keys[: pos + 1, s] @ q[s] / np.float32(math.sqrt(HEAD_DIM))
            att = np.exp(att - att.max())
            att /= att.sum()
            out[s] = att @ values[: pos + 1, s]
        x = w["layer0.attn_wo"] @ out + res
        res = x
        hidden = np.maximum(w["layer0.mlp_fc1"] @ self._rmsnorm(x), 0)
        x = w["layer0.mlp_fc2"] @ hidden + res
        return w["lm_head"] @ x

    def _cache(self):
        return (np.zeros((BLOCK_SIZE, N_EMBD), np.float32), np.zeros((BLOCK_SIZE, N_EMBD), np.float32))

    def _probs(self, logits):
        return softmax_t(logits, self.temperature)

    def logits(self, tokens):
        keys, values = self._cache()
        return np.array([self._forward(t, p, keys, values) for p, t in enumerate(tokens)])

    def iter_tokens(self, n_tokens, seed, sampler="xorshift32"):
        # temperature 0 is greedy decoding: the argmax of the logits, whatever the sampler
        draw = TokenSampler("argmax" if self.temperature == 0 else sampler, seed, n_tokens)
        cache = self._cache()
        forward, probs = self._forward, self._probs
        tok, pos = BOS, 0
        for _ in range(n_tokens):
            tok = draw(probs(forward(tok, pos, *cache)))
            yield tok
            pos += 1
            if tok == BOS or pos == BLOCK_SIZE:
                tok, pos = BOS, 0

    def info(self):
        return {"numpy": np.__version__, "variant": "one call per operation"}


class NumpyBackend(NumpySimpleBackend):
    name = "numpy"
    description = "NumPy float32, fused: fewest calls per token, preallocated buffers"
    scenarios = ("single-stream", "offline", "server")

    def __init__(self, params, temperature=0.5):
        super().__init__(params, temperature)
        w = self.w
        # q rows carry the 1/sqrt(head_dim) attention scale; q, k, v in one matmul.
        self.wqkv = np.concatenate([w["layer0.attn_wq"] / np.float32(math.sqrt(HEAD_DIM)),
                                    w["layer0.attn_wk"], w["layer0.attn_wv"]]).astype(np.float32)
        self.wo, self.fc1, self.fc2, self.head = (w[k] for k in ("layer0.attn_wo", "layer0.mlp_fc1",
                                                                  "layer0.mlp_fc2", "lm_head"))
        self.emb_pos = w["wpe"]
        # block-diagonal query: column h holds head h's 4 query values
        self.qbd = np.zeros((N_EMBD, N_HEAD), np.float32)
        self.qbd_idx = (np.arange(N_EMBD), np.arange(N_EMBD) // HEAD_DIM)
        self.head_of = np.arange(N_EMBD) // HEAD_DIM
        self.exp_safe = scores_cannot_overflow(w["layer0.attn_wq"], w["layer0.attn_wk"])
        self.dims = np.arange(N_EMBD)
        self.inv_t = 1.0 / self.temperature if self.temperature else 1.0  # T = 0: greedy, see iter_tokens

    def _forward(self, tok, pos, kv, _unused=None):
        w = self.w
        x = w["wte"][tok] + self.emb_pos[pos]
        ms = float(x @ x) / N_EMBD
        s1 = (ms + RMS_EPS) ** -0.5
        s2 = (ms * s1 * s1 + RMS_EPS) ** -0.5  # the second norm, of the already-normed x
        res = x * np.float32(s1)
        qkv = self.wqkv @ res
        qkv *= np.float32(s2)
        kv[pos] = qkv[N_EMBD:]
        self.qbd[self.qbd_idx] = qkv[:N_EMBD]
        att = kv[: pos + 1, :N_EMBD] @ self.qbd          # (P, heads)
        att = np.exp(att - att.max(axis=0))
        att /= att.sum(axis=0)
        mixed = att.T @ kv[: pos + 1, N_EMBD:]            # (heads, 16); keep each head's block
        x = self.wo @ mixed[self.head_of, self.dims] + res
        x2 = x * np.float32((float(x @ x) / N_EMBD + RMS_EPS) ** -0.5)
        hidden = self.fc1 @ x2
        np.maximum(hidden, 0, out=hidden)
        x += self.fc2 @ hidden
        return self.head @ x

    def _cache(self):
        return np.zeros((BLOCK_SIZE, 2 * N_EMBD), np.float32), None

    def _probs(self, logits):
        z = logits.astype(np.float64)
        z *= self.inv_t
        e = np.exp(z - z.max())
        return e / e.sum()

    def info(self):
        return {"numpy": np.__version__, "variant": "fused projections, preallocated"}

    # ------------------------------------------------------------ offline
    def generate_offline(self, n_streams, tokens_per_stream, seed, threads=1):
        return offline_generate(self, n_streams, tokens_per_stream, seed)

    def logits_offline(self, sequences):
        return offline_logits(self, sequences)

    def lanes(self, n_lanes: int) -> NumpyLanes:
        """The server scenario's primitive: n_lanes streams stepped together (continuous batching)."""
        return NumpyLanes(self, n_lanes)


# ------------------------------------------------------------------ offline
# B streams advance together, one token each per step; every stream has its own
# position, KV cache and xorshift32 state. Streams at different positions are
# handled with a mask over the 16 cache slots.


# Caches are laid out (stream, head, position, dim) so that scores and mixing are
# batched matmuls ((16x4)@(4x1) and (1x16)@(16x4) per stream and head): about 4x
# faster in NumPy than broadcasting multiplies and summing over the small axis.
MASK = (np.arange(BLOCK_SIZE)[None, :] <= np.arange(BLOCK_SIZE)[:, None]).astype(np.float32)  # row p: slots 0..p
# Softmax without subtracting the max is the same function and saves NumPy's slow
# small-axis max; it is only used when no score can overflow exp(), which a bound
# on the weights proves: |q.k|/2 <= |Wq|_2 |Wk|_2 |x|^2 / 2, with |x|^2 <= 16 after the norms.
EXP_SAFE = 60.0


def scores_cannot_overflow(wq: np.ndarray, wk: np.ndarray) -> bool:
    bound = np.linalg.norm(wq.astype(np.float64), 2) * np.linalg.norm(wk.astype(np.float64), 2) * N_EMBD
    return bound / math.sqrt(HEAD_DIM) < EXP_SAFE


def _offline_step(be, toks, pos, kcache, vcache, lanes=None):
    """One forward for B streams: toks, pos (B,) ints; caches (N,H,16,D). Returns logits (B,27).
    lanes: the cache rows of the B streams (default: all N = B of them, in order)."""
    b = np.arange(len(toks)) if lanes is None else lanes
    x = be.w["wte"][toks] + be.emb_pos[pos]
    ms = np.einsum("bi,bi->b", x, x) / N_EMBD
    s1 = (ms + RMS_EPS) ** -0.5
    s2 = (ms * s1 * s1 + RMS_EPS) ** -0.5
    res = x * s1[:, None]
    qkv = (res @ be.wqkv.T) * s2[:, None]
    kcache[b, :, pos, :] = qkv[:, N_EMBD:2 * N_EMBD].reshape(-1, N_HEAD, HEAD_DIM)
    vcache[b, :, pos, :] = qkv[:, 2 * N_EMBD:].reshape(-1, N_HEAD, HEAD_DIM)
    if lanes is not None:
        kcache, vcache = kcache[lanes], vcache[lanes]  # this step's streams only
    att = (kcache @ qkv[:, :N_EMBD].reshape(-1, N_HEAD, HEAD_DIM, 1))[..., 0]  # (B,H,16)
    if not be.exp_safe:
        att -= att.max(axis=2, keepdims=True)
    att = np.exp(att, out=att)
    att *= MASK[pos][:, None, :]
    att /= att.sum(axis=2, keepdims=True)
    mixed = (att[:, :, None, :] @ vcache).reshape(-1, N_EMBD)  # (B,H,1,D) -> (B,16)
    x = mixed @ be.wo.T + res
    x2 = x * ((np.einsum("bi,bi->b", x, x) / N_EMBD + RMS_EPS) ** -0.5)[:, None]
    x += np.maximum(x2 @ be.fc1.T, 0) @ be.fc2.T
    return x @ be.head.T


def _offline_caches(n):
    shape = (n, N_HEAD, BLOCK_SIZE, HEAD_DIM)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def offline_generate(be, n_streams, tokens_per_stream, seed):
    if n_streams < 1 or tokens_per_stream < 1:
        raise ValueError("streams and tokens per stream must be >= 1")
    state = np.array([stream_seed(seed, i) for i in range(n_streams)], dtype=np.uint32)
    toks = np.full(n_streams, BOS, np.int64)
    pos = np.zeros(n_streams, np.int64)
    kcache, vcache = _offline_caches(n_streams)
    out = np.empty((n_streams, tokens_per_stream), np.int32)
    for step in range(tokens_per_stream):
        toks = sample_streams(_offline_step(be, toks, pos, kcache, vcache), be.temperature, state)
        out[:, step] = toks
        pos += 1
        reset = (toks == BOS) | (pos == BLOCK_SIZE)
        pos[reset] = 0
        toks[reset] = BOS
    return out


def sample_streams(logits, temperature, state):
    """Each stream's next token by the xorshift32 rule; advances `state` (uint32, in place)."""
    cum = np.cumsum(softmax_t(logits, temperature), axis=1)
    state ^= state << np.uint32(13)
    state ^= state >> np.uint32(17)
    state ^= state << np.uint32(5)
    r = (state >> np.uint32(8)).astype(np.float64) / 16777216.0
    return np.minimum((cum[:, :-1] <= r[:, None]).sum(axis=1), VOCAB - 1)


class NumpyLanes:
    """The server scenario's lanes on the offline kernel: n_lanes streams, each with its own
    token, position, KV cache and xorshift32 state; step() advances any subset of them."""

    def __init__(self, be, n_lanes: int):
        if n_lanes < 1:
            raise ValueError(f"n_lanes must be >= 1, got {n_lanes}")
        self.be, self.n_lanes = be, n_lanes
        self.toks = np.full(n_lanes, BOS, np.int64)
        self.pos = np.zeros(n_lanes, np.int64)
        self.state = np.ones(n_lanes, np.uint32)
        self.kcache, self.vcache = _offline_caches(n_lanes)

    def start(self, lane: int, seed: int) -> None:
        # the cache needs no clearing: slots above pos are never read
        self.toks[lane], self.pos[lane], self.state[lane] = BOS, 0, check_seed("xorshift32", seed)

    def step(self, lanes: np.ndarray) -> np.ndarray:
        logits = _offline_step(self.be, self.toks[lanes], self.pos[lanes], self.kcache, self.vcache, lanes)
        state = self.state[lanes]
        new = sample_streams(logits, self.be.temperature, state)
        self.state[lanes] = state
        self.toks[lanes], self.pos[lanes] = new, self.pos[lanes] + 1
        return new


def offline_logits(be, sequences):
    n = len(sequences)
    length = max(len(s) for s in sequences)
    kcache, vcache = _offline_caches(n)
    out = np.zeros((n, length, VOCAB))
    for p in range(length):
        toks = np.array([s[min(p, len(s) - 1)] for s in sequences])
        out[:, p] = _offline_step(be, toks, np.full(n, p), kcache, vcache)
    return [out[i, : len(s)] for i, s in enumerate(sequences)]
