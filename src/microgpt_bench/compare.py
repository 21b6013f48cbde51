"""Compare runs: what changed between results files, and whether it is more than noise.

    microgpt-bench compare BASE.json NEW.json [MORE.json ...] [--fail-slower PCT] [--format text|markdown|json]

Every later file is compared with BASE. Rows are matched on (backend, scenario, streams,
threads). For each row in both: the ratio of the median tok/s ("1.23x faster", "1.10x
slower") and a significance test over the per-repeat samples each file keeps
(row["repeats_tok_s"]); a change the test cannot tell from noise says "not significant".
Rows in only one file, and rows that ran in one but not the other, are listed apart.
Differences between the machines (CPU, cores, OS, Python, NumPy, BLAS, compilers, GPUs),
the run settings, and the versions each row reports (framework, compiler, SIMD path) are
flagged at the top: a change there is a different experiment, not a regression.

The test: Mann-Whitney U (the Wilcoxon rank-sum test), two-sided, exact, at ALPHA = 0.05.
Why this one and not a bootstrap confidence interval of the ratio of medians:
  - runs have 5 repeats by default, and the bootstrap median of 5 samples can take only
    those 5 values, so its interval is too narrow (it calls noise a change);
  - the timing noise of a busy machine is one-sided and heavy-tailed (a neighbour only ever
    slows a repeat down): a rank test assumes no distribution and one slow outlier moves
    it by one rank, not by its size;
  - exact: the p-value is counted over every way the pooled samples could have split
    (ties by mid-ranks), not approximated (above EXACT_LIMIT samples, the normal
    approximation with a tie correction is used).
Its smallest attainable p-value is 2 / C(n + m, n): 2/252 = 0.0079 for 5 repeats against
5, so a real change (a 2x slowdown separates the two sets of samples completely) is
detected at 0.05 with the default repeats; 4 against 4 gives 0.029; 3 against 3 gives 0.1,
so with 3 repeats nothing can be significant, and compare says so.
Each row is tested on its own (no correction for testing many rows): --fail-slower's
threshold is what keeps a small, real but unimportant shift from failing a CI gate.

--fail-slower PCT: exit 1 if any row is significantly slower by more than PCT percent
(base/new - 1 > PCT/100, the "x slower" figure), or if a row that ran in BASE failed in
a later file; otherwise exit 0. A file that cannot be read is one line and exit 2.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import scenarios
from .report import markdown_table, md_text
from .results import ResultsError, load_results, row_clock_ghz
from .table import format_columns, scenario_tag

ALPHA = 0.05
EXACT_LIMIT = 40  # pooled samples up to which the p-value is exact
MACHINE_KEYS = ("cpu", "arch", "cores", "os", "python", "numpy", "blas")
CONFIG_KEYS = ("seconds", "repeats", "temperature", "seed", "sampler", "weights", "order")
ROW_ENV_KEYS = ("version", "compiler_version", "simd", "flags", "numpy", "device", "threading_layer")
COLUMNS = ("row", "base tok/s", "new tok/s", "change", "p", "verdict")
NUMERIC = frozenset({"base tok/s", "new tok/s", "p"})


class CompareError(ResultsError):
    """Two files that cannot be compared: one line, exit 2."""


# ------------------------------------------------------------------ the test


def rank_sum_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that a and b come from one distribution."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 1.0
    doubled = _doubled_mid_ranks(list(a) + list(b))  # integers: ties get the mean of their ranks
    observed = sum(doubled[:n])
    centre = n * sum(doubled) / (n + m)
    if n + m > EXACT_LIMIT:
        return _normal_p(doubled, n, m, observed, centre)
    counts = _subset_sum_counts(doubled, n)
    far = [s for s in range(len(counts)) if abs(s - centre) >= abs(observed - centre) - 1e-9]
    return min(1.0, float(sum(counts[s] for s in far) / math.comb(n + m, n)))


def min_p_value(n: int, m: int) -> float:
    """The smallest two-sided p-value n samples against m can reach (complete separation)."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


def _doubled_mid_ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = i + j + 2  # twice the mean of ranks i+1 .. j+1
        i = j + 1
    return ranks


def _subset_sum_counts(weights: list[int], size: int) -> np.ndarray:
    """counts[s]: how many subsets of `size` of the weights sum to s (the permutation distribution)."""
    total = sum(weights)
    table = np.zeros((size + 1, total + 1))
    table[0, 0] = 1.0
    for w in weights:
        for k in range(size, 0, -1):
            table[k, w:] += table[k - 1, : total + 1 - w]
    return table[size]


def _normal_p(doubled: list[int], n: int, m: int, observed: float, centre: float) -> float:
    big_n = n + m
    mean_sq = sum(r * r for r in doubled) / big_n
    variance = n * m / (big_n - 1) * (mean_sq - (sum(doubled) / big_n) ** 2)  # exact for the ranks, ties in
    if variance <= 0:
        return 1.0
    z = max(0.0, abs(observed - centre) - 1.0) / math.sqrt(variance)  # continuity: doubled ranks step by 2
    return min(1.0, math.erfc(z / math.sqrt(2)))


# ------------------------------------------------------------------ matching rows


def row_key(row: dict) -> tuple:
    """(backend, scenario, streams, threads); the scenario says which of its settings tell rows apart."""
    return (row["backend"], *scenarios.for_row(row).row_key(row))


def key_label(key: tuple) -> str:
    backend, scenario, streams, threads = key
    return f"{backend} [{scenario_tag({'scenario': scenario, 'streams': streams, 'threads': threads})}]"


def _samples(row: dict) -> list[float]:
    return [float(r) for r in row.get("repeats_tok_s") or [] if r > 0]


def _median(row: dict) -> float | None:
    samples = _samples(row)
    if samples:
        return float(np.median(samples))
    tok = row.get("tok_s")
    tok = tok.get("median") if isinstance(tok, dict) else tok
    return float(tok) if isinstance(tok, (int, float)) and tok > 0 else None


def _by_key(doc: dict) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    seen: dict[tuple, int] = {}
    for row in doc["rows"]:
        key = row_key(row)
        n = seen[key] = seen.get(key, 0) + 1
        out[key if n == 1 else (*key, n)] = row  # the same row twice in a file: numbered
    return out


@dataclass
class RowChange:
    row: str
    base_tok_s: float
    new_tok_s: float
    ratio: float  # new / base
    p: float | None  # None: too few samples to test
    significant: bool
    base_repeats: int
    new_repeats: int

    @property
    def slower_by(self) -> float:
        """base/new - 1: 0.10 is "1.10x slower"; negative when faster."""
        return 1 / self.ratio - 1

    def change_text(self) -> str:
        if round(self.ratio, 2) == 1 and round(1 / self.ratio, 2) == 1:
            return "no change"
        if self.ratio >= 1:
            return f"{self.ratio:.2f}x faster"
        return f"{1 / self.ratio:.2f}x slower"

    def verdict(self) -> str:
        if self.p is None:
            return "not tested (too few repeats)"
        return "significant" if self.significant else "not significant"


@dataclass
class Comparison:
    base: str
    new: str
    differences: list[str] = field(default_factory=list)
    changes: list[RowChange] = field(default_factory=list)
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    not_comparable: list[str] = field(default_factory=list)  # in both, not ok in one
    lost: list[str] = field(default_factory=list)  # ok in base, failed in new
    min_p: float = 1.0


def compare_docs(base: dict, new: dict, base_name: str = "BASE", new_name: str = "NEW") -> Comparison:
    out = Comparison(base_name, new_name, differences=environment_differences(base, new))
    old_rows, new_rows = _by_key(base), _by_key(new)
    for key, row in old_rows.items():
        label = key_label(key[:4]) + (f" #{key[4]}" if len(key) > 4 else "")
        other = new_rows.get(key)
        if other is None:
            out.only_in_base.append(label)
        elif _median(row) and _median(other) and "ok" == row.get("status") == other.get("status"):
            out.changes.append(_change(label, row, other))
        else:
            why = f"{label}: {row.get('status', '?')} in {base_name}, {other.get('status', '?')} in {new_name}"
            reason = other.get("reason") if other.get("status") != "ok" else row.get("reason")
            out.not_comparable.append(why + (f" ({reason})" if reason else ""))
            if row.get("status") == "ok" and other.get("status") == "failed":
                out.lost.append(label)
    out.only_in_new = [key_label(k[:4]) for k in new_rows if k not in old_rows]
    repeats = [(c.base_repeats, c.new_repeats) for c in out.changes]
    out.min_p = min((min_p_value(*r) for r in repeats), default=1.0)
    return out


def _change(label: str, row: dict, other: dict) -> RowChange:
    a, b = _samples(row), _samples(other)
    base_med, new_med = _median(row), _median(other)
    testable = min(len(a), len(b)) >= 2
    p = rank_sum_p_value(a, b) if testable else None
    return RowChange(label, base_med, new_med, new_med / base_med, p, p is not None and p < ALPHA, len(a), len(b))


def environment_differences(base: dict, new: dict) -> list[str]:
    """What differs between the two runs besides the code under test: machine, settings, versions."""
    diffs = []
    mb, mn = base.get("machine") or {}, new.get("machine") or {}
    for key in MACHINE_KEYS:
        if mb.get(key) != mn.get(key):
            diffs.append(f"machine {key}: {mb.get(key)!r} vs {mn.get(key)!r}")
    for name in sorted(set(_compilers(mb)) | set(_compilers(mn))):
        if _compilers(mb).get(name) != _compilers(mn).get(name):
            diffs.append(f"compiler {name}: {_compilers(mb).get(name)!r} vs {_compilers(mn).get(name)!r}")
    ghz = [(m.get("clock") or {}).get("ghz") if isinstance(m.get("clock"), dict) else None for m in (mb, mn)]
    if all(isinstance(g, (int, float)) and g > 0 for g in ghz) and max(ghz) > 1.1 * min(ghz):
        diffs.append(f"clock estimate: {ghz[0]:.2f} vs {ghz[1]:.2f} GHz (another load, or a different clock)")
    if _gpus(mb) != _gpus(mn):
        diffs.append(f"GPUs: {_gpus(mb)!r} vs {_gpus(mn)!r}")
    cb, cn = base.get("config") or {}, new.get("config") or {}
    diffs += [f"setting {k}: {cb.get(k)!r} vs {cn.get(k)!r}" for k in CONFIG_KEYS if cb.get(k) != cn.get(k)]
    new_rows = _by_key(new)
    for key, row in _by_key(base).items():
        ib, inew = row.get("info") or {}, (new_rows.get(key) or {}).get("info") or {}
        if row.get("status") == "ok" == (new_rows.get(key) or {}).get("status"):  # rows compared only
            diffs += [f"{key_label(key[:4])} {k}: {ib.get(k)!r} vs {inew.get(k)!r}" for k in ROW_ENV_KEYS
                      if (k in ib or k in inew) and ib.get(k) != inew.get(k)]
            clocks = [row_clock_ghz(r) for r in (row, new_rows[key])]
            if all(clocks) and max(clocks) > 1.1 * min(clocks):
                diffs.append(f"{key_label(key[:4])} clock beside the row: {clocks[0]:.2f} vs {clocks[1]:.2f} GHz")
    return diffs


def _compilers(machine: dict) -> dict:
    comps = machine.get("compilers") if isinstance(machine.get("compilers"), dict) else {}
    return {k: v.get("version") if isinstance(v, dict) else v for k, v in comps.items()}


def _gpus(machine: dict) -> list:
    return [g.get("name") if isinstance(g, dict) else g for g in machine.get("gpus") or []]


def compare_files(paths: list[str | Path]) -> list[Comparison]:
    """BASE (the first) against every later file."""
    if len(paths) < 2:
        raise CompareError("compare needs at least two results files: BASE NEW [MORE ...]")
    docs = [load_results(p) for p in paths]
    return [compare_docs(docs[0], doc, str(paths[0]), str(p)) for p, doc in zip(paths[1:], docs[1:])]


def failures(comparisons: list[Comparison], slower_pct: float) -> list[str]:
    """Why --fail-slower PCT fails, one line a row (empty: it passes)."""
    out = []
    for c in comparisons:
        out += [f"{c.new}: {ch.row} is {ch.change_text()} (p = {ch.p:.3g}), more than {slower_pct:g}% slower"
                for ch in c.changes if ch.significant and ch.slower_by > slower_pct / 100]
        out += [f"{c.new}: {row} ran in {c.base} and failed here" for row in c.lost]
    return out


# ------------------------------------------------------------------ output


def _cells(ch: RowChange) -> dict[str, str]:
    return {"row": ch.row, "base tok/s": f"{ch.base_tok_s:,.0f}", "new tok/s": f"{ch.new_tok_s:,.0f}",
            "change": ch.change_text(), "p": "" if ch.p is None else f"{ch.p:.3g}", "verdict": ch.verdict()}


def _test_line(c: Comparison) -> str:
    line = (f"test: Mann-Whitney U over the repeats, two-sided, exact, significant at p < {ALPHA:g}; "
            f"smallest p these repeats allow: {c.min_p:.3g}")
    if c.changes and c.min_p >= ALPHA:
        line += " (too few repeats for any change to be significant: run with --repeats 5 or more)"
    return line


def _apart(c: Comparison) -> list[tuple[str, list[str]]]:
    return [(f"only in {c.base}", c.only_in_base), (f"only in {c.new}", c.only_in_new),
            ("in both files, not compared", c.not_comparable)]


def format_text(comparisons: list[Comparison], fail_lines: list[str]) -> str:
    out = []
    for c in comparisons:
        out.append(f"compare {c.base} (base) -> {c.new}")
        out += [f"  DIFFERENT: {d}" for d in c.differences] or ["  same machine, settings and versions"]
        out.append(_test_line(c))
        out += [""] + format_columns([_cells(ch) for ch in c.changes], COLUMNS, numeric=NUMERIC)
        for title, rows in _apart(c):
            if rows:
                out += ["", f"{title}:"] + [f"  {r}" for r in rows]
        out.append("")
    out += [f"FAIL: {f}" for f in fail_lines]
    return "\n".join(out).rstrip() + "\n"


def format_markdown(comparisons: list[Comparison], fail_lines: list[str]) -> str:
    out = []
    for c in comparisons:
        out.append(f"## {md_text(c.base)} (base) → {md_text(c.new)}")
        if c.differences:
            out.append("**Different runs, not only different code:**\n\n"
                       + "\n".join(f"- {md_text(d)}" for d in c.differences))
        out.append(md_text(_test_line(c)))
        out.append(markdown_table(list(COLUMNS), [list(_cells(ch).values()) for ch in c.changes],
                                  {i for i, name in enumerate(COLUMNS) if name in NUMERIC}))
        for title, rows in _apart(c):
            if rows:
                out.append(f"{md_text(title)}:\n\n" + "\n".join(f"- {md_text(r)}" for r in rows))
    if fail_lines:
        out.append("\n".join(f"- FAIL: {md_text(f)}" for f in fail_lines))
    return "\n\n".join(out) + "\n"


def format_json(comparisons: list[Comparison], fail_lines: list[str]) -> str:
    doc = {"test": {"name": "Mann-Whitney U, two-sided, exact", "alpha": ALPHA},
           "comparisons": [{**asdict(c), "changes": [{**asdict(ch), "change": ch.change_text(),
                                                       "slower_by": ch.slower_by, "verdict": ch.verdict()}
                                                      for ch in c.changes]} for c in comparisons],
           "failures": fail_lines}
    return json.dumps(doc, indent=1) + "\n"


FORMATS = {"text": format_text, "markdown": format_markdown, "json": format_json}


def run_compare(paths: list[str], fail_slower: float | None = None, fmt: str = "text") -> tuple[str, int]:
    """(output, exit status): 1 when --fail-slower fails, else 0; bad files raise ResultsError."""
    comparisons = compare_files(paths)
    fail_lines = failures(comparisons, fail_slower) if fail_slower is not None else []
    return FORMATS[fmt](comparisons, fail_lines), 1 if fail_lines else 0
