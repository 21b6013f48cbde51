"""Scenario registry. Adding a scenario: one module in this package, one line here.

A scenario is an object (see base.Scenario) that owns everything the layers
above the backends used to decide by testing its name: which backends can run
it, the shape of its job, its calibration unit, its gate, its timed window, its
table label and its result fields. The harness, worker, table, report and CLI
ask the object. Out-of-tree scenarios:
MICROGPT_BENCH_SCENARIOS="name=package.module:Class;..." (the worker processes
inherit the variable, so a plugin runs end to end without touching the harness).
"""
from __future__ import annotations

from ..plugins import from_env, load
from .base import Scenario

REGISTRY: dict[str, str] = {
    "single-stream": "single_stream:SingleStream",
    "offline": "offline:Offline",
    "server": "server:Server",
}

DEFAULT = "single-stream"   # the scenario of a row that names none (old results files)
SWEEP = "offline"           # what `sweep` varies streams and threads of
BOTH = "both"               # the CLI's word for the two throughput scenarios
BOTH_SCENARIOS = ("single-stream", "offline")  # server runs only when asked (a search, not a window)


def plugins() -> dict[str, str]:
    return from_env("MICROGPT_BENCH_SCENARIOS")


def known() -> list[str]:
    return [*REGISTRY, *plugins()]


_CACHE: dict[str, Scenario] = {}


def get(name: str | None) -> Scenario:
    """The scenario object called `name` (None: the default); ValueError if unknown."""
    name = name or DEFAULT
    if name not in _CACHE:
        extra = plugins()
        if name in extra:
            cls = load(extra[name])
        elif name in REGISTRY:
            cls = load("." + REGISTRY[name], __name__)
        else:
            raise ValueError(f"--scenario must be one of {', '.join(known())}, got {name!r}")
        _CACHE[name] = cls()
    return _CACHE[name]


def for_row(row: dict) -> Scenario:
    """The scenario of a results row; an unknown one (a plugin not loaded here) reads as the default."""
    try:
        return get(row.get("scenario"))
    except (ValueError, ImportError, AttributeError):
        return get(DEFAULT)


def expand(choice: str) -> list[str]:
    """The CLI's --scenario value as a list of scenario names ('both': single-stream and offline)."""
    return list(BOTH_SCENARIOS) if choice == BOTH else [choice]


__all__ = ["REGISTRY", "DEFAULT", "SWEEP", "BOTH", "Scenario", "get", "for_row", "known", "expand"]
