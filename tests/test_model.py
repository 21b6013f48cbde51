"""The float64 reference forward against values worked out by hand, and the name rules."""
import math

import numpy as np
import pytest

from microgpt_bench.model import (BOS, N_PARAMS, TENSOR_SHAPES, Params, encode, names_from_tokens,
                                  reference_logits)


def zero_params(**overrides):
    tensors = {n: np.zeros(s) for n, s in TENSOR_SHAPES.items()}
    tensors.update(overrides)
    return Params(tensors)


def test_parameter_count():
    assert N_PARAMS == 4192


def test_embedding_norm_and_head_by_hand():
    # Attention and MLP outputs are zero (wo = fc2 = 0), so logits = lm_head @ rmsnorm(wte + wpe).
    wte = np.zeros((27, 16)); wte[BOS, 0] = 3.0
    wpe = np.zeros((16, 16)); wpe[0, 1] = 4.0
    head = np.zeros((27, 16)); head[0, 0] = 1.0; head[1, 1] = 1.0; head[2, 0] = 2.0
    logits = reference_logits(zero_params(wte=wte, wpe=wpe, lm_head=head), [BOS])
    scale = (25 / 16 + 1e-5) ** -0.5  # mean of 3^2 + 4^2 over 16 dims
    assert logits[0, 0] == pytest.approx(3 * scale, rel=1e-12)
    assert logits[0, 1] == pytest.approx(4 * scale, rel=1e-12)
    assert logits[0, 2] == pytest.approx(6 * scale, rel=1e-12)
    assert np.all(logits[0, 3:] == 0)


def test_attention_averages_values_when_queries_are_zero():
    # wq = 0: every score is 0, so softmax is uniform and the head output is the mean of v.
    wte = np.zeros((27, 16)); wte[0, 0] = 1.0; wte[1, 0] = -1.0
    eye = np.eye(16)
    head = np.zeros((27, 16)); head[0, 0] = 1.0
    p = zero_params(wte=wte, **{"layer0.attn_wv": eye, "layer0.attn_wo": eye}, lm_head=head)
    logits = reference_logits(p, [0, 1])
    # x = rmsnorm(+-e0) = +-4 e0 (approx); the second norm keeps it; v = x.
    n1 = (1 / 16 + 1e-5) ** -0.5            # first norm of +-e0
    n2 = ((n1 * n1) / 16 + 1e-5) ** -0.5    # second norm of the normed vector
    v0, v1 = n1 * n2, -n1 * n2
    assert logits[0, 0] == pytest.approx(n1 + v0, rel=1e-12)            # one position: out = v0
    assert logits[1, 0] == pytest.approx(-n1 + (v0 + v1) / 2, rel=1e-12)  # mean of v0, v1 = 0


def test_attention_scores_scaled_by_sqrt_head_dim():
    # Position 0 sees input e0, position 1 sees e1 (wpe[1] = e1 - e0). Both normalise to c * axis.
    # Head 0: q0 = c at both; k0 = 0.1c then 0.2c; v0 = +c then -c. At position 1 the scores
    # are (c * 0.1c) / 2 and (c * 0.2c) / 2, and logit 0 = (w0 - w1) * c.
    wte = np.zeros((27, 16)); wte[0, 0] = 1.0
    wpe = np.zeros((16, 16)); wpe[1, 0] = -1.0; wpe[1, 1] = 1.0
    wq = np.zeros((16, 16)); wq[0, 0] = wq[0, 1] = 1.0
    wk = np.zeros((16, 16)); wk[0, 0] = 0.1; wk[0, 1] = 0.2
    wv = np.zeros((16, 16)); wv[0, 0] = 1.0; wv[0, 1] = -1.0
    head = np.zeros((27, 16)); head[0, 0] = 1.0
    p = zero_params(wte=wte, wpe=wpe, lm_head=head, **{"layer0.attn_wq": wq, "layer0.attn_wk": wk,
                                                        "layer0.attn_wv": wv, "layer0.attn_wo": np.eye(16)})
    out = reference_logits(p, [0, 0])
    n1 = (1 / 16 + 1e-5) ** -0.5
    c = n1 * (n1 * n1 / 16 + 1e-5) ** -0.5
    s0, s1 = c * 0.1 * c / 2, c * 0.2 * c / 2
    w1 = math.exp(s1) / (math.exp(s0) + math.exp(s1))
    assert out[0, 0] == pytest.approx(n1 + c, rel=1e-12)
    assert out[1, 0] == pytest.approx((1 - 2 * w1) * c, rel=1e-9)


def test_names_from_tokens_resets_on_bos_and_block_size():
    tokens = encode("ab") + [BOS] + [0] * 16 + encode("c") + [BOS] + [1]
    assert names_from_tokens(tokens) == ["ab", "a" * 16, "c"]


def test_probe_longer_than_block_is_refused():
    with pytest.raises(ValueError):
        reference_logits(zero_params(), [BOS] * 17)
