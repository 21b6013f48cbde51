"""Backends that misbehave on purpose, loaded by the harness tests as plugins, and a fake clock."""
import os
import subprocess
import sys
import time

import numpy as np

from microgpt_bench.backends.numpy_backend import NumpyBackend
from microgpt_bench.scenarios.single_stream import SingleStream


class FakeClock:
    """A nanosecond clock that moves only when a fake backend 'works' (no sleeping, no load sensitivity)."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += int(ns)


class CountingBackend(NumpyBackend):
    """numpy's logits; a cheap stand-in token stream whose every token costs ns_per_token on a fake clock."""
    name = "fake-counting"

    def __init__(self, params, temperature=0.5, clock=None, ns_per_token=20_000):
        super().__init__(params, temperature)
        self.clock, self.ns_per_token, self.calls = clock or FakeClock(), ns_per_token, []

    @staticmethod
    def _stream(n_tokens, seed):
        return (seed + np.arange(n_tokens, dtype=np.int64)) % 27

    def generate(self, n_tokens, seed, sampler="xorshift32"):
        return self._stream(n_tokens, seed).tolist()

    def timed_generate(self, n_tokens, seed):
        self.calls.append(n_tokens)
        self.clock.advance(n_tokens * self.ns_per_token)
        return int(self._stream(n_tokens, seed).sum())


class InstantBackend(NumpyBackend):
    """The timed loop returns at once without computing anything."""
    name = "fake-instant"

    def timed_generate(self, n_tokens, seed):
        return 0


class CrashBackend(NumpyBackend):
    name = "fake-crash"

    def timed_generate(self, n_tokens, seed):
        os.abort()


class HangBackend(NumpyBackend):
    name = "fake-hang"

    def timed_generate(self, n_tokens, seed):
        while True:
            time.sleep(1)


class WrongBackend(NumpyBackend):
    name = "fake-wrong"

    def logits(self, tokens):
        return super().logits(tokens) + 0.01

    def timed_generate(self, n_tokens, seed):
        raise AssertionError("a backend that fails the gate must never be timed")


class RaisingBackend(NumpyBackend):
    name = "fake-raise"

    def __init__(self, params, temperature=0.5):
        raise RuntimeError("kernel exploded on load")


class MissingBackend(NumpyBackend):
    name = "fake-missing"

    @classmethod
    def availability(cls):
        return "the frobnicator is not installed"


class SpawningHangBackend(NumpyBackend):
    """Starts a child of its own, writes both pids to $FAKE_PID_FILE, then hangs."""
    name = "fake-spawn-hang"

    def timed_generate(self, n_tokens, seed):
        child = subprocess.Popen(["sleep", "1000"])
        with open(os.environ["FAKE_PID_FILE"] + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()} {child.pid}")
        os.replace(os.environ["FAKE_PID_FILE"] + ".tmp", os.environ["FAKE_PID_FILE"])
        while True:
            time.sleep(1)


class FloodBackend(NumpyBackend):
    """Prints FLOOD_MB megabytes to stdout from the timed loop, then crashes."""
    name = "fake-flood"
    FLOOD_MB = 100

    def timed_generate(self, n_tokens, seed):
        line = b"x" * 1023 + b"\n"
        for _ in range(self.FLOOD_MB * 1024):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        os.abort()


class AbortOnLoadBackend(NumpyBackend):
    """Aborts the process that asks whether it is available: a native library that
    cannot be loaded in this process (a sanitizer build, say)."""
    name = "fake-abort-on-load"

    @classmethod
    def availability(cls):
        os.abort()


class EchoScenario(SingleStream):
    """A scenario registered from a test: single-stream timing plus a field of its own."""
    name = "echo"
    is_default = False
    measures_accuracy = False

    def after_timing(self, backend, job, measured):
        return {"echo": {"tokens": measured["tokens_per_repeat"], "checksum": measured["checksum"]}}

    def tag(self, row):
        return f"echo {row.get('echo', {}).get('tokens', '?')}"


PLUGINS = ";".join(f"{cls.name}=fakes:{cls.__name__}" for cls in
                   (CrashBackend, HangBackend, WrongBackend, RaisingBackend, MissingBackend,
                    InstantBackend, SpawningHangBackend, FloodBackend, AbortOnLoadBackend))
SCENARIO_PLUGINS = "echo=fakes:EchoScenario"
