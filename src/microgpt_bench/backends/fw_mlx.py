"""MLX rows: mlx-cpu and mlx-gpu, the batched step under mx.compile on one device.

MLX is lazy: each token's step is compiled once per batch size (mx.compile,
static shapes: a 16-slot K/V cache with a position mask) and evaluated with
mx.eval before the next token is fed, so every token runs the whole forward
pass. The xorshift32 sampler runs in uint32 on the device. On Linux x86-64 the
PyPI wheel `mlx[cpu]` has the CPU device only; mlx-gpu needs Apple silicon
(Metal) or the CUDA build of MLX, and says so when it is missing.
"""
from __future__ import annotations

import numpy as np

from ..model import BLOCK_SIZE, BOS, HEAD_DIM, N_EMBD, N_HEAD, RMS_EPS, VOCAB
from ._fw_common import FrameworkBackend, import_framework
from .base import Unavailable


def build_step(mx, w: dict, temperature: float):
    wte, wpe = w["wte"], w["wpe"]
    wq_t, wk_t, wv_t, wo_t = (w[f"layer0.attn_{n}"].T for n in ("wq", "wk", "wv", "wo"))
    fc1_t, fc2_t, lm_t = w["layer0.mlp_fc1"].T, w["layer0.mlp_fc2"].T, w["lm_head"].T
    slots = mx.arange(BLOCK_SIZE, dtype=mx.int32)
    greedy = temperature == 0  # greedy decoding: the lowest index of the max logit
    inv_t = 1.0 / temperature if temperature else 1.0
    scale = 1.0 / HEAD_DIM ** 0.5
    mask32 = mx.array(0xFFFFFFFF, dtype=mx.uint32)

    def rms(x):
        return x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)

    def step(tok, pos, K, V, rng):
        b = tok.shape[0]
        x = rms(wte[tok] + wpe[pos])
        res = x
        x = rms(x)
        q, k, v = x @ wq_t, x @ wk_t, x @ wv_t
        here = mx.expand_dims(slots[None, :] == pos[:, None], -1)         # (B,16,1)
        K = mx.where(here, mx.expand_dims(k, 1), K)
        V = mx.where(here, mx.expand_dims(v, 1), V)
        att = (q.reshape(b, 1, N_HEAD, HEAD_DIM) * K.reshape(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(-1) * scale
        valid = mx.expand_dims(slots[None, :] <= pos[:, None], -1)
        att = mx.softmax(mx.where(valid, att, -float("inf")), axis=1)     # (B,16,H)
        out = (mx.expand_dims(att, -1) * V.reshape(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(1).reshape(b, N_EMBD)
        x = out @ wo_t + res
        x = mx.maximum(rms(x) @ fc1_t, 0.0) @ fc2_t + x
        logits = x @ lm_t
        cum = mx.cumsum(mx.softmax(logits * inv_t, axis=-1), axis=-1)
        rng = rng ^ ((rng << 13) & mask32)
        rng = rng ^ (rng >> 17)
        rng = rng ^ ((rng << 5) & mask32)
        r = (rng >> 8).astype(mx.float32) * (1.0 / 16777216.0)
        new = mx.sum(cum[:, :VOCAB - 1] <= r[:, None], axis=-1).astype(mx.int32)
        if greedy:
            new = mx.argmax(logits, axis=-1).astype(mx.int32)
        npos = pos + 1
        reset = (new == BOS) | (npos == BLOCK_SIZE)
        return (new, mx.where(reset, BOS, new).astype(mx.int32),
                mx.where(reset, 0, npos).astype(mx.int32), K, V, rng, logits)

    return step


class MlxCpuBackend(FrameworkBackend):
    name = "mlx-cpu"
    description = "MLX on its CPU device: the batched step under mx.compile, evaluated every token"
    framework = "mlx"
    framework_module = "mlx.core"
    device_kind = "cpu"

    def _setup(self) -> None:
        mx = self.mx = import_framework("mlx.core", "mlx")
        self.device = mx.Device(mx.gpu if self.device_kind == "gpu" else mx.cpu)
        self.stream = mx.new_stream(self.device)
        with mx.stream(self.stream):
            w = {n: mx.array(a) for n, a in self._weights32().items()}
            mx.eval(list(w.values()))
        self.step = mx.compile(build_step(mx, w, self.temperature))
        self._ensure_warm(1)

    def _version(self) -> str:
        import importlib.metadata as md
        try:
            return md.version("mlx")
        except md.PackageNotFoundError:
            return getattr(self.mx, "__version__", "?")

    def _device(self) -> str:
        return str(self.device)

    def info(self) -> dict:
        d = super().info()
        d["threads"] = "MLX's own (not settable)"
        d["compile"] = "mx.compile(step); first compile of a shape builds C++ kernels, cached on disk by MLX"
        return d

    def _state(self, seeds: np.ndarray):
        mx, b = self.mx, len(seeds)
        st = (mx.full((b,), BOS, dtype=mx.int32), mx.zeros((b,), dtype=mx.int32),
              mx.zeros((b, BLOCK_SIZE, N_EMBD), dtype=mx.float32),
              mx.zeros((b, BLOCK_SIZE, N_EMBD), dtype=mx.float32),
              mx.array(seeds.astype(np.uint32), dtype=mx.uint32))
        mx.eval(st)
        return st

    def _warm(self, batch: int) -> None:
        mx = self.mx
        with mx.stream(self.stream):
            mx.eval(self.step(*self._state(np.full(batch, 42, dtype=np.uint32))))

    def _run(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        self._ensure_warm(len(seeds))
        mx, step = self.mx, self.step
        with mx.stream(self.stream):
            tok, pos, K, V, rng = self._state(seeds)
            outs = []
            for _ in range(n_tokens):
                new, tok, pos, K, V, rng, _ = step(tok, pos, K, V, rng)
                mx.eval(new, tok, pos, K, V, rng)   # every token evaluated before the next is fed
                outs.append(new)
            res = mx.stack(outs, axis=1)
            mx.eval(res)
        return np.array(res)

    def _lane_step(self, tok, pos, K, V, rng):
        mx = self.mx
        with mx.stream(self.stream):
            new, nxt, npos, K, V, r, _ = self.step(mx.array(tok.astype(np.int32)), mx.array(pos.astype(np.int32)), K, V,
                                                   mx.array(rng.astype(np.uint32), dtype=mx.uint32))
            mx.eval(new, nxt, npos, K, V, r)
        return np.array(new), np.array(nxt), np.array(npos), K, V, np.array(r)

    def _new_cache(self):
        mx = self.mx
        with mx.stream(self.stream):
            return (mx.zeros((1, BLOCK_SIZE, N_EMBD), dtype=mx.float32),
                    mx.zeros((1, BLOCK_SIZE, N_EMBD), dtype=mx.float32))

    def _forward1(self, tok: int, pos: int, cache):
        mx = self.mx
        K, V = cache
        with mx.stream(self.stream):
            _, _, _, K, V, _, logits = self.step(mx.array([tok], dtype=mx.int32),
                                                 mx.array([pos], dtype=mx.int32), K, V,
                                                 mx.array([1], dtype=mx.uint32))
            mx.eval(logits, K, V)
        return np.array(logits[0]), (K, V)


class MlxGpuBackend(MlxCpuBackend):
    name = "mlx-gpu"
    description = "MLX on its GPU device (Metal on Apple silicon, or MLX's CUDA build): the same compiled step"
    device_kind = "gpu"
    device = "metal"  # Apple silicon; MLX's CUDA build would want the NVIDIA meter

    @classmethod
    def _device_reason(cls, mx) -> None:
        ok = False
        try:
            ok = bool(mx.is_available(mx.gpu)) if hasattr(mx, "is_available") else False
        except Exception:
            ok = False
        if not ok:
            try:
                mx.eval(mx.ones(1, stream=mx.gpu) + 1)
                ok = True
            except Exception as exc:
                raise Unavailable(f"MLX has no GPU device here ({exc}); mlx-gpu needs Apple silicon "
                                  "(Metal) or MLX's CUDA build (pip install 'mlx[cuda]') "
                                  "with an NVIDIA GPU") from None
