"""Backend registry. Adding a backend: one module in this package, one line here.

Entries are "module:Class" strings so that listing backends imports nothing heavy.
"""
from __future__ import annotations

import importlib
import os

from .base import Backend, Unavailable

REGISTRY: dict[str, str] = {
    "pure-python": "pure_python:PurePythonBackend",
    "numpy-simple": "numpy_backend:NumpySimpleBackend",
    "numpy": "numpy_backend:NumpyBackend",
    "talos-emu": "talos_emu:TalosEmuBackend",
    "talos-emu-py": "talos_emu:TalosEmuPyBackend",
}

DEFAULT_BACKENDS = ["pure-python", "numpy-simple", "numpy"]


class UnknownBackend(ValueError):
    pass


def plugins() -> dict[str, str]:
    """Out-of-tree backends: MICROGPT_BENCH_PLUGINS="name=package.module:Class;..."."""
    found = {}
    for item in os.environ.get("MICROGPT_BENCH_PLUGINS", "").split(";"):
        if "=" in item:
            name, target = item.split("=", 1)
            found[name.strip()] = target.strip()
    return found


def known_backends() -> list[str]:
    return [*REGISTRY, *plugins()]


def backend_class(name: str) -> type[Backend]:
    extra = plugins()
    if name in extra:
        module, cls = extra[name].split(":")
        return getattr(importlib.import_module(module), cls)
    if name not in REGISTRY:
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {', '.join(known_backends())}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


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
