"""What a scenario is: the one place that knows how its rows are built, timed and shown.

The engine (worker.py) runs a scenario on a backend in four steps it asks the
scenario about: can this backend run it (`unavailable_reason`), the gate's
logits (`probe_logits`), one timed window (`timed`, returning the window's
checksum) and the checksum the same tokens have when generated untimed
(`checksum`). Calibration counts tokens in multiples of `unit(job)`.
`after_timing` adds fields measured in a separate pass (latency). The
harness builds jobs with `job_fields`; the table and report label rows with
`tag` and read cycles with `cycles_per_token`.
"""
from __future__ import annotations

from typing import ClassVar


class MeasurementError(Exception):
    """The timed windows cannot be published (wrong checksum, impossible rate); str says why."""


class Scenario:
    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # the entry of Backend.scenarios by which a backend says it has this scenario's primitives
    offered_as: ClassVar[str] = "?"
    # rows of the default scenario are labelled with the backend alone
    is_default: ClassVar[bool] = False
    # the accuracy measurement (one stream's next-token distributions) applies
    measures_accuracy: ClassVar[bool] = False
    # a backend whose arithmetic is not the float model's may gate itself (Backend.custom_gate)
    allows_custom_gate: ClassVar[bool] = True

    # ------------------------------------------------------------ the harness side
    def validate(self, cfg) -> list[tuple[bool, str]]:
        """(condition, message if false) for this scenario's settings in a RunConfig."""
        return []

    def job_fields(self, cfg) -> dict:
        """The job keys this scenario decides: streams and threads."""
        return {"streams": 1, "threads": 1}

    # ------------------------------------------------------------- the engine side
    def unavailable_reason(self, backend_cls) -> str | None:
        if self.offered_as not in backend_cls.scenarios:
            return f"no {self.name} scenario"
        return None

    def unit(self, job: dict) -> int:
        """Calibration counts tokens in multiples of this (one token of every stream)."""
        return 1

    def probe_logits(self, backend, probe: list[list[int]]) -> list:
        return [backend.logits(seq) for seq in probe]

    def timed(self, backend, job: dict, tokens: int) -> int:
        """One timed window of `tokens` tokens; returns the backend's checksum of them."""
        raise NotImplementedError

    def checksum(self, backend, job: dict, tokens: int) -> int:
        """The checksum `timed` must return, from the untimed generation of the same tokens."""
        raise NotImplementedError

    def measure(self, backend, job: dict) -> dict | None:
        """The scenario's own measurement in place of the engine's calibrated timed windows
        (None: use those). Returns the row's timing fields (repeats_tok_s, ...); raises
        worker.MeasurementError when the figures cannot be published."""
        return None

    def after_timing(self, backend, job: dict, measured: dict) -> dict:
        """Fields from passes run after the timed repeats (never inside them)."""
        return {}

    # ------------------------------------------------------- the table and report
    def tag(self, row: dict) -> str:
        """The bracketed part of a row's label: 'single-stream', 'offline 256x2t', ..."""
        return self.name

    def row_key(self, row: dict) -> tuple:
        """(scenario, streams, threads) of a row, as `compare` matches rows of two runs."""
        return (self.name, 1, 1)

    def cycles_per_token(self, row: dict) -> float | None:
        return row.get("cycles_per_token")

    def table_note(self) -> str | None:
        """One line under the table when rows of this scenario are in it."""
        return None

    def __repr__(self) -> str:
        return f"<scenario {self.name}>"
