"""single-stream: one generation loop, batch 1, as the original write-up measured it.

Besides the throughput repeats, a separate timestamped pass records the latency
of every token and every name (latency.py), so the throughput figure is never
perturbed by the stamps.
"""
from __future__ import annotations

from .base import Scenario


class SingleStream(Scenario):
    name = "single-stream"
    description = "one stream, batch 1: tok/s of the generation loop, then per-token and per-name latency"
    offered_as = "single-stream"
    is_default = True
    measures_accuracy = True

    def timed(self, backend, job, tokens):
        return backend.timed_generate(tokens, job["seed"])

    def checksum(self, backend, job, tokens):
        # the default sampler is the timed loop's own (xorshift32; TALOS's for the emulators)
        return int(sum(backend.generate(tokens, job["seed"])))

    def after_timing(self, backend, job, measured):
        if not job.get("latency", True):
            return {}
        from ..latency import measure_latency
        return {"latency": measure_latency(backend, job, measured["tokens_per_repeat"])}
