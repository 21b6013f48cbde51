"""The one small interface every backend implements: scenario-free primitives.

A backend is constructed with the model's parameters and a temperature. It
must be able to
  - give the logits of a token sequence fed from position 0 (the correctness gate),
  - generate tokens: either override `generate`, or offer the one-token-at-a-time
    primitive `iter_tokens` and let this class build `generate` on it,
  - run the timed generation loop itself: the engine times only that call, so
    a native backend runs the whole loop (sampling included) in native code.
Optional primitives, listed in `scenarios` by the scenario that uses them
(scenarios/): the *_offline methods (many independent streams), and
`generate_stamped` (per-token end times; by default a perf_counter_ns stamp
after each token of `iter_tokens`, overridden by native loops that stamp in
native code). The argument checks of generate, timed_generate and
generate_stamped live once, here: every override is wrapped by them.
Scenario "server" (Poisson arrivals, continuous batching; server.py): a backend
offers `lanes(n)` (the Python loop of Backend.serve drives them) or overrides
`serve` with a native loop.
"""
from __future__ import annotations

import functools
import statistics
import time
from typing import ClassVar, Iterator

import numpy as np

from ..model import BLOCK_SIZE, Params, names_from_tokens
from ..samplers import check_temperature, softmax_t

STAMP_CALIBRATION_CALLS = 20_001  # back-to-back clock reads that measure the timer's own cost
# (method, takes a sampler argument): wrapped with the shared argument checks in every class
CHECKED_METHODS = (("generate", True), ("timed_generate", False), ("generate_stamped", False))


def check_token_count(n_tokens) -> int:
    """The one rule for how many tokens a generation may ask for: a whole number >= 1."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ValueError(f"n_tokens must be an integer >= 1, got {n_tokens!r}")
    return int(n_tokens)


def _checked(method, with_sampler: bool):
    """Wrap a generation method with the shared argument checks (n_tokens, sampler)."""
    @functools.wraps(method)
    def wrapper(self, n_tokens, seed, *args, **kwargs):
        check_token_count(n_tokens)
        if with_sampler:
            sampler = args[0] if args else kwargs.get("sampler", self.timed_sampler)
            if sampler not in self.samplers:
                raise ValueError(f"{self.name} samples with {', '.join(map(repr, self.samplers))}, not {sampler!r}")
        return method(self, n_tokens, seed, *args, **kwargs)
    wrapper.checked = True
    return wrapper


def perf_counter_info(calls: int = STAMP_CALIBRATION_CALLS) -> dict:
    """time.perf_counter_ns measured here: its resolution and the cost of one read."""
    now = time.perf_counter_ns
    reads = [now() for _ in range(calls)]
    steps = np.diff(np.asarray(reads, np.int64))
    positive = steps[steps > 0]
    return {"source": "time.perf_counter_ns", "ticks_per_ns": 1.0,
            "resolution_ns": time.get_clock_info("perf_counter").resolution * 1e9,
            "smallest_step_ns": int(positive.min()) if positive.size else None,
            "overhead_ns": float(statistics.median(steps.tolist())),
            "how": f"median gap of {calls:,} back-to-back reads (not subtracted from any figure)"}


class Unavailable(Exception):
    """The backend cannot run here; str(exc) says why (missing compiler, no GPU, ...)."""


class Backend:
    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # fp64 | fp32 | q412 | talos: decides the correctness gate's tolerance
    precision: ClassVar[str] = "fp32"
    scenarios: ClassVar[tuple[str, ...]] = ("single-stream",)
    samplers: ClassVar[tuple[str, ...]] = ("xorshift32", "python", "argmax")
    # the clock the default generate_stamped reads (a test injects a fake one)
    stamp_clock: ClassVar = staticmethod(time.perf_counter_ns)
    # the sampler of the timed loop (and generate's default)
    timed_sampler: ClassVar[str] = "xorshift32"
    # a variant that precomputes tables across tokens must say so here
    precomputes: ClassVar[bool] = False
    # max abs logit error allowed by the gate; None: by precision (worker.GATE_TOLERANCE)
    gate_tolerance: ClassVar[float | None] = None
    # where the rows run: "cpu", "cuda", "metal"; decides which power meter measures them
    device: ClassVar[str] = "cpu"
    # the most offline threads the backend can use (None: as many as asked); the harness
    # records min(asked, this) so that per-core figures count the cores that worked
    max_threads: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, with_sampler in CHECKED_METHODS:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "checked", False):
                setattr(cls, name, _checked(method, with_sampler))

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

    def iter_tokens(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> Iterator[int]:
        """The primitive of Python loops: yield the loop's tokens one at a time (reset rule included)."""
        raise NotImplementedError(f"{self.name} has no per-token primitive (iter_tokens)")

    @classmethod
    def has_token_steps(cls) -> bool:
        return cls.iter_tokens is not Backend.iter_tokens

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        """The first n_tokens sampled tokens of the generation loop."""
        return list(self.iter_tokens(n_tokens, seed, sampler))

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        """The timed window: n_tokens of the loop with the timed sampler; returns a checksum."""
        return int(sum(self.generate(n_tokens, seed, self.timed_sampler)))

    def names(self, count: int, seed: int, sampler: str | None = None) -> list[str]:
        """The first `count` names of the generation loop."""
        # every name ends within BLOCK_SIZE tokens, so this many tokens always hold enough names
        tokens = self.generate(BLOCK_SIZE * count, seed, sampler or self.timed_sampler)
        return names_from_tokens(tokens)[:count]

    # --------------------------------------------------------- latency stamps
    @classmethod
    def has_stamps(cls) -> bool:
        """True when generate_stamped can run: a native override, or the per-token primitive."""
        return cls.generate_stamped is not Backend.generate_stamped or cls.has_token_steps()

    def generate_stamped(self, n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32[n], end_ns int64[n]) of the timed loop: end_ns[i] is the time from a stamp
        taken just before token 0 to the end of token i. This default stamps each token of
        iter_tokens with perf_counter_ns; a native loop overrides it and stamps in native code."""
        now = self.stamp_clock
        tokens, ends = [0] * n_tokens, [0] * n_tokens
        steps = self.iter_tokens(n_tokens, seed, self.timed_sampler)
        start = now()
        for i, tok in enumerate(steps):
            ends[i] = now()
            tokens[i] = tok
        return np.asarray(tokens, np.int32), np.asarray(ends, np.int64) - start

    def timer_info(self) -> dict:
        """The clock generate_stamped reads: source, resolution_ns, overhead_ns, ticks_per_ns."""
        return perf_counter_info()

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


# the base class's own generation methods get the same checks as every override
for _name, _with_sampler in CHECKED_METHODS:
    setattr(Backend, _name, _checked(getattr(Backend, _name), _with_sampler))
