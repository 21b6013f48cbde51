"""The one small interface every backend implements.

A backend is constructed with the model's parameters and a temperature. It
must be able to
  - give the logits of a token sequence fed from position 0 (the correctness gate),
  - generate tokens with either sampler (names, and the name-agreement tests),
  - run the timed generation loop itself: the harness times only that call, so
    a native backend runs the whole loop (sampling included) in native code.
Scenario "offline" (many independent streams) is optional: a backend that
supports it lists it in `scenarios` and implements the *_offline methods.
Scenario "server" (Poisson arrivals, continuous batching; server.py) likewise:
a backend offers `lanes(n)` (the Python loop of Backend.serve drives them) or
overrides `serve` with a native loop.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..model import Params
from ..samplers import check_temperature, softmax_t


class Unavailable(Exception):
    """The backend cannot run here; str(exc) says why (missing compiler, no GPU, ...)."""


class Backend:
    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # fp64 | fp32 | q412 | talos: decides the correctness gate's tolerance
    precision: ClassVar[str] = "fp32"
    scenarios: ClassVar[tuple[str, ...]] = ("single-stream",)
    samplers: ClassVar[tuple[str, ...]] = ("xorshift32", "python", "argmax")
    # a variant that precomputes tables across tokens must say so here
    precomputes: ClassVar[bool] = False
    # max abs logit error allowed by the gate; None: by precision (worker.GATE_TOLERANCE)
    gate_tolerance: ClassVar[float | None] = None
    # where the rows run: "cpu", "cuda", "metal"; decides which power meter measures them
    device: ClassVar[str] = "cpu"

    def __init__(self, params: Params, temperature: float = 0.5):
        self.params = params
        # 0 means greedy decoding (samplers.softmax_t); the timed loop then picks the argmax
        self.temperature = self.validate_temperature(temperature)

    # True: temperature 0 means greedy decoding (the float backends); False for a backend whose
    # hardware takes T = 0 as an input of its own and decodes greedily only when told (greedy=True)
    greedy_at_zero_temperature: ClassVar[bool] = True

    @classmethod
    def validate_temperature(cls, temperature) -> float:
        """The temperature as this backend takes it; ValueError (one line) for one it cannot take."""
        return check_temperature(temperature)

    @classmethod
    def create(cls, params: Params, temperature: float, sampler: str = "xorshift32", **options) -> "Backend":
        """Construct for a run's sampler: 'argmax' is temperature 0 for the float backends and
        greedy=True for those whose T = 0 is a real input (talos-emu)."""
        if sampler == "argmax":
            if cls.greedy_at_zero_temperature:
                return cls(params, 0.0, **options)
            return cls(params, temperature, greedy=True, **options)
        return cls(params, temperature, **options)

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

    # ----------------------------------------------------------------- server
    def lanes(self, n_lanes: int):
        """The server scenario's primitive (server.Lanes): n_lanes streams stepped together."""
        raise NotImplementedError(f"{self.name} has no server scenario")

    def serve_lanes(self) -> int:
        """The lanes the server scenario uses by default."""
        return 16

    def serve(self, arrivals_s, seeds, n_lanes: int | None = None, threads: int = 1):
        """The server scenario (server.ServeResult): the schedule through continuous batching
        over self.lanes(n_lanes), the loop in Python on one thread (native backends override)."""
        from .. import server

        if server.check_threads(threads) != 1:
            raise ValueError(f"{self.name} serves from one thread (its lanes batch within it), got threads={threads}")
        n_lanes = self.serve_lanes() if n_lanes is None else n_lanes
        if isinstance(n_lanes, bool) or not isinstance(n_lanes, (int, np.integer)) or not 1 <= n_lanes <= 4096:
            raise ValueError(f"n_lanes must be an integer in 1..4096, got {n_lanes!r}")
        return server.serve(self.lanes(int(n_lanes)), arrivals_s, seeds)

    def close(self) -> None:
        """Release native handles; called by the worker, and on garbage collection."""

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a constructor that failed half way
            pass
