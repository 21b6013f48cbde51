"""pure-python: the float64 reference loop, Karpathy-faithful. The slow baseline."""
from __future__ import annotations

from ..model import BLOCK_SIZE, BOS, reference_forward, reference_logits, softmax
from ..samplers import argmax_onehot, make_sampler
from .base import Backend


class PurePythonBackend(Backend):
    name = "pure-python"
    description = "float64 scalar Python lists, as in Karpathy's microgpt.py"
    precision = "fp64"

    def __init__(self, params, temperature=0.5):
        super().__init__(params, temperature)
        self.w = params.as_lists()

    def logits(self, tokens):
        return reference_logits(self.params, list(tokens))

    def iter_tokens(self, n_tokens, seed, sampler="xorshift32"):
        draw = make_sampler(sampler, seed)
        w, temp = self.w, self.temperature
        tok, pos, keys, values = BOS, 0, [], []
        for _ in range(n_tokens):
            logits = reference_forward(w, tok, pos, keys, values)
            tok = draw(softmax([v / temp for v in logits]) if temp else argmax_onehot(logits).tolist())
            yield tok
            pos += 1
            if tok == BOS or pos == BLOCK_SIZE:
                tok, pos, keys, values = BOS, 0, [], []

    def info(self):
        return {"numeric": "float64 Python floats"}
