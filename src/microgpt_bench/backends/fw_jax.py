"""JAX row: jax-jit, the per-token step under jax.jit with static shapes.

The step (full forward of every stream in the batch, xorshift32 sampler in
uint32, reset rule) has one shape for a given batch size: a fixed 16-slot K/V
cache written through a one-hot position mask and read under a `slot <= pos`
mask. XLA compiles it once per batch size (batches are padded to a power of
two, see _fw_common.bucket); a Python loop calls it once per token, and JAX's
asynchronous dispatch keeps the tokens on the device until the run ends.

One thread: XLA_FLAGS gets --xla_cpu_multi_thread_eigen=false and
intra_op_parallelism_threads=1 before jax is first imported (it cannot change
afterwards; info() says whether the flags were in force). The thread count of
the offline scenario is therefore fixed for the process.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..model import BLOCK_SIZE, BOS, HEAD_DIM, N_EMBD, N_HEAD, RMS_EPS, VOCAB
from ._fw_common import FrameworkBackend, import_framework

ONE_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def _one_thread_env() -> bool:
    """Put the one-thread flags in XLA_FLAGS unless jax is already up; True if they are in force."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" not in sys.modules or sys.modules["jax"] is None:
        missing = [f for f in ONE_THREAD_FLAGS if f.split("=")[0] not in flags]
        if missing:
            os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
        return True
    return all(f in flags for f in ONE_THREAD_FLAGS)


def build_step(jax, jnp, w: dict, temperature: float):
    wte, wpe = w["wte"], w["wpe"]
    wq_t, wk_t, wv_t, wo_t = (w[f"layer0.attn_{n}"].T for n in ("wq", "wk", "wv", "wo"))
    fc1_t, fc2_t, lm_t = w["layer0.mlp_fc1"].T, w["layer0.mlp_fc2"].T, w["lm_head"].T
    # numpy constants: nothing is placed on jax's default device (a GPU where there is one)
    slots = np.arange(BLOCK_SIZE, dtype=np.int32)
    greedy = temperature == 0  # greedy decoding: the lowest index of the max logit
    inv_t = np.float32(1.0 / temperature if temperature else 1.0)
    scale = np.float32(1.0 / HEAD_DIM ** 0.5)
    eps = np.float32(RMS_EPS)

    def rms(x):
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)

    def step(tok, pos, K, V, rng):
        b = tok.shape[0]
        x = rms(wte[tok] + wpe[pos])
        res = x
        x = rms(x)
        q, k, v = x @ wq_t, x @ wk_t, x @ wv_t
        here = (slots[None, :] == pos[:, None])[..., None]                 # (B,16,1)
        K = jnp.where(here, k[:, None, :], K)
        V = jnp.where(here, v[:, None, :], V)
        att = (q.reshape(b, 1, N_HEAD, HEAD_DIM) * K.reshape(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(-1) * scale
        valid = (slots[None, :] <= pos[:, None])[..., None]
        att = jax.nn.softmax(jnp.where(valid, att, -jnp.inf), axis=1)      # (B,16,H)
        out = (att[..., None] * V.reshape(b, BLOCK_SIZE, N_HEAD, HEAD_DIM)).sum(1).reshape(b, N_EMBD)
        x = out @ wo_t + res
        x = jax.nn.relu(rms(x) @ fc1_t) @ fc2_t + x
        logits = x @ lm_t
        cum = jnp.cumsum(jax.nn.softmax(logits * inv_t, axis=-1), axis=-1)
        rng = rng ^ (rng << 13)
        rng = rng ^ (rng >> 17)
        rng = rng ^ (rng << 5)
        r = (rng >> 8).astype(jnp.float32) * np.float32(1.0 / 16777216.0)
        new = jnp.sum(cum[:, :VOCAB - 1] <= r[:, None], axis=-1).astype(jnp.int32)
        if greedy:
            new = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        npos = pos + 1
        reset = (new == BOS) | (npos == BLOCK_SIZE)
        return new, jnp.where(reset, BOS, new), jnp.where(reset, 0, npos), K, V, rng, logits

    return step


class JaxJitBackend(FrameworkBackend):
    name = "jax-jit"
    description = "JAX, CPU, one thread: the per-token step jitted with static shapes (16-slot cache, position mask)"
    framework = "jax"
    framework_module = "jax"
    pad_batches = True

    @classmethod
    def availability(cls) -> str | None:
        _one_thread_env()
        return super().availability()

    def _setup(self) -> None:
        self.flags_in_force = _one_thread_env()
        jax = self.jax = import_framework("jax")
        jnp = self.jnp = import_framework("jax.numpy")
        self.dev = jax.devices("cpu")[0]
        w = {n: jax.device_put(a, self.dev) for n, a in self._weights32().items()}
        self.step = jax.jit(build_step(jax, jnp, w, self.temperature), donate_argnums=(2, 3))
        with jax.default_device(self.dev):
            self._ensure_warm(1)

    def _version(self) -> str:
        import jaxlib
        return f"jax {self.jax.__version__}, jaxlib {jaxlib.__version__}"

    def _device(self) -> str:
        return f"{self.dev.platform}: {self.dev.device_kind}"

    def info(self) -> dict:
        d = super().info()
        d["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        d["one_thread_flags_in_force"] = self.flags_in_force
        d["threads"] = "1 (XLA flags, fixed for the process)" if self.flags_in_force else "XLA default"
        return d

    def _put(self, *arrays):
        """Host arrays onto this row's device (the CPU even where jax has a GPU plugin)."""
        return tuple(self.jax.device_put(a, self.dev) for a in arrays)

    def _state(self, seeds: np.ndarray):
        b = len(seeds)
        return self._put(np.full((b,), BOS, np.int32), np.zeros((b,), np.int32),
                         np.zeros((b, BLOCK_SIZE, N_EMBD), np.float32),
                         np.zeros((b, BLOCK_SIZE, N_EMBD), np.float32), seeds.astype(np.uint32))

    def _warm(self, batch: int) -> None:
        out = self.step(*self._state(np.full(batch, 42, dtype=np.uint32)))
        self.jax.block_until_ready(out)

    def _run(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        with self.jax.default_device(self.dev):
            self._ensure_warm(len(seeds))
        step = self.step
        tok, pos, K, V, rng = self._state(seeds)
        outs = []
        for _ in range(n_tokens):
            new, tok, pos, K, V, rng, _ = step(tok, pos, K, V, rng)
            outs.append(new)
        # one transfer of the whole list (jnp.stack would compile a new n-ary concatenate)
        return np.stack(self.jax.device_get(outs), axis=1)

    def _lane_step(self, tok, pos, K, V, rng):
        t, p, r = self._put(tok.astype(np.int32), pos.astype(np.int32), rng.astype(np.uint32))
        new, nxt, npos, K, V, r, _ = self.step(t, p, K, V, r)
        new, nxt, npos, r = self.jax.device_get((new, nxt, npos, r))
        return new, nxt, npos, K, V, r

    def _new_cache(self):
        return self._put(np.zeros((1, BLOCK_SIZE, N_EMBD), np.float32),
                         np.zeros((1, BLOCK_SIZE, N_EMBD), np.float32))

    def _forward1(self, tok: int, pos: int, cache):
        K, V = cache
        t, p, r = self._put(np.array([tok], np.int32), np.array([pos], np.int32), np.array([1], np.uint32))
        _, _, _, K, V, _, logits = self.step(t, p, K, V, r)
        return np.asarray(logits[0]), (K, V)
