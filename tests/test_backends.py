"""Every registered backend through the correctness gate, and the samplers' names."""
import numpy as np
import pytest

from microgpt_bench.backends import REGISTRY, availability, backend_class
from microgpt_bench.harness import PROBE
from microgpt_bench.model import names_from_tokens, reference_logits
from microgpt_bench.samplers import XorShift32Sampler, check_seed, python_uniforms, stream_seed
from microgpt_bench.weights import load_weights
from microgpt_bench.worker import correctness_gate

README_NAMES = ["kana", "keelan", "alilan", "ariel", "cairi", "mayan", "kenia", "akalen", "danyli", "man"]


@pytest.fixture(scope="module")
def talos(shared_data):
    return load_weights(shared_data / "talos" / "weights_only.npy")


@pytest.fixture(scope="module")
def reference(talos):
    return [reference_logits(talos, seq) for seq in PROBE]


def make(name, params):
    reason = availability(name)
    if reason:
        pytest.skip(f"{name} unavailable here: {reason}")
    return backend_class(name)(params, 0.5)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backend_passes_the_gate(name, talos, reference):
    backend = make(name, talos)
    gate = correctness_gate(backend, PROBE, reference, "single-stream")
    assert gate["passed"], gate
    assert gate["positions"] == sum(len(s) for s in PROBE)


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if "offline" in backend_class(n).scenarios))
def test_offline_kernels_pass_the_gate(name, talos, reference):
    backend = make(name, talos)
    assert correctness_gate(backend, PROBE, reference, "offline")["passed"]


@pytest.mark.parametrize("name", ["pure-python", "numpy-simple", "numpy"])
def test_python_sampler_gives_the_original_readme_names(name, talos):
    backend = make(name, talos)
    assert names_from_tokens(backend.generate(150, 42, "python"))[:10] == README_NAMES


def test_xorshift_names_agree_across_python_backends(talos):
    n_tokens = 2000  # > 200 names at ~6 tokens a name
    ref = names_from_tokens(make("pure-python", talos).generate(n_tokens, 42, "xorshift32"))
    assert len(ref) >= 200
    for name in ("numpy-simple", "numpy"):
        got = names_from_tokens(make(name, talos).generate(n_tokens, 42, "xorshift32"))
        assert got[:200] == ref[:200], name


def test_numpy_offline_streams_equal_single_stream_runs(talos):
    backend = make("numpy", talos)
    for n in (1, 5, 17):
        out = backend.generate_offline(n, 60, 7)
        for i in range(n):
            assert list(out[i]) == backend.generate(60, stream_seed(7, i)), (n, i)


def test_a_wrong_backend_fails_the_gate(talos, reference):
    backend = make("numpy", talos)
    original = backend.logits
    backend.logits = lambda toks: original(toks) + 1e-3
    assert not correctness_gate(backend, PROBE, reference, "single-stream")["passed"]


def test_xorshift32_sequence_and_seed_rules():
    s = XorShift32Sampler(42)
    s(np.full(27, 1 / 27))
    x = 42
    x ^= (x << 13) & 0xFFFFFFFF; x ^= x >> 17; x ^= (x << 5) & 0xFFFFFFFF
    assert s.state == x == 11355432
    with pytest.raises(ValueError, match="xorshift32 needs a seed"):
        check_seed("xorshift32", 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        check_seed("mersenne", 1)


def test_xorshift_picks_last_id_when_sum_falls_short():
    s = XorShift32Sampler(1)
    assert s([0.0] * 27) == 26


def test_python_uniforms_are_what_choices_draws():
    import random
    rng = random.Random(5)
    weights = [1.0] * 27
    picks = [rng.choices(range(27), weights=weights)[0] for _ in range(50)]
    assert picks == [int(u * 27) for u in python_uniforms(5, 50)]


def test_stream_seeds_are_distinct_and_nonzero():
    seeds = {stream_seed(42, i) for i in range(10000)}
    assert len(seeds) == 10000 and 0 not in seeds
