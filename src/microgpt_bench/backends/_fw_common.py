"""What the Python-framework backends (fw_torch, fw_jax, fw_mlx, fw_numba) share.

Nothing here imports a framework. A framework is imported lazily, once, through
`import_framework`, which records how long the import took (reported by info(),
never counted in tokens/s) and turns an import failure into a readable reason.

The framework backends run every stream as one row of a batch: the state of a
stream is (token to feed, position, 16-slot K and V caches, sampler state), the
step is the full forward pass for every stream followed by the sampler and the
reset rule (BOS sampled or position 16 reached -> feed BOS at position 0; the
cache is "cleared" by the position mask, the stale slots being masked out and
overwritten). Single-stream is a batch of one.

Subclasses implement:
  _setup()                 import, put the weights on the device, compile and warm up
  _run(seeds, n_tokens)    -> int array (B, n_tokens): B = len(seeds) streams of the loop
                           with the xorshift32 sampler, run in the framework (sampling and
                           the reset rule included, no host round trip per token where the
                           framework allows it); seeds uint32 (B,)
  _new_cache()             an empty single-stream cache
  _forward1(tok, pos, c)   -> (logits as a numpy (27,) array, cache): one token, one stream,
                           the same compiled forward; used by logits() (the gate) and by the
                           python sampler, which samples on the host exactly as the spec says
and, for the server scenario (FrameworkLanes):
  _state(seeds)            -> (tok, pos, K, V, rng) of len(seeds) fresh streams
  _lane_step(tok, pos, K, V, rng) -> (new, next tok, next pos, K, V, rng): one step of every
                           stream, tok/pos/rng/new as host numpy arrays, K/V the framework's
"""
from __future__ import annotations

import importlib
import sys
import time

import numpy as np

from .. import samplers
from ..model import BLOCK_SIZE, BOS, VOCAB, Params
from .base import Backend, Unavailable

# module name -> seconds its first import took in this process (None: it was
# already imported by someone else before we asked)
IMPORT_SECONDS: dict[str, float | None] = {}

EXTRA = {"torch": "torch", "jax": "jax", "mlx": "mlx", "numba": "numba"}


def import_framework(module: str, label: str | None = None):
    """Import `module`, recording the time of its first import. Raises Unavailable with a reason."""
    top = module.split(".")[0]
    label = label or top
    already = module in sys.modules and sys.modules[module] is not None
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        extra = EXTRA.get(top, top)
        raise Unavailable(f"{label} is not installed or failed to import "
                          f"({type(exc).__name__}: {exc}); "
                          f"pip install 'microgpt-bench[{extra}]'") from None
    if module not in IMPORT_SECONDS:
        IMPORT_SECONDS[module] = None if already else time.perf_counter() - t0
    return mod


def seeds_array(seeds) -> np.ndarray:
    return np.asarray([int(s) for s in seeds], dtype=np.uint32)


def bucket(n: int, max_batch: int) -> int:
    """Batch size a compiled backend runs n streams at: 1, else a power of two >= 8 (<= max_batch).

    Static shapes keep a compiled step from recompiling for every stream count;
    the padding streams are computed and thrown away (their cost shows in tok/s).
    """
    if n <= 1:
        return 1
    b = 8
    while b < n and b < max_batch:
        b *= 2
    return b


class FrameworkLanes:
    """The server scenario's lanes (server.Lanes) on a framework's batched step. Every lane
    steps every time (one fixed shape: a jitted step compiles once, outside the run); an idle
    lane computes too, but the server counts only the busy lanes' tokens. A lane that starts
    a name is reset to BOS at position 0 with its own xorshift32 state: its stale cache slots
    are masked out and overwritten, as at the offline reset rule."""

    def __init__(self, be: "FrameworkBackend", n_lanes: int):
        if n_lanes < 1:
            raise ValueError(f"n_lanes must be >= 1, got {n_lanes}")
        self.be, self.n_lanes = be, n_lanes
        be._set_threads(1)
        be._ensure_warm(n_lanes)
        _, _, self.K, self.V, _ = be._state(np.ones(n_lanes, np.uint32))
        self.tok = np.full(n_lanes, BOS, np.int64)
        self.pos = np.zeros(n_lanes, np.int64)
        self.rng = np.ones(n_lanes, np.uint32)

    def start(self, lane: int, seed: int) -> None:
        self.tok[lane], self.pos[lane], self.rng[lane] = BOS, 0, samplers.check_seed("xorshift32", seed)

    def step(self, lanes: np.ndarray) -> np.ndarray:
        new, tok, pos, self.K, self.V, rng = self.be._lane_step(self.tok, self.pos, self.K, self.V, self.rng)
        self.tok, self.pos = np.asarray(tok, np.int64), np.asarray(pos, np.int64)
        self.rng = np.asarray(rng).astype(np.uint32)
        return np.asarray(new)[lanes]


class FrameworkBackend(Backend):
    """Base of the framework rows: the generation loop's bookkeeping in one place."""

    scenarios = ("single-stream", "offline", "server")
    samplers = ("xorshift32", "python", "argmax")
    precision = "fp32"
    framework = "?"          # shown in info()
    framework_module = "?"   # the module whose import availability() tries
    pad_batches = False      # True for compiled rows with static batch shapes
    max_batch = 1024

    def __init__(self, params: Params, temperature: float = 0.5):
        super().__init__(params, temperature)
        reason = self.availability()
        if reason is not None:
            raise Unavailable(reason)
        self.warmup_seconds = 0.0   # compile / JIT / first-call time, all batch sizes together
        self.warmup_by_batch: dict = {}   # batch size (or kernel variant) -> seconds
        self.threads = 1
        t0 = time.perf_counter()
        self._setup()
        self.setup_seconds = time.perf_counter() - t0

    @classmethod
    def availability(cls) -> str | None:
        try:
            cls._device_reason(import_framework(cls.framework_module, cls.framework))
        except Unavailable as exc:
            return str(exc)
        return None

    @classmethod
    def _device_reason(cls, module) -> None:
        """Raise Unavailable when this row's device is missing (the framework itself imported)."""

    # -------------------------------------------------------- to implement
    def _setup(self) -> None:
        raise NotImplementedError

    def _run(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        raise NotImplementedError

    def _new_cache(self):
        raise NotImplementedError

    def _forward1(self, tok: int, pos: int, cache):
        raise NotImplementedError

    def _warm(self, batch) -> None:
        """Compile (or trace) the step for this batch size and run it once; block until done."""

    def _ensure_warm(self, batch) -> None:
        """Called by _run before its loop: a batch size's first use compiles outside the loop.

        The time is kept in warmup_seconds (info()), never in tokens/s; a harness that
        times timed_offline should still make one untimed call with the same stream
        count first, since that call is where a new batch size compiles.
        """
        if batch in self.warmup_by_batch:
            return
        t0 = time.perf_counter()
        self._warm(batch)
        dt = time.perf_counter() - t0
        self.warmup_by_batch[batch] = dt
        self.warmup_seconds += dt

    def _set_threads(self, threads: int) -> None:
        """Offline threads; the default backends run on the one thread they were set up with."""

    def _version(self) -> str:
        return "?"

    def _device(self) -> str:
        return "cpu"

    # -------------------------------------------------------- shared
    def _weights32(self) -> dict[str, np.ndarray]:
        return {n: np.ascontiguousarray(t, dtype=np.float32) for n, t in self.params.tensors.items()}

    def info(self) -> dict:
        return {
            "framework": self.framework,
            "version": self._version(),
            "device": self._device(),
            "import_seconds": IMPORT_SECONDS.get(self.framework_module),
            "warmup_seconds": round(self.warmup_seconds, 4),
            "warmup_by_batch": {str(b): round(t, 4) for b, t in self.warmup_by_batch.items()},
            "setup_seconds": round(self.setup_seconds, 4),
            "threads": self.threads,
        }

    def logits(self, tokens: list[int]) -> np.ndarray:
        if not 1 <= len(tokens) <= BLOCK_SIZE:
            raise ValueError(f"a probe sequence holds 1..{BLOCK_SIZE} tokens, got {len(tokens)}")
        cache = self._new_cache()
        rows = []
        for pos, tok in enumerate(tokens):
            lg, cache = self._forward1(int(tok), pos, cache)
            rows.append(np.asarray(lg, dtype=np.float64).reshape(VOCAB))
        return np.stack(rows)

    def _batched(self, seeds: np.ndarray, n_tokens: int) -> np.ndarray:
        """Run len(seeds) streams, in chunks of max_batch, padded to a bucket if asked."""
        n = len(seeds)
        out = np.empty((n, n_tokens), dtype=np.int64)
        if n_tokens == 0:
            return out
        for lo in range(0, n, self.max_batch):
            chunk = seeds[lo:lo + self.max_batch]
            b = len(chunk)
            size = bucket(b, self.max_batch) if self.pad_batches else b
            if size > b:
                chunk = np.concatenate([chunk, np.ones(size - b, dtype=np.uint32)])
            out[lo:lo + b] = np.asarray(self._run(chunk, n_tokens))[:b]
        return out

    def _generate_host(self, n_tokens: int, seed: int, sampler_name: str) -> list[int]:
        """The python (or argmax) sampler: the framework's forward, then softmax and choices() (or the
        argmax) on the host in float64, exactly as the spec says."""
        sampler = samplers.make_sampler(sampler_name, seed)
        out, tok, pos, cache = [], BOS, 0, self._new_cache()
        for _ in range(n_tokens):
            lg, cache = self._forward1(tok, pos, cache)
            new = sampler(samplers.softmax_t(np.asarray(lg).reshape(VOCAB), self.temperature).tolist())
            out.append(new)
            pos += 1
            if new == BOS or pos == BLOCK_SIZE:
                tok, pos, cache = BOS, 0, self._new_cache()
            else:
                tok = new
        return out

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        samplers.check_seed(sampler, seed)
        self._set_threads(1)   # single-stream always runs on one thread
        if sampler == "python" or (sampler == "argmax" and self.temperature):
            return self._generate_host(n_tokens, seed, sampler)
        return [int(t) for t in self._batched(seeds_array([seed]), n_tokens)[0]]

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        samplers.check_seed("xorshift32", seed)
        self._set_threads(1)
        return int(np.asarray(self._run(seeds_array([seed]), n_tokens)).sum()) if n_tokens > 0 else 0

    def generate_offline(self, n_streams: int, tokens_per_stream: int, seed: int,
                         threads: int = 1) -> np.ndarray:
        if n_streams < 1:
            raise ValueError(f"n_streams must be >= 1, got {n_streams}")
        self._set_threads(threads)
        seeds = seeds_array(samplers.stream_seed(seed, i) for i in range(n_streams))
        return self._batched(seeds, tokens_per_stream)

    def logits_offline(self, sequences: list[list[int]]) -> list[np.ndarray]:
        return [self.logits(s) for s in sequences]

    def lanes(self, n_lanes: int) -> FrameworkLanes:
        """The server scenario's primitive: n_lanes streams on the offline batched step."""
        return FrameworkLanes(self, n_lanes)

    def _lane_step(self, tok, pos, K, V, rng):
        raise NotImplementedError
