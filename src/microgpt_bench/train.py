"""Training microGPT exactly as Karpathy's microgpt.py does, in vectorised NumPy.

The original trains with a scalar autograd engine (one Python object per
number, ~300 s for 1000 steps). This module computes the same float64 numbers
with NumPy arrays and a hand-written backward pass (over 100x faster), processing
all positions of a document at once with a causal mask.

"The same numbers" is meant bit for bit, so the code copies the original's
arithmetic, not just its maths:
  * every sum is a left-to-right running sum (Python's sum() over Values), done
    with np.add.accumulate, never np.sum/matmul (which pair or block the terms);
  * a gradient that several nodes feed is added up in the order the original's
    backward visits those nodes (its reversed depth-first topological order);
    each ordering below is commented where it is used;
  * exp, log and ** go through Python's math/float pow (the C library), as the
    original's do: NumPy's SIMD exp and sqrt, and x*x for x**2, differ from them
    in the last bit for a fraction of inputs;
  * `a / b` on Values is `a * b**-1` in the original, and so it is here.
With that, the float32 cast of the result equals TALOS-V2's weights_only.npy.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .inputs import quote, read_regular_file
from .model import (BLOCK_SIZE, BOS, CHARS, HEAD_DIM, N_EMBD, N_HEAD, RMS_EPS, TALOS_ORDER, TENSOR_SHAPES,
                    Params)

INIT_STD = 0.08
# names.txt is 0.23 MB; a corpus 35 times larger still trains in the same memory class, and
# a cap keeps a symlink to /dev/zero or a huge file from being read at all
MAX_CORPUS_BYTES = 8 << 20
LEARNING_RATE, BETA1, BETA2, EPS_ADAM = 0.01, 0.85, 0.99, 1e-8
ATTN_SCALE = (HEAD_DIM ** 0.5) ** -1  # `/ head_dim**0.5` on a Value multiplies by this (0.5)
INV_N_EMBD = N_EMBD ** -1             # `/ len(x)` in rmsnorm multiplies by this (0.0625)


class TrainingDataError(ValueError):
    """A corpus the model cannot be trained on; the message names the file and line."""


@dataclass
class TrainResult:
    params: Params           # float64 master copies after the last step
    losses: list[float]      # the loss of every step, as the original prints it
    seconds: float           # wall time of the training loop
    rng: random.Random       # the RNG after shuffle + init: the original samples names from it


# ------------------------------------------------------------------ the corpus


def load_docs(path) -> list[str]:
    """The non-empty stripped lines of a one-word-per-line corpus, all in a..z."""
    path = Path(path)
    raw = read_regular_file(path, MAX_CORPUS_BYTES, "corpus (one word a line)", TrainingDataError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(f"{path}: cannot read the corpus ({exc})") from exc
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        bad = next((ch for ch in word if ch not in CHARS), None)
        if bad is not None:
            raise TrainingDataError(f"{path}: line {number}: {quote(word)} holds {bad!r}; "
                                    f"the model's vocabulary is only {CHARS[0]}..{CHARS[-1]}")
        if word:
            docs.append(word)
    if not docs:
        raise TrainingDataError(f"{path}: the corpus holds no words (one word a line expected)")
    return docs


# -------------------------------------------------- the original's arithmetic


def _seqsum(terms: np.ndarray, axis: int) -> np.ndarray:
    """Left-to-right running sum along axis: ((t0 + t1) + t2) + ..., like sum() over Values."""
    return np.add.accumulate(terms, axis=axis).take(-1, axis=axis)


def _pypow(a: np.ndarray, exponent: float) -> np.ndarray:
    """Elementwise `x ** exponent` with Python's float pow (the C library's pow)."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([x ** exponent for x in a.ravel().tolist()]).reshape(a.shape)


def _pyexp(a: np.ndarray) -> np.ndarray:
    return np.array([math.exp(x) for x in a.ravel().tolist()]).reshape(a.shape)


def _linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(T, in) -> (T, out): each output is sum(w[o][j] * x[j]) over j, left to right."""
    return _seqsum(w[None, :, :] * x[:, None, :], 2)


def _weight_grad(x: np.ndarray, g_out: np.ndarray) -> np.ndarray:
    """dW[o][j]: one term per position, visited from the last position to the first.

    The original's backward handles position n-1's nodes first (position t's nodes
    are first reached through loss t, and the DFS reaches loss 0 first).
    """
    return _seqsum((g_out[:, :, None] * x[:, None, :])[::-1], 0)


def _input_grad(w: np.ndarray, g_out: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """dx[j] = sum over rows o of w[o][j] * g_out[o], in `order` (default: last row first).

    order holds one row order per position (T, rows). The default holds wherever
    the consumer's rows are first visited in row order, so backward meets them last-first.
    """
    terms = g_out[:, :, None] * w[None, :, :]
    if order is None:
        terms = terms[:, ::-1]
    else:
        terms = np.take_along_axis(terms, order[:, :, None], axis=1)
    return _seqsum(terms, 1)


# ----------------------------------------------------------------- rmsnorm


def _rmsnorm(x: np.ndarray):
    """x * (sum(x*x) * (1/16) + 1e-5) ** -0.5, row by row; returns (y, d, scale)."""
    d = _seqsum(x * x, 1) * INV_N_EMBD + RMS_EPS
    scale = _pypow(d, -0.5)
    return x * scale[:, None], d, scale


def _rmsnorm_back(x, d, scale, g_y, g_earlier=None):
    """Gradient of x through y = rmsnorm(x), after g_earlier (a residual's) if given.

    x[j] is fed by, in backward order: the residual add (g_earlier), y[j] = x[j]*scale,
    then twice by x[j]*x[j] inside the mean square. scale is fed by y[15] .. y[0]
    (the y's are first visited in index order).
    """
    g_scale = _seqsum((x * g_y)[:, ::-1], 1)
    g_d = (-0.5 * _pypow(d, -1.5)) * g_scale      # local grad of ** -0.5, times upstream
    g_sq = (INV_N_EMBD * g_d)[:, None]            # through `* (1/16)`, then the sum's adds
    g_x = scale[:, None] * g_y
    if g_earlier is not None:
        g_x = g_earlier + g_x
    return (g_x + x * g_sq) + x * g_sq


# --------------------------------------------------------------- attention


def _heads(a: np.ndarray) -> np.ndarray:
    """(T, 16) -> (heads, T, head_dim)."""
    return a.reshape(a.shape[0], N_HEAD, HEAD_DIM).transpose(1, 0, 2)


def _merge_heads(a: np.ndarray) -> np.ndarray:
    return a.transpose(1, 0, 2).reshape(a.shape[1], N_EMBD)


def _attention(q, k, v):
    """Causal attention for all positions at once: query p sees keys 0..p (the KV cache)."""
    Q, K, V = _heads(q), _heads(k), _heads(v)
    causal = np.tri(q.shape[0], dtype=bool)                       # [query p, key t]: t <= p
    logits = _seqsum(Q[:, :, None, :] * K[:, None, :, :], 3) * ATTN_SCALE
    top = np.where(causal, logits, -np.inf).max(axis=2, keepdims=True)
    e = np.zeros_like(logits)
    e[:, causal] = _pyexp((logits - top)[:, causal])
    total = _seqsum(e, 2)                     # masked e are 0 and come last: adding them is exact
    inv = _pypow(total, -1)
    w = e * inv[..., None]
    out = _seqsum(w[..., None] * V[:, None, :, :], 2)
    cache = {"Q": Q, "K": K, "V": V, "e": e, "total": total, "inv": inv, "w": w, "causal": causal}
    return _merge_heads(out), cache


def _attention_back(c: dict, g_out: np.ndarray):
    """Gradients of q, k, v (each (T, 16)) from the gradient of the attention output."""
    Q, K, V, e, w = c["Q"], c["K"], c["V"], c["e"], c["w"]
    gO = _heads(g_out)
    # w[p, t] feeds the head's 4 outputs; they are visited last-first (j = 3..0).
    g_w = _seqsum(V[:, None, :, ::-1] * gO[:, :, None, ::-1], 3)
    # `e_t / total` builds its own `total ** -1` node for every t, so total gets one
    # term per key, keys p..0, each the pow's local grad times that node's gradient.
    local = -_pypow(c["total"], -2)
    g_total = _seqsum((local[..., None] * (e * g_w))[:, :, ::-1], 2)
    g_e = c["inv"][..., None] * g_w + g_total[..., None]
    g_dot = ATTN_SCALE * np.where(c["causal"], e * g_e, 0.0)
    # q at query p is fed by the dots of keys p..0; k and v at key t by queries n-1..t
    # (later positions' nodes are handled first). Masked terms are exact zeros.
    g_q = _seqsum((K[:, None, :, :] * g_dot[..., None])[:, :, ::-1], 2)
    g_k = _seqsum((Q[:, :, None, :] * g_dot[..., None])[:, ::-1], 1)
    g_v = _seqsum((w[..., None] * gO[:, :, None, :])[:, ::-1], 1)
    return _merge_heads(g_q), _merge_heads(g_k), _merge_heads(g_v)


def _qkv_row_order(n: int) -> np.ndarray:
    """Backward order of the q/k/v rows (stacked q 0-15, k 16-31, v 32-47) feeding x.

    Head by head (last head first), the original first visits q's 4 rows, then k's,
    then v's -- except at position 0, where the one dot product alternates q and k
    rows. Backward runs that in reverse.
    """
    later, first = [], []
    for h in reversed(range(N_HEAD)):
        rows = [4 * h + j for j in reversed(range(HEAD_DIM))]
        later += [2 * N_EMBD + r for r in rows] + [N_EMBD + r for r in rows] + rows
        first += [2 * N_EMBD + r for r in rows] + [x for r in rows for x in (N_EMBD + r, r)]
    return np.array([first] + [later] * (n - 1))


# -------------------------------------------------------- the output and loss


def _loss_and_logit_grad(logits: np.ndarray, targets: np.ndarray):
    """Mean cross-entropy and its gradient w.r.t. the logits (T, 27)."""
    n, rows = len(targets), np.arange(len(targets))
    e = _pyexp(logits - logits.max(axis=1, keepdims=True))
    total = _seqsum(e, 1)
    inv = _pypow(total, -1)
    p = e[rows, targets] * inv
    neg_log_p = -np.array([math.log(x) for x in p.tolist()])
    loss = float(_seqsum(neg_log_p, 0) * (1 / n))      # `(1/n) * sum(losses)`
    g_p = (1.0 / p) * (-1 * (1 / n))                     # through log, then `* -1`
    g_total = -_pypow(total, -2) * (e[rows, targets] * g_p)
    g_e = np.repeat(g_total[:, None], e.shape[1], axis=1)
    g_e[rows, targets] = inv * g_p + g_total             # the target's exp also feeds p
    return loss, e * g_e


def _lm_head_row_order(targets: np.ndarray) -> np.ndarray:
    """The target's logit row is visited first (via its probability), then rows 0..26."""
    return np.array([[i for i in reversed(range(BOS + 1)) if i != t] + [t] for t in targets])


# ------------------------------------------------------------ forward/backward


def _forward(w: dict, inputs: np.ndarray):
    """Logits (T, 27) for tokens at positions 0..T-1, and what the backward pass needs."""
    x0 = w["wte"][inputs] + w["wpe"][:len(inputs)]
    x1, d1, s1 = _rmsnorm(x0)
    x2, d2, s2 = _rmsnorm(x1)                   # the second norm is in the original
    q, k, v = (_linear(x2, w[f"layer0.attn_w{c}"]) for c in "qkv")
    att, att_cache = _attention(q, k, v)
    x3 = _linear(att, w["layer0.attn_wo"]) + x1
    x4, d3, s3 = _rmsnorm(x3)
    pre = _linear(x4, w["layer0.mlp_fc1"])
    hidden = np.maximum(pre, 0.0)
    x5 = _linear(hidden, w["layer0.mlp_fc2"]) + x3
    cache = {"inputs": inputs, "norms": [(x0, d1, s1), (x1, d2, s2), (x3, d3, s3)],
             "x2": x2, "att": att, "att_cache": att_cache, "x4": x4, "pre": pre,
             "hidden": hidden, "x5": x5}
    return _linear(x5, w["lm_head"]), cache


def _backward(w: dict, c: dict, g_logits: np.ndarray, targets: np.ndarray) -> dict:
    """The gradient of every tensor, from the logits' gradient, layer by layer back."""
    (x0, d1, s1), (x1, d2, s2), (x3, d3, s3) = c["norms"]
    fc1, fc2, wo = w["layer0.mlp_fc1"], w["layer0.mlp_fc2"], w["layer0.attn_wo"]
    qkv = [f"layer0.attn_w{ch}" for ch in "qkv"]
    g = {"lm_head": _weight_grad(c["x5"], g_logits)}
    g_x5 = _input_grad(w["lm_head"], g_logits, _lm_head_row_order(targets))
    g["layer0.mlp_fc2"] = _weight_grad(c["hidden"], g_x5)
    g_pre = (c["pre"] > 0).astype(np.float64) * _input_grad(fc2, g_x5)
    g["layer0.mlp_fc1"] = _weight_grad(c["x4"], g_pre)
    g_x3 = _rmsnorm_back(x3, d3, s3, _input_grad(fc1, g_pre), g_earlier=g_x5)
    g["layer0.attn_wo"] = _weight_grad(c["att"], g_x3)
    g_qkv = _attention_back(c["att_cache"], _input_grad(wo, g_x3))
    for name, g_out in zip(qkv, g_qkv):
        g[name] = _weight_grad(c["x2"], g_out)
    order = _qkv_row_order(len(targets))
    g_x2 = _input_grad(np.vstack([w[n] for n in qkv]), np.hstack(g_qkv), order)
    g_x1 = _rmsnorm_back(x1, d2, s2, g_x2, g_earlier=g_x3)
    g_x0 = _rmsnorm_back(x0, d1, s1, g_x1)
    g["wpe"] = np.zeros_like(w["wpe"])
    g["wpe"][:len(targets)] = g_x0
    g["wte"] = np.zeros_like(w["wte"])
    for pos in reversed(range(len(targets))):   # a repeated letter: last position first
        g["wte"][c["inputs"][pos]] += g_x0[pos]
    return g


def _loss_and_grads(w: dict, tokens: list[int]):
    """One document ([BOS] + ids + [BOS]): its loss and the gradient of every tensor."""
    n = min(BLOCK_SIZE, len(tokens) - 1)
    inputs, targets = np.array(tokens[:n]), np.array(tokens[1:n + 1])
    logits, cache = _forward(w, inputs)
    loss, g_logits = _loss_and_logit_grad(logits, targets)
    return loss, _backward(w, cache, g_logits, targets)


# ----------------------------------------------------------------- training


def _encode(doc: str) -> list[int]:
    bad = next((ch for ch in doc if ch not in CHARS), None)
    if bad is not None or not doc:
        raise TrainingDataError(f"document {doc!r}: every document must be a non-empty word in a..z")
    return [BOS] + [CHARS.index(ch) for ch in doc] + [BOS]


def _init_params(rng: random.Random) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """gauss(0, 0.08) tensor by tensor in TALOS order, row by row: one flat vector + views."""
    sizes = [r * c for r, c in TENSOR_SHAPES.values()]
    flat = np.array([rng.gauss(0, INIT_STD) for _ in range(sum(sizes))])
    views, at = {}, 0
    for name, size in zip(TALOS_ORDER, sizes):
        views[name] = flat[at:at + size].reshape(TENSOR_SHAPES[name])
        at += size
    return flat, views


def train(docs, steps: int = 1000, seed: int = 42,
          progress: Callable[[int, float], None] | None = None) -> TrainResult:
    """Karpathy's microgpt.py training: shuffle, init, `steps` Adam steps, one doc each.

    progress(step, loss) is called after every step, step counting from 1.
    The result is identical to the original for a corpus that uses all 26 letters
    (the original sizes its vocabulary from the corpus; this model's is fixed).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    docs = list(docs)
    if not docs:
        raise TrainingDataError("no documents to train on")
    tokens = [_encode(doc) for doc in docs]
    rng = random.Random(seed)      # the original seeds the global RNG: the same stream
    order = list(range(len(docs)))
    rng.shuffle(order)             # shuffling indices draws exactly as shuffling the docs
    flat, views = _init_params(rng)
    m, v = np.zeros_like(flat), np.zeros_like(flat)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        loss, grads = _loss_and_grads(views, tokens[order[step % len(order)]])
        g = np.concatenate([grads[name].ravel() for name in TALOS_ORDER])
        # Adam as the original writes it, term by term; ** through Python's pow.
        lr = LEARNING_RATE * (1 - step / steps)
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * _pypow(g, 2)
        m_hat = m / (1 - BETA1 ** (step + 1))
        v_hat = v / (1 - BETA2 ** (step + 1))
        flat -= lr * m_hat / (_pypow(v_hat, 0.5) + EPS_ADAM)
        losses.append(loss)
        if progress is not None:
            progress(step + 1, loss)
    seconds = time.perf_counter() - start
    params = Params({name: views[name].copy() for name in TALOS_ORDER})
    return TrainResult(params=params, losses=losses, seconds=seconds, rng=rng)


def training_manifest(data_path, steps: int, seed: int, result: TrainResult) -> dict:
    """How a shipped weight file was made, for the .npz manifest."""
    raw = read_regular_file(data_path, MAX_CORPUS_BYTES, "corpus (one word a line)", TrainingDataError)
    digest = hashlib.sha256(raw).hexdigest()
    return {"made_by": "microgpt-bench train", "data_sha256": digest, "steps": steps,
            "seed": seed, "final_loss": result.losses[-1], "seconds": round(result.seconds, 3)}
