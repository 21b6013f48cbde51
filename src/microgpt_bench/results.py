"""The results file: a documented, versioned JSON schema (see docs/results-schema.md).

Writes are atomic (a temporary file renamed into place), so an interrupted run
never leaves half a file where a good one was.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from .inputs import read_regular_file
from .outputs import atomic_write

SCHEMA = "microgpt-bench/results"
SCHEMA_VERSION = 1
FPGA_TOK_S = 53_000
FPGA_SOURCE = "TALOS-V2 on a DE1-SoC (Cyclone V) at 56.25 MHz, published figure"
UNSTABLE_SPREAD = 0.10  # (max - min) / median above this earns a warning


class ResultsError(ValueError):
    pass


CLOCK_MOVED = 0.05  # a row's clock before and after its windows differing by more: its cycles are suspect


def row_clock_ghz(row: dict) -> float | None:
    """The mean of the clock measured just before and after the row's windows, if it has one."""
    got = row.get("clock_ghz")
    if isinstance(got, dict):
        before, after = got.get("before"), got.get("after")
        if all(isinstance(v, (int, float)) and v > 0 for v in (before, after)):
            return (before + after) / 2
    return None


def summarise(row: dict, clock_ghz: float | None) -> dict:
    """Add median/min/max, ns/token, cycles/token and vs-FPGA to a timed row. Cycles count
    at the row's own clock (measured beside its windows) where it has one, else at the
    run's (`clock_ghz`, measured once at the start)."""
    rates = row.get("repeats_tok_s")
    if not rates:
        return row
    own = row_clock_ghz(row)
    if own:
        before, after = row["clock_ghz"]["before"], row["clock_ghz"]["after"]
        row["clock_moved"] = abs(before - after) > CLOCK_MOVED * min(before, after)
    clock_ghz = own or clock_ghz
    med = statistics.median(rates)
    threads = row.get("threads", 1) or 1
    row["tok_s"] = {"median": med, "min": min(rates), "max": max(rates),
                    "spread": (max(rates) - min(rates)) / med}
    row["ns_per_token"] = 1e9 / med
    row["vs_fpga"] = med / FPGA_TOK_S
    if clock_ghz:
        row["cycles_clock"] = {"ghz": round(clock_ghz, 4),
                               "measured": "beside the row" if own else "at the run's start"}
        row["cycles_per_token"] = clock_ghz * 1e9 / med
        # offline rows spread over threads: what each core spends per token
        row["cycles_per_token_per_core"] = clock_ghz * 1e9 * threads / med
    row["unstable"] = row["tok_s"]["spread"] > UNSTABLE_SPREAD
    return row


def new_results(machine: dict, config: dict) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "machine": machine, "config": config,
            "fpga_reference": {"name": "TALOS-V2 (FPGA, 56.25 MHz)", "tok_s": FPGA_TOK_S, "source": FPGA_SOURCE},
            "rows": [], "sweeps": []}


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Atomically (outputs.atomic_write: never over a device, umask honoured)."""
    text = json.dumps(data, indent=1, default=_jsonable) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


MAX_RESULTS_BYTES = 16 * 1024 * 1024  # a run of every backend is about 50 KB
# fields a reader uses, and the JSON types they may have (None: null is allowed too)
MACHINE_FIELDS = {"label": str, "cpu": str, "arch": str, "cores": int, "simd": list, "clock": dict, "os": str,
                  "python": str, "numpy": str, "blas": str, "compilers": dict, "gpus": list}
ROW_FIELDS = {"backend": str, "scenario": str, "status": str, "reason": str, "precision": str,
              "description": str, "streams": int, "threads": int, "repeats_tok_s": list, "tok_s": (dict, float),
              "power": dict, "gate": dict, "info": dict, "accuracy": dict, "unstable": bool,
              "latency": dict}
TOK_S_FIELDS = {"median": float, "min": float, "max": float, "spread": float}
SWEEP_POINT_FIELDS = {"streams": int, "threads": int, "tok_s": (dict, float), "status": str}


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results file; anything wrong is one ResultsError line."""
    raw = read_regular_file(path, MAX_RESULTS_BYTES, "results file", ResultsError)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ResultsError(f"{path}: not a results file (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ResultsError(f"{path}: not JSON ({_short(exc)})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a microgpt-bench results file (no \"schema\": \"{SCHEMA}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: results schema version {_short(version)}; this tool reads version "
                           f"{SCHEMA_VERSION}")
    problem = schema_problem(data)
    if problem:
        raise ResultsError(f"{path}: {problem}")
    if data.get("machine") is None:
        data["machine"] = {}
    if data.get("sweeps") is None:
        data["sweeps"] = []
    return data


def schema_problem(data: dict) -> str | None:
    """What is wrong with a results document's shape, or None."""
    if not isinstance(data.get("rows"), list):
        return "\"rows\" must be a list"
    for key, kind in (("machine", dict), ("config", dict), ("sweeps", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            return f"\"{key}\" must be {_kind_name(kind)}, not {_type_name(data[key])}"
    problem = _fields_problem(data.get("machine") or {}, MACHINE_FIELDS, "machine")
    for i, row in enumerate(data["rows"]):
        problem = problem or _row_problem(row, f"rows[{i}]")
    for i, sweep in enumerate(data.get("sweeps") or []):
        problem = problem or _sweep_problem(sweep, f"sweeps[{i}]")
    return problem


def _row_problem(row, where: str) -> str | None:
    if not isinstance(row, dict):
        return f"{where} must be an object, not {_type_name(row)}"
    if not isinstance(row.get("backend"), str):
        return f"{where} has no \"backend\" name"
    problem = _fields_problem(row, ROW_FIELDS, where)
    if problem:
        return problem
    rates = row.get("repeats_tok_s") or []
    if not all(_is_number(r) and r >= 0 for r in rates):
        return f"{where}.repeats_tok_s must hold numbers >= 0"
    if isinstance(row.get("tok_s"), dict):
        return _fields_problem(row["tok_s"], TOK_S_FIELDS, f"{where}.tok_s")
    return None


def _sweep_problem(sweep, where: str) -> str | None:
    if not isinstance(sweep, dict) or not isinstance(sweep.get("points") or [], list):
        return f"{where} must be an object with a list of \"points\""
    for j, point in enumerate(sweep.get("points") or []):
        if not isinstance(point, dict):
            return f"{where}.points[{j}] must be an object, not {_type_name(point)}"
        problem = _fields_problem(point, SWEEP_POINT_FIELDS, f"{where}.points[{j}]")
        if problem:
            return problem
    return None


def _fields_problem(obj: dict, fields: dict, where: str) -> str | None:
    for key, kind in fields.items():
        value = obj.get(key)
        if value is not None and not _has_kind(value, kind):
            return f"{where}.{key} must be {_kind_name(kind)}, not {_type_name(value)}"
    return None


def _has_kind(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return any(_is_number(value) if k is float else
               (isinstance(value, int) and not isinstance(value, bool)) if k is int else isinstance(value, k)
               for k in kinds)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number",
              bool: "true/false"}


def _kind_name(kind) -> str:
    return " or ".join(JSON_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))


def _type_name(value) -> str:
    return "null" if value is None else JSON_NAMES.get(type(value), type(value).__name__)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _short(value, limit: int = 200) -> str:
    """repr of a value for a message, cut so that a huge field cannot make a huge line."""
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"
