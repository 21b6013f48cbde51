"""Numba row: the whole generation loop, forward pass and xorshift32 sampler
included, written as plain Python loops and compiled with @njit (float32,
no fastmath: Python syntax at compiled speed).

Single-stream runs one stream's loop; the offline scenario runs each stream's
own loop (its own position, cache, resets and sampler state) over the streams,
with numba.prange across `threads` threads when threads > 1. numba is imported
lazily, and the functions are compiled when the backend is built (the time is
reported in info() as warm-up, not counted in tokens/s).
"""
from __future__ import annotations

import numpy as np

from ..model import BLOCK_SIZE, BOS, HEAD_DIM, N_EMBD, N_HEAD, N_HIDDEN, RMS_EPS, VOCAB
from ._fw_common import FrameworkBackend, import_framework

_KERNELS: dict = {}   # compiled once per process: {"forward": ..., "run": ..., "run_parallel": ...}


def _define(numba) -> dict:
    """The njit functions, defined here so that numba is imported only when they are needed."""
    f32 = np.float32
    EPS = f32(RMS_EPS)
    SCALE = f32(1.0 / HEAD_DIM ** 0.5)
    R24 = f32(1.0 / 16777216.0)
    M32 = np.uint32(0xFFFFFFFF)
    njit = numba.njit(cache=False, fastmath=False, nogil=True)

    @njit
    def rms(x, out):
        ss = f32(0.0)
        for i in range(x.shape[0]):
            ss += x[i] * x[i]
        s = f32(1.0) / np.sqrt(ss / f32(x.shape[0]) + EPS)
        for i in range(x.shape[0]):
            out[i] = x[i] * s

    @njit
    def matvec(w, x, out):
        for i in range(w.shape[0]):
            acc = f32(0.0)
            for j in range(w.shape[1]):
                acc += w[i, j] * x[j]
            out[i] = acc

    @njit
    def forward(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, tok, pos, K, V, logits):
        """One token at `pos`; writes K[pos], V[pos] and the 27 logits."""
        x0 = np.empty(N_EMBD, np.float32)
        x = np.empty(N_EMBD, np.float32)
        xn = np.empty(N_EMBD, np.float32)
        q = np.empty(N_EMBD, np.float32)
        att_out = np.empty(N_EMBD, np.float32)
        o = np.empty(N_EMBD, np.float32)
        hid = np.empty(N_HIDDEN, np.float32)
        att = np.empty(BLOCK_SIZE, np.float32)
        for i in range(N_EMBD):
            x0[i] = wte[tok, i] + wpe[pos, i]
        rms(x0, x)            # x is the residual
        rms(x, xn)
        matvec(wq, xn, q)
        matvec(wk, xn, K[pos])
        matvec(wv, xn, V[pos])
        for h in range(N_HEAD):
            base = h * HEAD_DIM
            mx_ = f32(-np.inf)
            for t in range(pos + 1):
                a = f32(0.0)
                for d in range(HEAD_DIM):
                    a += q[base + d] * K[t, base + d]
                a *= SCALE
                att[t] = a
                if a > mx_:
                    mx_ = a
            tot = f32(0.0)
            for t in range(pos + 1):
                e = np.exp(att[t] - mx_)
                att[t] = e
                tot += e
            for d in range(HEAD_DIM):
                acc = f32(0.0)
                for t in range(pos + 1):
                    acc += att[t] * V[t, base + d]
                att_out[base + d] = acc / tot
        matvec(wo, att_out, o)
        for i in range(N_EMBD):
            x[i] += o[i]
        rms(x, xn)
        matvec(fc1, xn, hid)
        for i in range(N_HIDDEN):
            if hid[i] < f32(0.0):
                hid[i] = f32(0.0)
        matvec(fc2, hid, o)
        for i in range(N_EMBD):
            x[i] += o[i]
        matvec(lm, x, logits)

    @njit
    def pick(logits, inv_t, state):
        """The next token (greedy at inv_t 0: the lowest index of the max logit, else the
        xorshift32 draw) and the sampler's new state; overwrites logits."""
        if inv_t == f32(0.0):
            new = 0
            for j in range(1, VOCAB):
                if logits[j] > logits[new]:
                    new = j
            return new, state
        m = logits[0] * inv_t
        for j in range(1, VOCAB):
            z = logits[j] * inv_t
            if z > m:
                m = z
        tot = f32(0.0)
        for j in range(VOCAB):
            e = np.exp(logits[j] * inv_t - m)
            logits[j] = e
            tot += e
        state ^= (state << np.uint32(13)) & M32
        state ^= state >> np.uint32(17)
        state ^= (state << np.uint32(5)) & M32
        r = f32(state >> np.uint32(8)) * R24
        c = f32(0.0)
        new = VOCAB - 1
        for j in range(VOCAB - 1):
            c += logits[j] / tot
            if r < c:
                new = j
                break
        return new, state

    @njit
    def step_lanes(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, inv_t, tok, pos, K, V, rng, new):
        """One step of every lane (the server's lanes): forward, draw, reset rule; in place."""
        logits = np.empty(VOCAB, np.float32)
        for b in range(tok.shape[0]):
            forward(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, tok[b], pos[b], K[b], V[b], logits)
            t, s = pick(logits, inv_t, np.uint32(rng[b]))
            new[b], rng[b] = t, s
            pos[b] += 1
            if t == BOS or pos[b] == BLOCK_SIZE:
                tok[b], pos[b] = BOS, 0
            else:
                tok[b] = t

    @njit
    def run_stream(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, inv_t, seed, out):
        """The generation loop of one stream, xorshift32 sampler, out.shape[0] tokens."""
        K = np.zeros((BLOCK_SIZE, N_EMBD), np.float32)
        V = np.zeros((BLOCK_SIZE, N_EMBD), np.float32)
        logits = np.empty(VOCAB, np.float32)
        state = np.uint32(seed)
        tok = BOS
        pos = 0
        for i in range(out.shape[0]):
            forward(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, tok, pos, K, V, logits)
            new, state = pick(logits, inv_t, state)
            out[i] = new
            pos += 1
            if new == BOS or pos == BLOCK_SIZE:
                tok = BOS
                pos = 0          # the stale cache rows are overwritten before they are read
            else:
                tok = new

    def make_run(parallel: bool):
        @numba.njit(parallel=parallel, nogil=True)
        def run(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, inv_t, seeds, out):
            for s in numba.prange(seeds.shape[0]):
                run_stream(wte, wpe, wq, wk, wv, wo, fc1, fc2, lm, inv_t, seeds[s], out[s])
        return run

    return {"forward": forward, "run": make_run(False), "make_run": make_run, "step_lanes": step_lanes}


class NumbaBackend(FrameworkBackend):
    name = "numba"
    description = "Numba @njit: the whole generation loop (forward, softmax, xorshift32) compiled, float32"
    framework = "numba"
    framework_module = "numba"

    def _setup(self) -> None:
        numba = self.numba = import_framework("numba")
        if not _KERNELS:
            _KERNELS.update(_define(numba))
        self.k = _KERNELS
        w = self._weights32()
        self.w = tuple(w[n] for n in ("wte", "wpe", "layer0.attn_wq", "layer0.attn_wk",
                                      "layer0.attn_wv", "layer0.attn_wo", "layer0.mlp_fc1",
                                      "layer0.mlp_fc2", "lm_head"))
        # inv_t = 0 tells the kernel to decode greedily (temperature 0)
        self.inv_t = np.float32(1.0 / self.temperature if self.temperature else 0.0)
        self._ensure_warm("serial")

    def _version(self) -> str:
        import llvmlite
        return f"numba {self.numba.__version__}, llvmlite {llvmlite.__version__}"

    def info(self) -> dict:
        d = super().info()
        d["threading_layer"] = self._threading_layer()
        return d

    def _threading_layer(self) -> str:
        try:
            return self.numba.threading_layer()
        except Exception:  # no parallel function has run yet
            return "not started"

    def _kernel(self):
        if self.threads > 1:
            if "run_parallel" not in self.k:
                self.k["run_parallel"] = self.k["make_run"](True)
            self.numba.set_num_threads(min(self.threads, self.numba.config.NUMBA_NUM_THREADS))
            return self.k["run_parallel"]
        return self.k["run"]

    def _set_threads(self, threads: int) -> None:
        self.threads = max(1, int(threads))

    def _warm(self, variant: str) -> None:
        # the batch size does not matter to numba: what compiles is the serial or the prange kernel
        key = ("warm", variant)
        if key in self.k:   # compiled by an earlier instance in this process
            return
        self._kernel()(*self.w, self.inv_t, np.full(1, 42, np.uint32), np.empty((1, 1), np.int64))
        if variant == "serial":
            logits = np.empty(VOCAB, np.float32)
            self.k["forward"](*self.w, BOS, 0, *self._new_cache(), logits)
        self.k[key] = True

    def _run(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        self._ensure_warm("parallel" if self.threads > 1 else "serial")
        out = np.empty((len(seeds), n_tokens), np.int64)
        self._kernel()(*self.w, self.inv_t, seeds.astype(np.uint32), out)
        return out

    def _state(self, seeds: np.ndarray):
        b = len(seeds)
        return (np.full(b, BOS, np.int64), np.zeros(b, np.int64), np.zeros((b, BLOCK_SIZE, N_EMBD), np.float32),
                np.zeros((b, BLOCK_SIZE, N_EMBD), np.float32), seeds.astype(np.uint32))

    def _lane_step(self, tok, pos, K, V, rng):
        tok, pos, rng = tok.copy(), pos.copy(), rng.astype(np.uint32)
        new = np.empty(len(tok), np.int64)
        self.k["step_lanes"](*self.w, self.inv_t, tok, pos, K, V, rng, new)
        return new, tok, pos, K, V, rng

    def _new_cache(self):
        return (np.zeros((BLOCK_SIZE, N_EMBD), np.float32), np.zeros((BLOCK_SIZE, N_EMBD), np.float32))

    def _forward1(self, tok: int, pos: int, cache):
        K, V = cache
        logits = np.empty(VOCAB, np.float32)
        self.k["forward"](*self.w, tok, pos, K, V, logits)
        return logits, (K, V)
