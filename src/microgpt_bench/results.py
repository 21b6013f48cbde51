"""The results file: a documented, versioned JSON schema (see docs/results-schema.md).

Writes are atomic (a temporary file renamed into place), so an interrupted run
never leaves half a file where a good one was.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

SCHEMA = "microgpt-bench/results"
SCHEMA_VERSION = 1
FPGA_TOK_S = 53_000
FPGA_SOURCE = "TALOS-V2 on a DE1-SoC (Cyclone V) at 56.25 MHz, published figure"
UNSTABLE_SPREAD = 0.10  # (max - min) / median above this earns a warning


class ResultsError(ValueError):
    pass


def summarise(row: dict, clock_ghz: float | None) -> dict:
    """Add median/min/max, ns/token, cycles/token and vs-FPGA to a timed row."""
    rates = row.get("repeats_tok_s")
    if not rates:
        return row
    med = statistics.median(rates)
    threads = row.get("threads", 1) or 1
    row["tok_s"] = {"median": med, "min": min(rates), "max": max(rates),
                    "spread": (max(rates) - min(rates)) / med}
    row["ns_per_token"] = 1e9 / med
    row["vs_fpga"] = med / FPGA_TOK_S
    if clock_ghz:
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=_jsonable)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_results(path: str | os.PathLike) -> dict:
    """Read a results file, refusing foreign or newer schemas with a clear message."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a microgpt-bench results file (no \"schema\": \"{SCHEMA}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: results schema version {version!r}; this tool reads version {SCHEMA_VERSION}")
    if not isinstance(data.get("rows"), list):
        raise ResultsError(f"{path}: \"rows\" must be a list")
    data.setdefault("machine", {})
    data.setdefault("sweeps", [])
    return data
