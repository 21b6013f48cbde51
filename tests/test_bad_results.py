"""Hostile and careless results files: one line and exit 2, in bounded memory and time; outputs escaped."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt_bench import report
from microgpt_bench.results import MAX_RESULTS_BYTES, ResultsError, load_results, new_results, write_json

MEMORY_LIMIT = 1536 * 1024 * 1024  # address space for the CLI under test: far below what a runaway needs
HEAD = '{"schema": "microgpt-bench/results", "schema_version": 1, '


LIMITED_CLI = ("import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
               "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
               "sys.argv[0] = 'microgpt-bench'; runpy.run_module('microgpt_bench', run_name='__main__')")


def cli_limited(*args, timeout=120):
    """The CLI in a subprocess that caps its own address space first; a hang fails by the timeout.

    (The cap is set in the child's own code, not a preexec_fn: forking a test process that
    has threads running, as JAX's, is not safe.)
    """
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", LIMITED_CLI, str(MEMORY_LIMIT), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_exit_2(proc, message):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) < 600, proc.stderr[-2000:]


@pytest.mark.parametrize("content, message", [
    (HEAD + '"rows": [1, "x", null]}', "rows[0] must be an object, not a whole number"),
    (HEAD + '"rows": [{"status": "ok"}]}', 'rows[0] has no "backend" name'),
    (HEAD + '"machine": "laptop", "rows": []}', '"machine" must be an object, not a string'),
    (HEAD + '"machine": {"cores": "two"}, "rows": []}', "machine.cores must be a whole number"),
    (HEAD + '"machine": {"clock": [3.0]}, "rows": []}', "machine.clock must be an object"),
    (HEAD + '"rows": [{"backend": "numpy", "tok_s": "fast"}]}', "rows[0].tok_s must be an object or a number"),
    (HEAD + '"rows": [{"backend": "numpy", "tok_s": {"median": [1]}}]}', "rows[0].tok_s.median must be a number"),
    (HEAD + '"rows": [{"backend": "numpy", "repeats_tok_s": [1, "x"]}]}', "repeats_tok_s must hold numbers"),
    (HEAD + '"rows": [{"backend": "numpy", "repeats_tok_s": [NaN]}]}', "NaN is not a number JSON allows"),
    (HEAD + '"rows": [{"backend": "numpy", "repeats_tok_s": [1e999]}]}', "repeats_tok_s must hold numbers"),
    (HEAD + '"rows": [], "sweeps": [{"points": [7]}]}', "sweeps[0].points[0] must be an object"),
    (HEAD + '"rows": [], "sweeps": {}}', '"sweeps" must be a list'),
    (HEAD + '"rows": [' + "[" * 200_000 + "]" * 200_000 + "]}", "JSON nested too deeply"),
    ('{"schema": "microgpt-bench/results", "schema_version": "' + "9" * 20_000 + '", "rows": []}',
     "characters)"),
])
def test_malformed_files_are_one_line_and_exit_2(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ResultsError, match=re.escape(message)):
        load_results(bad)
    assert_one_line_exit_2(cli_limited("report", bad, "--out", tmp_path / "r"), message)


def test_a_symlink_to_dev_zero_is_refused_at_once(tmp_path):
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    assert_one_line_exit_2(cli_limited("report", link, "--out", tmp_path / "r", timeout=60),
                           "not a regular file")


def test_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # nobody ever writes to it
    assert_one_line_exit_2(cli_limited("report", fifo, "--out", tmp_path / "r", timeout=60), "not a regular file")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_RESULTS_BYTES + 1)
    assert_one_line_exit_2(cli_limited("report", big, "--out", tmp_path / "r"), "is at most")


def test_fifty_thousand_rows_are_refused_quickly_in_bounded_memory(tmp_path):
    doc = new_results({"label": "m"}, {})
    doc["rows"] = [{"backend": f"b{i}", "scenario": "single-stream", "status": "ok",
                    "repeats_tok_s": [1000.0 + i]} for i in range(50_000)]
    path = write_json(doc, tmp_path / "many.json")
    assert_one_line_exit_2(cli_limited("report", path, "--out", tmp_path / "r", timeout=120),
                           f"a report shows at most {report.MAX_REPORT_ROWS}")
    assert not (tmp_path / "r").exists()  # refused before anything was written


HOSTILE = "$x^$ cost $5 or $6 <script>alert(1)</script> | a|b *em* [link](javascript:alert(1)) &amp; `code`"


def hostile_doc():
    doc = new_results({"label": "lab " + HOSTILE, "cpu": HOSTILE}, {"seconds": 0.1})
    doc["rows"] = [{"backend": "numpy " + HOSTILE, "scenario": "single-stream", "status": "ok",
                    "repeats_tok_s": [40_000.0, 41_000.0, 42_000.0]},
                   {"backend": "x" * 10_000, "scenario": "single-stream", "status": "ok",
                    "repeats_tok_s": [30_000.0]},
                   {"backend": "broken", "scenario": "single-stream", "status": "failed", "reason": HOSTILE}]
    return doc


def table_cells(line: str) -> int:
    """Cells of a Markdown table line, counting only unescaped pipes."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_labels_are_escaped_for_markdown_html_and_charts(tmp_path):
    path = write_json(hostile_doc(), tmp_path / "hostile.json")
    proc = cli_limited("report", path, "--out", tmp_path / "r")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    md = (tmp_path / "r" / "report.md").read_text()
    assert not re.search(r"(?<!\\)[<>$`*]", md.replace("![", "")), "unescaped HTML, math, code or emphasis"
    assert "](javascript" not in md
    assert "\\<script\\>alert(1)\\</script\\>" in md and "a\\|b" in md
    for block in md.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("| "):
            assert {table_cells(line) for line in lines} == {table_cells(lines[0])}, block[:300]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    if report.have_matplotlib():  # the "$" did not go to mathtext, the 10,000 characters did not size a chart
        assert (tmp_path / "r" / "throughput.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "r" / "throughput.png").stat().st_size < 2_000_000


@pytest.mark.skipif(not report.have_matplotlib(), reason="matplotlib is not installed")
def test_a_dollar_in_a_label_reaches_the_chart_as_a_dollar(tmp_path):
    data = report.write_charts(hostile_doc(), tmp_path)["throughput.png"]
    assert any(HOSTILE in label for label in data["labels"])


def test_results_schema_doc_names_the_limits():
    text = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    assert f"{MAX_RESULTS_BYTES // 2**20} MiB" in text and f"{report.MAX_REPORT_ROWS}" in text
