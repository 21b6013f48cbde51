"""The float64 reference generation loop the backend tests compare tokens against."""
from __future__ import annotations

from microgpt_bench import model, samplers


def reference_tokens(params, sampler, seed, n_names=None, n_tokens=None):
    """model.reference_forward + the spec's samplers, until n_names names or n_tokens tokens."""
    w = params.as_lists()
    draw = samplers.make_sampler(sampler, seed)
    out, tok, pos, keys, values, names = [], model.BOS, 0, [], [], 0
    while (n_names is not None and names < n_names) or (n_tokens is not None and len(out) < n_tokens):
        logits = model.reference_forward(w, tok, pos, keys, values)
        new = draw(model.softmax([v / model.DEFAULT_TEMPERATURE for v in logits]))
        out.append(new)
        pos += 1
        if new == model.BOS or pos == model.BLOCK_SIZE:
            tok, pos, keys, values, names = model.BOS, 0, [], [], names + 1
        else:
            tok = new
    return out
