"""Backend registry. Adding a backend: one module in this package, one line here.

Entries are "module:Class" strings so that listing backends imports nothing heavy.
"""
from __future__ import annotations

import importlib
import os
import re

from ..inputs import quote
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
    "wasm-wasmtime": "wasm:WasmtimeBackend",
    "wasm-chromium": "browser:WasmChromiumBackend",
    "js-chromium": "browser:JsChromiumBackend",
}

# what `run` measures by default: every row; unavailable ones say why
DEFAULT_BACKENDS = list(REGISTRY)


class UnknownBackend(ValueError):
    pass


class PluginError(ValueError):
    """A malformed MICROGPT_BENCH_PLUGINS, or a plugin that cannot be imported."""


PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PLUGIN_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def plugins() -> dict[str, str]:
    """Out-of-tree backends: MICROGPT_BENCH_PLUGINS="name=package.module:Class;...".

    Each entry must be well formed, and a plugin may not take a built-in backend's
    name (its rows would pass for the built-in's)."""
    found = {}
    for item in os.environ.get("MICROGPT_BENCH_PLUGINS", "").split(";"):
        if not item.strip():
            continue
        name, eq, target = (part.strip() for part in item.partition("="))
        if not eq or not PLUGIN_NAME.fullmatch(name) or not PLUGIN_TARGET.fullmatch(target):
            raise PluginError(f"MICROGPT_BENCH_PLUGINS: {quote(item)} is not name=package.module:Class")
        if name in REGISTRY:
            raise PluginError(f"MICROGPT_BENCH_PLUGINS: plugin {name!r} would replace the built-in backend "
                              "of that name; give it another name")
        if name in found:
            raise PluginError(f"MICROGPT_BENCH_PLUGINS: plugin {name!r} is named twice")
        found[name] = target
    return found


def known_backends() -> list[str]:
    return [*REGISTRY, *plugins()]


def _plugin_class(name: str, target: str) -> type[Backend]:
    module, cls = target.split(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except Exception as exc:  # a plugin's import may raise anything; it is reported in one line
        raise PluginError(f"plugin {name!r} ({target}) cannot be loaded: {type(exc).__name__}: "
                          f"{quote(str(exc))}") from exc
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise PluginError(f"plugin {name!r} ({target}) is not a Backend subclass")
    return found


def backend_class(name: str) -> type[Backend]:
    extra = plugins()
    if name in extra:
        return _plugin_class(name, extra[name])
    if name not in REGISTRY:
        raise UnknownBackend(f"unknown backend {quote(name)}; known backends: {', '.join(known_backends())}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def parse_backend_list(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] ('all' = every registered backend); unknown names are an error,
    and a name given twice runs once (the first place it is named)."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ["all"]:
        return known_backends()
    unknown = [n for n in names if n not in known_backends()]
    if unknown or not names:
        shown = ", ".join(quote(n) for n in unknown[:5]) or "(none given)"
        raise UnknownBackend(f"unknown backend {shown}; known backends: {', '.join(known_backends())}")
    return names


def availability(name: str) -> str | None:
    """None if the backend can run here, else why not (import errors included)."""
    try:
        return backend_class(name).availability()
    except ImportError as exc:  # an optional framework missing
        return f"import failed: {exc}"
    except PluginError as exc:
        return str(exc)


__all__ = ["REGISTRY", "DEFAULT_BACKENDS", "Backend", "Unavailable", "UnknownBackend", "PluginError",
           "backend_class", "parse_backend_list", "availability", "known_backends"]
