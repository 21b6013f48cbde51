"""Out-of-tree extensions named in an environment variable (inherited by worker processes)."""
from __future__ import annotations

import importlib
import os


def from_env(var: str) -> dict[str, str]:
    """VAR="name=package.module:Class;..." as {name: "package.module:Class"}."""
    found = {}
    for item in os.environ.get(var, "").split(";"):
        if "=" in item:
            name, target = item.split("=", 1)
            found[name.strip()] = target.strip()
    return found


def load(target: str, package: str | None = None):
    """The object "module:Name" names; a module starting with "." is relative to package."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module, package), name)
