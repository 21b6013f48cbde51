"""The one small interface every backend implements.

A backend is constructed with the model's parameters and a temperature. It
must be able to
  - give the logits of a token sequence fed from position 0 (the correctness gate),
  - generate tokens with either sampler (names, and the name-agreement tests),
  - run the timed generation loop itself: the harness times only that call, so
    a native backend runs the whole loop (sampling included) in native code.
Scenario "offline" (many independent streams) is optional: a backend that
supports it lists it in `scenarios` and implements the *_offline methods.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..model import Params
from ..samplers import softmax_t


class Unavailable(Exception):
    """The backend cannot run here; str(exc) says why (missing compiler, no GPU, ...)."""


class Backend:
    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # fp64 | fp32 | q412 | talos: decides the correctness gate's tolerance
    precision: ClassVar[str] = "fp32"
    scenarios: ClassVar[tuple[str, ...]] = ("single-stream",)
    samplers: ClassVar[tuple[str, ...]] = ("xorshift32", "python")
    # a variant that precomputes tables across tokens must say so here
    precomputes: ClassVar[bool] = False
    # max abs logit error allowed by the gate; None: by precision (worker.GATE_TOLERANCE)
    gate_tolerance: ClassVar[float | None] = None
    # where the rows run: "cpu", "cuda", "metal"; decides which power meter measures them
    device: ClassVar[str] = "cpu"

    def __init__(self, params: Params, temperature: float = 0.5):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.params = params
        self.temperature = float(temperature)

    @classmethod
    def availability(cls) -> str | None:
        """None when the backend can run here, else the reason it cannot. Cheap."""
        return None

    @classmethod
    def build_info(cls) -> dict:
        """What `microgpt-bench info` shows beside availability (e.g. the SIMD path)."""
        return {}

    def info(self) -> dict:
        """What ran: SIMD path, compiler and flags, framework versions, device."""
        return {}

    def custom_gate(self, probe: list[list[int]], reference: list[np.ndarray]) -> dict | None:
        """A backend whose arithmetic is not the float model's (an emulator) gates itself here.

        Return None to use the standard gate (max abs logit error vs the float64
        reference), else a dict like the standard gate's with "passed" and "method".
        """
        return None

    def sampling_distribution(self, logits: np.ndarray) -> np.ndarray:
        """The distribution this backend's sampler draws from, given one position's logits."""
        return softmax_t(logits, self.temperature)

    # ----------------------------------------------------------- single stream
    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits, shape (len(tokens), 27), for tokens fed at positions 0.. from an empty cache."""
        raise NotImplementedError

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        """The first n_tokens sampled tokens of the generation loop."""
        raise NotImplementedError

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        """The timed window: n_tokens of the loop with xorshift32; returns a checksum."""
        return int(sum(self.generate(n_tokens, seed, "xorshift32")))

    # ----------------------------------------------------------------- offline
    def generate_offline(self, n_streams: int, tokens_per_stream: int, seed: int,
                         threads: int = 1) -> np.ndarray:
        """Tokens (n_streams, tokens_per_stream); stream i seeded with samplers.stream_seed(seed, i)."""
        raise NotImplementedError(f"{self.name} has no offline scenario")

    def timed_offline(self, n_streams: int, tokens_per_stream: int, seed: int,
                      threads: int = 1) -> int:
        return int(self.generate_offline(n_streams, tokens_per_stream, seed, threads).sum())

    def logits_offline(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Logits of several sequences run as parallel streams (the offline kernels' gate)."""
        return [self.logits(s) for s in sequences]

    def close(self) -> None:
        """Release native handles; called by the worker, and on garbage collection."""

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a constructor that failed half way
            pass
