"""A log-bucketed histogram of non-negative integers with a bounded relative error.

The HdrHistogram design: values below 2**bits are counted exactly; above, each
power-of-two range is cut into 2**(bits-1) equal buckets, so a bucket's width is
at most 2**-(bits-1) of its lower bound. A percentile is reported as the middle
of its bucket, which is within 2**-bits (relative) of the exact order statistic.
Memory is a few thousand counters however many values go in; mean, min and max
are kept exactly.
"""
from __future__ import annotations

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


class LogHistogram:
    def __init__(self, bits: int = 8):
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16, got {bits}")
        self.bits = bits
        self.counts = np.zeros(0, np.int64)
        self.count, self.total, self.min, self.max = 0, 0, None, None

    @property
    def relative_error(self) -> float:
        """The bound on |reported - exact| / exact for any percentile."""
        return 2.0 ** -self.bits

    def _index(self, values: np.ndarray) -> np.ndarray:
        exact = 1 << self.bits
        # bit_length via frexp: exact for values below 2**53 (104 days in ns)
        shift = np.maximum(np.frexp(values.astype(np.float64))[1] - self.bits, 0)
        top = values >> shift
        return np.where(values < exact, values, (shift << (self.bits - 1)) + top)

    def bucket_bounds(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[low, high) of each bucket index."""
        index = np.asarray(index, np.int64)
        half = 1 << (self.bits - 1)
        shift = np.maximum(index // half - 1, 0)
        top = np.where(index < 2 * half, index, index - (shift << (self.bits - 1)))
        low = top << shift
        return low, low + (1 << shift)

    def record(self, values) -> None:
        values = np.asarray(values, np.int64).ravel()
        if values.size == 0:
            return
        if values.min() < 0:
            raise ValueError("a latency histogram holds values >= 0")
        idx = self._index(values)
        need = int(idx.max()) + 1
        if need > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(need - self.counts.size, np.int64)])
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.count += int(values.size)
        self.total += int(values.sum())
        lo, hi = int(values.min()), int(values.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def percentile(self, q: float) -> float:
        """The value below or at which q% of the recorded values lie (middle of its bucket)."""
        if not self.count:
            raise ValueError("an empty histogram has no percentiles")
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        low, high = self.bucket_bounds(index)
        mid = (int(low) + int(high) - 1) / 2.0
        return float(min(max(mid, self.min), self.max))

    def mean(self) -> float:
        return self.total / self.count

    def summary(self) -> dict:
        """count, mean, the PERCENTILES (keys p50, p90, p99, p99.9, p99.99) and max, in the values' unit."""
        out = {"count": self.count, "mean": self.mean(), "min": self.min}
        out.update({f"p{q:g}": self.percentile(q) for q in PERCENTILES})
        out.update(max=self.max, relative_error=self.relative_error)
        return out

    def ccdf(self) -> list[tuple[float, float]]:
        """(x, share of values > x) at each occupied bucket's upper bound: the CCDF chart's points."""
        occupied = np.nonzero(self.counts)[0]
        _, high = self.bucket_bounds(occupied)
        above = self.count - np.cumsum(self.counts[occupied])
        return [(float(h - 1), float(a) / self.count) for h, a in zip(high, above)]

    def to_dict(self) -> dict:
        occupied = np.nonzero(self.counts)[0]
        return {"bits": self.bits, "buckets": [[int(i), int(self.counts[i])] for i in occupied],
                "count": self.count, "total": self.total, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict) -> "LogHistogram":
        h = cls(data["bits"])
        size = max((i for i, _ in data["buckets"]), default=-1) + 1
        h.counts = np.zeros(size, np.int64)
        for i, c in data["buckets"]:
            h.counts[i] = c
        h.count, h.total, h.min, h.max = data["count"], data["total"], data["min"], data["max"]
        return h
