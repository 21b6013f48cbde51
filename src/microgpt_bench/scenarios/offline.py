"""offline: many independent streams at once (MLPerf's Offline), over a thread count.

Stream i is seeded with samplers.stream_seed(seed, i); tok/s is summed over the
streams, so cycles/token is read per core (clock x threads / tok/s).
"""
from __future__ import annotations

from .base import Scenario


class Offline(Scenario):
    name = "offline"
    description = "N independent streams over T threads: total tok/s"
    offered_as = "offline"
    # the offline kernels are gated on their own batched logits, not a backend's self-gate
    allows_custom_gate = False

    def job_fields(self, cfg):
        return {"streams": cfg.streams, "threads": cfg.threads}

    def unit(self, job):
        return job["streams"]

    def probe_logits(self, backend, probe):
        return backend.logits_offline(probe)

    def timed(self, backend, job, tokens):
        return backend.timed_offline(job["streams"], tokens // job["streams"], job["seed"], job["threads"])

    def checksum(self, backend, job, tokens):
        streams = job["streams"]
        return int(backend.generate_offline(streams, tokens // streams, job["seed"], job["threads"]).sum())

    def tag(self, row):
        return f"offline {row.get('streams', '?')}x{row.get('threads', 1)}t"

    def row_key(self, row):
        return (self.name, int(row.get("streams") or 1), int(row.get("threads") or 1))

    def cycles_per_token(self, row):
        return row.get("cycles_per_token_per_core")

    def table_note(self):
        return "offline rows: total tok/s over all streams; cycles/token is per core (clock x threads / tok/s)"
