"""microGPT: the model's shape, its parameters, and the float64 reference forward.

The reference forward is deliberately written the way Karpathy's microgpt.py
writes it: plain Python lists of floats, one scalar at a time. Every other
backend is checked against it (see harness.correctness_gate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VOCAB = 27
BOS = 26
N_EMBD = 16
N_HEAD = 4
HEAD_DIM = 4
N_HIDDEN = 64
BLOCK_SIZE = 16
CHARS = "abcdefghijklmnopqrstuvwxyz"
RMS_EPS = 1e-5
DEFAULT_TEMPERATURE = 0.5

# name -> shape, in the TALOS-V2 export order (also the training init order).
TENSOR_SHAPES: dict[str, tuple[int, int]] = {
    "wte": (VOCAB, N_EMBD),
    "wpe": (BLOCK_SIZE, N_EMBD),
    "lm_head": (VOCAB, N_EMBD),
    "layer0.attn_wq": (N_EMBD, N_EMBD),
    "layer0.attn_wk": (N_EMBD, N_EMBD),
    "layer0.attn_wv": (N_EMBD, N_EMBD),
    "layer0.attn_wo": (N_EMBD, N_EMBD),
    "layer0.mlp_fc1": (N_HIDDEN, N_EMBD),
    "layer0.mlp_fc2": (N_EMBD, N_HIDDEN),
}
TALOS_ORDER = list(TENSOR_SHAPES)
C_ORDER = ["wte", "wpe", "layer0.attn_wq", "layer0.attn_wk", "layer0.attn_wv",
           "layer0.attn_wo", "layer0.mlp_fc1", "layer0.mlp_fc2", "lm_head"]
FLAT_ORDERS = {"talos": TALOS_ORDER, "c": C_ORDER}
N_PARAMS = sum(r * c for r, c in TENSOR_SHAPES.values())  # 4192


@dataclass(frozen=True)
class Params:
    """The 9 weight tensors, float64 master copies, keyed by TENSOR_SHAPES names."""

    tensors: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def flat(self, order: str = "c", dtype=np.float32) -> np.ndarray:
        """All 4,192 values in one of the two flat orders (see FLAT_ORDERS)."""
        return np.concatenate([self.tensors[n].ravel() for n in FLAT_ORDERS[order]]).astype(dtype)

    def as_lists(self) -> dict[str, list[list[float]]]:
        return {n: t.astype(np.float64).tolist() for n, t in self.tensors.items()}


def encode(name: str) -> list[int]:
    return [CHARS.index(ch) for ch in name]


def decode(tokens) -> str:
    return "".join(CHARS[t] for t in tokens if t != BOS)


def names_from_tokens(tokens) -> list[str]:
    """Split a generated token stream into names with the generation loop's reset rule.

    A name ends when BOS is sampled or when the 16th position has been used.
    A trailing unfinished name is dropped.
    """
    names, current, pos = [], [], 0
    for tok in tokens:
        pos += 1
        if tok == BOS or pos == BLOCK_SIZE:
            if tok != BOS:
                current.append(tok)
            names.append(decode(current))
            current, pos = [], 0
        else:
            current.append(tok)
    return names


# ---------------------------------------------------------------- reference


def _linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def _rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + RMS_EPS) ** -0.5
    return [xi * scale for xi in x]


def softmax(logits):
    m = max(logits)
    exps = [math.exp(v - m) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def reference_forward(w, tok: int, pos: int, keys: list, values: list) -> list[float]:
    """One token through the model, float64, plain lists (w from Params.as_lists()).

    keys/values are the layer's KV cache: lists of per-position vectors, appended to here.
    """
    x = [t + p for t, p in zip(w["wte"][tok], w["wpe"][pos])]
    x = _rmsnorm(x)
    res = x
    x = _rmsnorm(x)  # the second norm is in the original model
    q = _linear(x, w["layer0.attn_wq"])
    keys.append(_linear(x, w["layer0.attn_wk"]))
    values.append(_linear(x, w["layer0.attn_wv"]))
    out = []
    for h in range(N_HEAD):
        s = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        qh = q[s]
        att = [sum(a * b for a, b in zip(qh, k[s])) / math.sqrt(HEAD_DIM) for k in keys]
        wts = softmax(att)
        out.extend(sum(wt * v[s][j] for wt, v in zip(wts, values)) for j in range(HEAD_DIM))
    x = [a + b for a, b in zip(_linear(out, w["layer0.attn_wo"]), res)]
    res = x
    x = _rmsnorm(x)
    hidden = [max(0.0, v) for v in _linear(x, w["layer0.mlp_fc1"])]
    x = [a + b for a, b in zip(_linear(hidden, w["layer0.mlp_fc2"]), res)]
    return _linear(x, w["lm_head"])


def reference_logits(params: Params, tokens: list[int]) -> np.ndarray:
    """Logits (len(tokens), 27) for a sequence fed from position 0, float64."""
    if not 1 <= len(tokens) <= BLOCK_SIZE:
        raise ValueError(f"a probe sequence holds 1..{BLOCK_SIZE} tokens, got {len(tokens)}")
    w = params.as_lists()
    keys, values = [], []
    return np.array([reference_forward(w, t, p, keys, values) for p, t in enumerate(tokens)])
