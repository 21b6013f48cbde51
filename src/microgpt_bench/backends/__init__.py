"""Backend registry. Adding a backend: one module in this package, one line here.

Entries are "module:Class" strings so that listing backends imports nothing heavy.
"""
from __future__ import annotations

from ..plugins import from_env, load
from .base import Backend, Unavailable

REGISTRY: dict[str, str] = {
    "pure-python": "pure_python:PurePythonBackend",
    "numpy-simple": "numpy_backend:NumpySimpleBackend",
    "numpy": "numpy_backend:NumpyBackend",
    "c-fp32": "c_native:CFp32Backend",
    "c-q412": "c_native:CQ412Backend",
    "talos-emu": "talos_emu:TalosEmuBackend",
    "talos-emu-py": "talos_emu:TalosEmuPyBackend",
    "numba": "fw_numba:NumbaBackend",
    "torch-eager": "fw_torch:TorchEagerBackend",
    "torch-compile": "fw_torch:TorchCompileBackend",
    "torch-cuda": "fw_torch:TorchCudaBackend",
    "jax-jit": "fw_jax:JaxJitBackend",
    "mlx-cpu": "fw_mlx:MlxCpuBackend",
    "mlx-gpu": "fw_mlx:MlxGpuBackend",
    "cuda-naive": "cuda:CudaNaiveBackend",
    "cuda-graph": "cuda:CudaGraphBackend",
    "cuda-persistent": "cuda:CudaPersistentBackend",
    "cuda-offline": "cuda:CudaOfflineBackend",
}

# what `run` measures by default: every row; unavailable ones say why
DEFAULT_BACKENDS = list(REGISTRY)


class UnknownBackend(ValueError):
    pass


def plugins() -> dict[str, str]:
    """Out-of-tree backends: MICROGPT_BENCH_PLUGINS="name=package.module:Class;..."."""
    return from_env("MICROGPT_BENCH_PLUGINS")


def known_backends() -> list[str]:
    return [*REGISTRY, *plugins()]


def backend_class(name: str) -> type[Backend]:
    extra = plugins()
    if name in extra:
        return load(extra[name])
    if name not in REGISTRY:
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {', '.join(known_backends())}")
    return load("." + REGISTRY[name], __name__)


def parse_backend_list(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] ('all' = every registered backend); unknown names are an error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return known_backends()
    unknown = [n for n in names if n not in known_backends()]
    if unknown or not names:
        raise UnknownBackend(f"unknown backend {', '.join(map(repr, unknown)) or '(none given)'}; "
                             f"known backends: {', '.join(known_backends())}")
    return names


def availability(name: str) -> str | None:
    """None if the backend can run here, else why not (import errors included)."""
    try:
        return backend_class(name).availability()
    except ImportError as exc:  # an optional framework missing
        return f"import failed: {exc}"


__all__ = ["REGISTRY", "DEFAULT_BACKENDS", "Backend", "Unavailable", "UnknownBackend",
           "backend_class", "parse_backend_list", "availability", "known_backends"]
