"""Backends that misbehave on purpose, loaded by the harness tests as plugins."""
import os
import subprocess
import sys
import time

from microgpt_bench.backends.numpy_backend import NumpyBackend

PER_TOKEN_SECONDS = 20e-6


class SlowBackend(NumpyBackend):
    """Correct logits; the timed loop costs a known 20 us a token."""
    name = "fake-slow"
    scenarios = ("single-stream",)

    def timed_generate(self, n_tokens, seed):
        deadline = time.perf_counter() + n_tokens * PER_TOKEN_SECONDS
        while time.perf_counter() < deadline:
            pass
        return n_tokens


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


PLUGINS = ";".join(f"{cls.name}=fakes:{cls.__name__}" for cls in
                   (SlowBackend, CrashBackend, HangBackend, WrongBackend, RaisingBackend, MissingBackend,
                    SpawningHangBackend, FloodBackend, AbortOnLoadBackend))
