"""Backends that misbehave on purpose, loaded by the harness tests as plugins."""
import os
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


PLUGINS = ";".join(f"{cls.name}=fakes:{cls.__name__}" for cls in
                   (SlowBackend, CrashBackend, HangBackend, WrongBackend, RaisingBackend, MissingBackend))
