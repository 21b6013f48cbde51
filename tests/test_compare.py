"""compare: ratios of medians, the rank-sum test over the repeats, rows apart, machines flagged, exit codes."""
import itertools
import json
import math
import subprocess
import sys

import pytest

from microgpt_bench.compare import compare_docs, min_p_value, rank_sum_p_value, run_compare
from microgpt_bench.results import new_results, summarise, write_json

NOISE = [1.00, 1.04, 0.96, 1.02, 0.98]  # a +-4% spread, like a quiet machine's repeats


def machine(cpu="AMD EPYC 7763", cores=2):
    return {"label": "dev", "cpu": cpu, "arch": "x86_64", "cores": cores, "os": "Linux 6.1", "python": "3.11",
            "numpy": "2.0", "blas": "openblas", "compilers": {"cc": {"command": "cc", "version": "gcc 12"}},
            "gpus": [], "clock": {"ghz": 3.0, "method": "test"}}


def row(backend, tok_s, scenario="single-stream", streams=1, threads=1, noise=NOISE, **extra):
    r = {"backend": backend, "scenario": scenario, "status": "ok", "streams": streams, "threads": threads,
         "repeats_tok_s": [tok_s * f for f in noise], **extra}
    return summarise(r, 3.0)


def base_doc(**machine_args):
    doc = new_results(machine(**machine_args), {"seconds": 0.3, "repeats": 5, "seed": 42})
    doc["rows"] = [row("numpy", 43_000), row("c-fp32", 8_700_000, info={"simd": "avx512"}),
                   row("c-fp32", 33_000_000, scenario="offline", streams=1024, threads=2),
                   {"backend": "torch-cuda", "scenario": "single-stream", "status": "unavailable",
                    "reason": "no CUDA device", "streams": 1, "threads": 1}]
    return doc


def scaled(doc, backend, factor, scenario="single-stream"):
    for r in doc["rows"]:
        if r["backend"] == backend and r["scenario"] == scenario:
            r["repeats_tok_s"] = [x * factor for x in r["repeats_tok_s"]]
            summarise(r, 3.0)
    return doc


def cli(*args):
    return subprocess.run([sys.executable, "-m", "microgpt_bench", "compare", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def write(tmp_path, name, doc):
    return write_json(doc, tmp_path / name)


# ------------------------------------------------------------------ the test itself


def brute_force_p(a, b):
    """Two-sided permutation p of the rank sum, by listing every split (mid-ranks for ties)."""
    pooled = sorted(a + b)
    rank = {v: sum(i + 1 for i, w in enumerate(pooled) if w == v) / pooled.count(v) for v in pooled}
    ranks = [rank[v] for v in a + b]
    centre = len(a) * sum(ranks) / len(ranks)
    observed = abs(sum(ranks[: len(a)]) - centre)
    splits = list(itertools.combinations(ranks, len(a)))
    return sum(abs(sum(s) - centre) >= observed - 1e-9 for s in splits) / len(splits)


@pytest.mark.parametrize("a, b", [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
    ([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]),
    ([1, 2, 2, 3, 5], [2, 3, 3, 6, 7]),  # ties
    ([5, 5, 5], [5, 5, 5, 5]),
    ([10.5, 11.0, 9.7, 12.2], [8.1, 9.9, 9.0, 10.1, 7.7, 8.8]),
])
def test_exact_p_value_matches_every_split_counted(a, b):
    assert rank_sum_p_value(a, b) == pytest.approx(brute_force_p(a, b))


def test_smallest_p_values_of_few_repeats():
    assert min_p_value(5, 5) == pytest.approx(2 / 252)
    assert min_p_value(4, 4) == pytest.approx(2 / 70)
    assert min_p_value(3, 3) == pytest.approx(0.1)
    assert rank_sum_p_value([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)


def test_large_samples_use_the_normal_approximation():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = [100 + (i * 37) % 23 for i in range(30)]
    b = [104 + (i * 17) % 19 for i in range(30)]
    want = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
    assert rank_sum_p_value(a, b) == pytest.approx(want, rel=1e-6)
    assert math.isclose(rank_sum_p_value(a, a), 1.0)


# ------------------------------------------------------------------ comparisons


def test_a_file_compared_with_itself_changes_nothing(tmp_path):
    path = write(tmp_path, "base.json", base_doc())
    proc = cli(path, path, "--fail-slower", "5")
    assert proc.returncode == 0, proc.stderr
    assert "significant  " not in proc.stdout.replace("not significant", "")
    assert proc.stdout.count("not significant") == 3 and proc.stdout.count("no change") == 3
    assert "same machine, settings and versions" in proc.stdout


def compare_scaled(tmp_path, backend, factor, *args):
    """(the CLI's answer, base path, new path) for a copy with one row's samples scaled."""
    base = write(tmp_path, "base.json", base_doc())
    new = write(tmp_path, "new.json", scaled(base_doc(), backend, factor))
    return cli(base, new, *args), base, new


def line_of(proc, label):
    return next(ln for ln in proc.stdout.splitlines() if ln.startswith(label))


def test_half_the_throughput_is_significantly_slower_and_fails_the_gate(tmp_path):
    proc, base, new = compare_scaled(tmp_path, "numpy", 0.5, "--fail-slower", "5")
    assert proc.returncode == 1, proc.stderr
    line = line_of(proc, "numpy [single-stream]")
    assert "2.00x slower" in line and line.endswith(" significant") and "0.00794" in line
    assert "FAIL: " in proc.stdout and "numpy [single-stream] is 2.00x slower" in proc.stdout
    assert proc.stdout.count("not significant") == 2  # the other rows did not change
    assert cli(base, new, "--fail-slower", "150").returncode == 0  # 100% slower is under 150%
    assert cli(base, new).returncode == 0  # no gate asked for


def test_a_speedup_never_fails_the_gate(tmp_path):
    proc, _, _ = compare_scaled(tmp_path, "c-fp32", 2.0, "--fail-slower", "0")
    assert proc.returncode == 0 and "2.00x faster" in proc.stdout


def test_two_percent_inside_the_noise_is_not_significant(tmp_path):
    proc, _, _ = compare_scaled(tmp_path, "numpy", 0.98, "--fail-slower", "1")
    assert proc.returncode == 0, proc.stdout
    line = line_of(proc, "numpy [single-stream]")
    assert "1.02x slower" in line and line.endswith("not significant")


def test_rows_in_one_file_only_and_rows_that_broke_are_listed_apart(tmp_path):
    base = base_doc()
    new = base_doc()
    new["rows"] = [r for r in new["rows"] if r["scenario"] != "offline"]  # dropped
    new["rows"].append(row("numba", 680_000))  # added
    new["rows"][0] = {"backend": "numpy", "scenario": "single-stream", "status": "failed",
                      "reason": "correctness gate: max logit error 0.5 > 0.0001", "streams": 1, "threads": 1}
    proc = cli(write(tmp_path, "base.json", base), write(tmp_path, "new.json", new), "--fail-slower", "5")
    assert proc.returncode == 1
    out = proc.stdout
    assert f"only in {tmp_path / 'base.json'}:\n  c-fp32 [offline 1024x2t]" in out
    assert f"only in {tmp_path / 'new.json'}:\n  numba [single-stream]" in out
    assert "numpy [single-stream]: ok in" in out and "correctness gate" in out
    assert "torch-cuda [single-stream]: unavailable in" in out
    assert "numpy [single-stream] ran in" in out and "failed here" in out


def test_different_machines_and_versions_are_flagged_first(tmp_path):
    new = base_doc(cpu="Intel(R) Xeon(R)", cores=16)
    new["rows"][1]["info"] = {"simd": "avx2"}
    new["config"]["seconds"] = 1.0
    got = compare_docs(base_doc(), new)
    assert "machine cpu: 'AMD EPYC 7763' vs 'Intel(R) Xeon(R)'" in got.differences
    assert "machine cores: 2 vs 16" in got.differences
    assert "setting seconds: 0.3 vs 1.0" in got.differences
    assert "c-fp32 [single-stream] simd: 'avx512' vs 'avx2'" in got.differences
    text, _ = run_compare([write(tmp_path, "a.json", base_doc()), write(tmp_path, "b.json", new)])
    assert text.splitlines()[1].startswith("  DIFFERENT: machine cpu")


def test_rows_timed_at_clocks_over_10_percent_apart_are_flagged():
    base, new = base_doc(), base_doc()
    base["rows"][1]["clock_ghz"] = {"before": 2.3, "after": 2.35}
    new["rows"][1]["clock_ghz"] = {"before": 2.9, "after": 2.95}
    base["rows"][0]["clock_ghz"] = {"before": 2.3, "after": 2.3}
    new["rows"][0]["clock_ghz"] = {"before": 2.4, "after": 2.4}  # 4%: within the noise of a clock
    got = compare_docs(base, new)
    assert "c-fp32 [single-stream] clock beside the row: 2.33 vs 2.92 GHz" in got.differences
    assert not any(d.startswith("numpy") for d in got.differences)
    del new["rows"][1]["clock_ghz"]  # a row without its own clock: no claim
    assert not any("clock beside" in d for d in compare_docs(base, new).differences)


def test_too_few_repeats_are_said_to_be_untestable(tmp_path):
    three = [1.0, 1.01, 0.99]
    base = base_doc()
    base["rows"] = [row("numpy", 43_000, noise=three)]
    new = base_doc()
    new["rows"] = [row("numpy", 21_500, noise=three)]
    text, status = run_compare([write(tmp_path, "a.json", base), write(tmp_path, "b.json", new)], 5)
    assert status == 0 and "too few repeats for any change to be significant" in text
    assert "0.1  not significant" in text


def test_markdown_and_json_formats(tmp_path):
    base = write(tmp_path, "base.json", base_doc())
    new = write(tmp_path, "new.json", scaled(base_doc(), "numpy", 0.5))
    md = cli(base, new, "--format", "markdown").stdout
    assert "| numpy [single-stream] | 43,000 | 21,500 | 2.00x slower | 0.00794 | significant |" in md
    doc = json.loads(cli(base, new, "--format", "json", "--fail-slower", "5").stdout)
    change = next(c for c in doc["comparisons"][0]["changes"] if c["row"] == "numpy [single-stream]")
    assert change["significant"] is True and change["ratio"] == pytest.approx(0.5)
    assert change["slower_by"] == pytest.approx(1.0) and doc["failures"]


def test_more_files_are_each_compared_with_the_base(tmp_path):
    base = write(tmp_path, "base.json", base_doc())
    same = write(tmp_path, "same.json", base_doc())
    slow = write(tmp_path, "slow.json", scaled(base_doc(), "c-fp32", 0.5))
    proc = cli(base, same, slow, "--fail-slower", "10")
    assert proc.returncode == 1
    assert proc.stdout.count("(base) ->") == 2 and f"FAIL: {slow}: c-fp32 [single-stream]" in proc.stdout


@pytest.mark.parametrize("make, args, message", [
    (lambda d: {**d, "schema_version": 2}, [], "results schema version 2; this tool reads version 1"),
    (lambda d: {**d, "rows": [1, 2]}, [], "rows[0] must be an object"),
    (lambda d: d, ["--fail-slower", "-3"], "must be a finite number >= 0"),
    (lambda d: d, ["--fail-slower", "lots"], "is not a number"),
    (lambda d: d, ["--format", "xml"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, args, message):
    base = write(tmp_path, "base.json", base_doc())
    new = write(tmp_path, "new.json", make(base_doc()))
    proc = cli(base, new, *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    if "schema" in message:
        assert str(new) in proc.stderr


def test_one_file_or_a_missing_one_is_exit_2(tmp_path):
    base = write(tmp_path, "base.json", base_doc())
    proc = cli(base)
    assert proc.returncode == 2 and "at least two results files" in proc.stderr
    proc = cli(base, tmp_path / "nope.json")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and len(proc.stderr.splitlines()) == 1
