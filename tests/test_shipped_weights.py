"""The shipped default weights are what the trainer makes from names.txt."""
import numpy as np

from microgpt_bench.train import load_docs, train
from microgpt_bench.weights import load_weights_with_manifest


def test_shipped_weights_are_the_trainers_output(shared_data):
    shipped, manifest = load_weights_with_manifest(None)
    assert manifest["data_sha256"] == "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
    assert manifest["steps"] == 1000 and manifest["seed"] == 42
    fresh = train(load_docs(shared_data / "names.txt")).params
    # The trainer fixes its summation order and uses Python's own exp/log/pow, so the
    # float32 cast is reproducible exactly; allow one float32 ulp in case another CPU's
    # libm rounds a transcendental differently.
    a, b = shipped.flat(), fresh.flat()
    assert np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)) <= 2 ** -23
    assert int(np.sum(a != b)) <= 4


def test_shipped_weights_equal_talos_v2(shared_data):
    shipped, _ = load_weights_with_manifest(None)
    talos, _ = load_weights_with_manifest(shared_data / "talos" / "weights_only.npy")
    assert np.array_equal(shipped.flat(), talos.flat())
