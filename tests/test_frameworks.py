"""The Python-framework rows (torch, jax, mlx, numba): each test runs where its framework is installed.

Checks, per available backend: the fp32 correctness gate (1e-4 of the float64
reference), the first 200 xorshift32 names of seed 42 token for token against
the float64 reference loop, the python sampler's first names, and the offline
scenario's stream i equal to a single-stream run seeded with stream_seed(seed, i).
Without the framework the backend must say why, not crash (checked everywhere
by hiding the module).
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from microgpt_bench import model, samplers
from microgpt_bench.backends import _fw_common
from microgpt_bench.backends.base import Unavailable
from reference_loop import reference_tokens

# name -> (module in backends, class, framework module to importorskip)
BACKENDS = {
    "torch-eager": ("fw_torch", "TorchEagerBackend", "torch"),
    "torch-compile": ("fw_torch", "TorchCompileBackend", "torch"),
    "torch-cuda": ("fw_torch", "TorchCudaBackend", "torch"),
    "jax-jit": ("fw_jax", "JaxJitBackend", "jax"),
    "mlx-cpu": ("fw_mlx", "MlxCpuBackend", "mlx.core"),
    "mlx-gpu": ("fw_mlx", "MlxGpuBackend", "mlx.core"),
    "numba": ("fw_numba", "NumbaBackend", "numba"),
}
N_NAMES = 200
SEED = 42
PROBES = [[model.BOS], [model.BOS] + model.encode("emma"),
          [model.BOS] + model.encode("abcdefghijklmno")]   # 16 tokens: the whole context


def backend_cls(name):
    module, cls, _ = BACKENDS[name]
    return getattr(importlib.import_module(f"microgpt_bench.backends.{module}"), cls)


@pytest.fixture(scope="module")
def params(shared_data):
    from microgpt_bench.weights import load_weights
    return load_weights(shared_data / "talos" / "weights_only.npy")


@pytest.fixture(scope="module")
def ref_xorshift(params):
    return reference_tokens(params, "xorshift32", SEED, n_names=N_NAMES)


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request, params):
    name = request.param
    pytest.importorskip(BACKENDS[name][2])
    cls = backend_cls(name)
    reason = cls.availability()
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    b = cls(params)
    yield b
    b.close()


def test_gate(backend, params):
    for probe in PROBES:
        got = backend.logits(probe)
        assert got.shape == (len(probe), model.VOCAB)
        np.testing.assert_allclose(got, model.reference_logits(params, probe), rtol=0, atol=1e-4)


def test_xorshift_names_match_reference(backend, ref_xorshift):
    got = backend.generate(len(ref_xorshift), SEED, "xorshift32")
    assert got == ref_xorshift
    names = model.names_from_tokens(got)
    assert len(names) == N_NAMES
    assert backend.timed_generate(len(ref_xorshift), SEED) == sum(ref_xorshift)


def test_python_sampler_matches_reference(backend, params):
    ref = reference_tokens(params, "python", SEED, n_tokens=120)
    got = backend.generate(120, SEED, "python")
    assert got == ref
    assert model.names_from_tokens(got)[:2] == ["kana", "keelan"]


@pytest.mark.parametrize("n_streams", [1, 3, 8])
def test_offline_streams_equal_single_stream(backend, n_streams):
    tps = 40   # crosses at least one reset in every stream
    got = backend.generate_offline(n_streams, tps, 7, threads=1)
    assert got.shape == (n_streams, tps)
    for i in range(n_streams):
        assert list(got[i]) == backend.generate(tps, samplers.stream_seed(7, i), "xorshift32"), i
    assert backend.timed_offline(n_streams, tps, 7) == int(got.sum())


def test_info_reports_versions_and_times(backend):
    info = backend.info()
    assert info["framework"] and info["version"] and info["device"]
    assert info["warmup_seconds"] >= 0
    # the import is timed once per process; None only when something imported it first
    assert info["import_seconds"] == _fw_common.IMPORT_SECONDS[backend.framework_module]
    assert info["import_seconds"] is None or info["import_seconds"] >= 0


def test_numba_offline_threads(params):
    pytest.importorskip("numba")
    b = backend_cls("numba")(params)
    got = b.generate_offline(5, 30, 11, threads=2)
    for i in range(5):
        assert list(got[i]) == b.generate(30, samplers.stream_seed(11, i)), i


@pytest.mark.parametrize("name", list(BACKENDS))
def test_unavailable_reason_when_framework_missing(name, monkeypatch, params):
    """With the framework hidden, availability() gives a reason and the constructor raises it."""
    module = BACKENDS[name][2]
    cls = backend_cls(name)
    monkeypatch.setitem(sys.modules, module, None)      # `import module` now fails
    if "." in module:
        monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    reason = cls.availability()
    assert isinstance(reason, str) and "not installed" in reason and "pip install" in reason
    with pytest.raises(Unavailable, match="not installed"):
        cls(params)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_availability_never_raises(name):
    reason = backend_cls(name).availability()
    assert reason is None or (isinstance(reason, str) and reason)


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_torch_has_cuda(), reason="CUDA is present: torch-cuda is available here (next test)")
def test_gpu_rows_say_why_without_a_gpu():
    pytest.importorskip("torch")
    assert "CUDA" in backend_cls("torch-cuda").availability()


@pytest.mark.skipif(not _torch_has_cuda(), reason="no CUDA device: torch-cuda is unavailable here (test above)")
def test_gpu_row_is_available_with_a_gpu():
    assert backend_cls("torch-cuda").availability() is None


def test_bucket():
    assert [_fw_common.bucket(n, 1024) for n in (1, 2, 3, 8, 9, 64, 65, 1024, 5000)] == \
        [1, 8, 8, 8, 16, 64, 128, 1024, 1024]
