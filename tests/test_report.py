"""Reports: the charts' data, report.md/html, merging machines, published rows, bad input, Chromium."""
import base64
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from microgpt_bench import report
from microgpt_bench.results import FPGA_TOK_S, new_results, summarise, write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(not report.have_matplotlib(), reason="matplotlib is not installed")


def machine(label, cpu="AMD EPYC 7763", ghz=3.0):
    return {"label": label, "cpu": cpu, "arch": "x86_64", "cores": 2, "simd": ["avx2"],
            "clock": {"ghz": ghz, "method": "test clock"}, "os": "Linux 6.1", "python": "3.11",
            "numpy": "2.0", "blas": "openblas", "compilers": {"cc": {"command": "cc", "version": "gcc 12"},
                                                              "nvcc": None},
            "gpus": [], "tool_version": "0.1.0", "git_commit": "abc", "date": "2026-01-01T00:00:00+00:00"}


def ok_row(backend, tok_s, scenario="single-stream", streams=1, threads=1, power=None, precision="fp32"):
    row = {"backend": backend, "scenario": scenario, "description": backend, "precision": precision,
           "gate": {"max_abs_error": 1e-6, "tolerance": 1e-4, "passed": True, "positions": 38},
           "repeats_tok_s": [tok_s * 0.99, tok_s, tok_s * 1.01], "status": "ok",
           "streams": streams, "threads": threads}
    if power is not None:
        row["power"] = power
    return summarise(row, 3.0)


RAPL_12W = {"watts": 12.0, "measured": True, "basis": "measured", "package_w": 30.0, "idle_baseline_w": 18.0,
            "method": "RAPL package energy counters", "scope": "whole CPU package(s)"}


def doc_alpha():
    d = new_results(machine("alpha"), {"seconds": 0.1, "repeats": 3, "seed": 42})
    d["rows"] = [
        ok_row("numpy", 45_000),
        ok_row("pure-python", 6_000, precision="fp64"),
        ok_row("c-fp32", 3_500_000, power=RAPL_12W),
        ok_row("c-fp32", 7_000_000, scenario="offline", streams=256, threads=2),
        {**ok_row("talos-emu", 900_000, precision="talos"),
         "gate": {"method": "bit-exact vs the Python reference core", "positions": 38, "max_abs_error": 0.4,
                  "error_is": "vs float64 model (informational)", "tolerance": 0.0, "passed": True},
         "info": {"fpga_tokens_per_s": 52_000.0, "fpga_mhz": 56.25, "fpga_cycles": 1_000_000}},
        {"backend": "fake-wrong", "scenario": "single-stream", "status": "failed", "precision": "fp32",
         "gate": {"max_abs_error": 0.01, "tolerance": 1e-4, "passed": False, "positions": 38},
         "reason": "correctness gate: max logit error 0.01 > 0.0001", "streams": 1, "threads": 1},
        {"backend": "torch-cuda", "scenario": "single-stream", "status": "unavailable",
         "reason": "no CUDA device", "streams": 1, "threads": 1},
    ]
    return d


def doc_beta():
    d = new_results(machine("beta", cpu="Intel(R) Xeon(R)"), {"seconds": 0.1, "repeats": 3})
    d["rows"] = [ok_row("numpy", 30_000),
                 ok_row("cuda-persistent", 400_000, power={"watts": None, "measured": False, "basis": "none",
                                                           "method": "no figure", "unmeasured": "no nvidia-smi"})]
    d["sweeps"] = [{"backend": "c-fp32", "points": [
        {"streams": s, "threads": t, "status": "ok", "tok_s": 1e6 * s ** 0.5 * t} for t in (1, 2)
        for s in (1, 4, 16, 64)] + [{"streams": 256, "threads": 2, "status": "failed", "tok_s": None}]}]
    return d


@pytest.fixture
def files(tmp_path):
    return (write_json(doc_alpha(), tmp_path / "alpha.json"), write_json(doc_beta(), tmp_path / "beta.json"))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "microgpt_bench", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------ chart data


@needs_matplotlib
def test_charts_plot_every_ok_row_sorted(tmp_path, files):
    docs = [json.loads(Path(f).read_text()) for f in files]
    charts = report.write_charts(docs, tmp_path / "c")
    assert set(charts) == {"throughput.png", "perf_per_watt.png", "scaling.png"}
    for name in charts:
        data = (tmp_path / "c" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    tp = charts["throughput.png"]
    assert tp["labels"] == ["alpha · c-fp32 [offline 256x2t]", "alpha · c-fp32 [single-stream]",
                            "alpha · talos-emu [single-stream]", "beta · cuda-persistent [single-stream]", "alpha · numpy [single-stream]",
                            "beta · numpy [single-stream]", "alpha · pure-python [single-stream]"]
    assert tp["values"] == sorted(tp["values"], reverse=True)
    assert tp["values"][1] == pytest.approx(3_500_000)
    assert tp["reference"] == FPGA_TOK_S
    assert tp["log"] is True  # 6,000 .. 7,000,000: three decades


@needs_matplotlib
def test_linear_scale_when_values_are_close(tmp_path):
    d = new_results(machine("m"), {})
    d["rows"] = [ok_row("numpy", 45_000), ok_row("numpy-simple", 20_000)]
    assert report.write_charts(d, tmp_path)["throughput.png"]["log"] is False


@needs_matplotlib
def test_perf_per_watt_marks_measured_given_and_assumed(tmp_path, files):
    docs = [json.loads(Path(f).read_text()) for f in files]
    pw = report.write_charts(docs, tmp_path, watts={"c-fp32": 1.0, "numpy": 4.0})["perf_per_watt.png"]
    by_label = dict(zip(pw["labels"], zip(pw["basis"], pw["watts"], pw["values"])))
    assert by_label["alpha · c-fp32 [single-stream]"] == ("measured", 12.0, pytest.approx(3_500_000 / 12))
    assert by_label["alpha · c-fp32 [offline 256x2t]"][:2] == ("given", 1.0)  # --watts beats the default
    assert by_label["beta · numpy [single-stream]"][:2] == ("given", 4.0)
    assert by_label["alpha · pure-python [single-stream]"][:2] == ("assumed", 8.0)  # AMD default, no "power"
    assert "beta · cuda-persistent [single-stream]" not in by_label  # no figure at all
    assert pw["reference"] == pytest.approx(FPGA_TOK_S / 2.0)
    assert pw["values"] == sorted(pw["values"], reverse=True)


@needs_matplotlib
def test_scaling_has_one_line_per_thread_count(tmp_path, files):
    docs = [json.loads(Path(f).read_text()) for f in files]
    lines = report.write_charts(docs, tmp_path)["scaling.png"]["lines"]
    assert [(ln["title"], ln["threads"]) for ln in lines] == [("beta · c-fp32 [offline sweep]", 1),
                                                            ("beta · c-fp32 [offline sweep]", 2)]
    assert lines[0]["streams"] == [1, 4, 16, 64]  # the failed point is left out
    assert lines[1]["tok_s"][0] == pytest.approx(2e6)


@needs_matplotlib
def test_no_scaling_chart_without_a_sweep(tmp_path):
    assert "scaling.png" not in report.write_charts(doc_alpha(), tmp_path)
    assert not (tmp_path / "scaling.png").exists()


# ------------------------------------------------------------------ the pages


def test_report_from_two_machines_merges(tmp_path, files):
    written = report.write_report(files, tmp_path / "out", watts={"numpy": 4.0})
    md = written["report.md"].read_text()
    for label in ("alpha · numpy [single-stream]", "beta · numpy [single-stream]",
                  "alpha · c-fp32 [offline 256x2t]", "beta · cuda-persistent [single-stream]"):
        assert f"| {label} |" in md
    assert "### alpha (" in md and "### beta (" in md and "Intel(R) Xeon(R)" in md
    assert "| alpha · fake-wrong [single-stream] | failed | correctness gate" in md
    assert "| alpha · torch-cuda [single-stream] | unavailable | no CUDA device |" in md
    assert ("| alpha · fake-wrong [single-stream] | fp32 | max abs logit error vs float64, within tolerance | "
            "0.01 | 0.0001 | 38 | FAILED |") in md
    assert ("| alpha · talos-emu [single-stream] | talos | bit-exact vs the Python reference core | "
            "0.4 (vs float64 model (informational)) |  | 38 | passed |") in md
    assert "| alpha · TALOS-V2 (FPGA, modelled, 56.25 MHz) |  | modelled | 52,000 |" in md
    assert "TALOS-V2 FPGA (published reference)" in md
    assert "numpy = 4 W" in md and "idle baseline 18.00 W" in md and "whole CPU package" in md
    assert "published ·" not in md  # only with --with-published
    if report.have_matplotlib():
        assert {"throughput.png", "perf_per_watt.png", "scaling.png"} <= set(written)
        assert "![" in md and "(throughput.png)" in md


def test_same_machine_twice_gets_numbered_labels(tmp_path):
    a = write_json(doc_alpha(), tmp_path / "a.json")
    b = write_json(doc_alpha(), tmp_path / "b.json")
    entries = report.build_entries([report.load_results(a), report.load_results(b)])
    labels = [e["label"] for e in entries]
    assert "alpha · numpy [single-stream]" in labels and "alpha · numpy [single-stream] #2" in labels
    assert len(labels) == len(set(labels))


def test_with_published_rows_are_labelled_and_kept_apart(tmp_path, files):
    published = report.load_published()
    entries = report.build_entries([report.load_results(files[0])], published)
    pub = [e for e in entries if e["source"] == "published"]
    assert len(pub) == 24 and all(e["label"].startswith("published · ") for e in pub)
    assert all(not e["label"].startswith("published") for e in entries if e["source"] == "measured")
    assert not any("TALOS" in e["label"] for e in entries)  # the FPGA is the reference line
    m4 = next(e for e in pub if e["label"] == "published · M4 Max · c fp32+NEON [single-stream]")
    assert m4["tok_s"] == 3_756_165 and m4["power"]["watts"] == 5.0 and m4["per_watt"] == pytest.approx(751_233)
    bw = next(e for e in pub if "cuda persistent" in e["label"])
    assert bw["power"]["measured"] is True and bw["power"]["watts"] == 19.96
    grace = next(e for e in pub if e["label"] == "published · Grace · c fp32+NEON [single-stream]")
    assert grace["power"]["watts"] == 3.0
    md = report.write_report([files[0]], tmp_path, with_published=True)["report.md"].read_text()
    assert "published · Grace · c fp32+NEON [single-stream]" in md and "AlexCheema/talos-vs-macbook" in md


def test_published_data_matches_its_sources():
    doc = report.load_published()
    for row in doc["rows"]:
        assert row["status"] == "published" and row["source"] in doc["sources"]
        assert row["machine"] in doc["machines"] and row["tok_s"] > 0 and "method" in row["power"]
    fpga = report.fpga_reference(doc)
    assert fpga["tok_s"] == FPGA_TOK_S and fpga["power"]["watts"] == 2.0


def test_missing_optional_fields_are_tolerated(tmp_path):
    minimal = {"schema": "microgpt-bench/results", "schema_version": 1, "rows": [
        {"backend": "numpy", "status": "ok", "repeats_tok_s": [40_000, 41_000, 42_000]},
        {"backend": "weird", "status": "ok"},
        {"backend": "broken", "status": "failed"},
    ]}
    path = tmp_path / "min.json"
    path.write_text(json.dumps(minimal))
    written = report.write_report([path], tmp_path / "out")
    md = written["report.md"].read_text()
    assert "| min · numpy [single-stream] |" in md and "41,000" in md
    assert "| min · broken [single-stream] | failed |" in md
    if report.have_matplotlib():
        data = report.write_charts(report.load_results(path), tmp_path / "c")["throughput.png"]
        assert data["labels"] == ["machine 1 · numpy [single-stream]"]  # no label, no file name: numbered
    assert "min · weird [single-stream]" in md.split("## Performance per watt")[0]  # ok, yet no figure: said


def test_without_matplotlib_the_pages_are_still_written(tmp_path, files, monkeypatch):
    def missing():
        raise ImportError("No module named 'matplotlib'")
    monkeypatch.setattr(report, "figure_tools", missing)
    warnings = []
    written = report.write_report(files, tmp_path, warn=warnings.append)
    assert set(written) == {"report.md", "report.html"}
    assert not list(tmp_path.glob("*.png"))
    assert any("matplotlib is not installed" in w for w in warnings)
    assert "matplotlib is not installed" in written["report.md"].read_text()
    page = written["report.html"].read_text()
    assert "<img" not in page and "alpha · numpy [single-stream]" in html.unescape(page)


def check_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    for attr, url in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert url.startswith("data:"), f"external resource {attr}={url[:60]}"
    assert "url(" not in page and "@import" not in page
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(b64).startswith(PNG_MAGIC)


def test_html_is_self_contained_and_shows_every_row(tmp_path, files):
    written = report.write_report(files, tmp_path, with_published=True)
    page = written["report.html"].read_text()
    check_self_contained(page)
    if report.have_matplotlib():
        assert page.count("data:image/png;base64,") == 3
    text = html.unescape(page)
    for e in report.build_entries([report.load_results(f) for f in files], report.load_published()):
        assert e["label"] in text


# ------------------------------------------------------------------ the command line


def test_cli_report_writes_the_files(tmp_path, files):
    proc = cli("report", *files, "--out", tmp_path / "r", "--with-published", "--watts", "numpy=4")
    assert proc.returncode == 0, proc.stderr
    for name in ("report.md", "report.html"):
        assert (tmp_path / "r" / name).stat().st_size > 1000
        assert str(tmp_path / "r" / name) in proc.stdout


@pytest.mark.parametrize("content, message", [
    ("{ not json", "not JSON"),
    ('{"rows": []}', "not a microgpt-bench results file"),
    ('[1, 2, 3]', "not a microgpt-bench results file"),
    ('{"schema": "microgpt-bench/results", "schema_version": 99, "rows": []}', "schema version 99"),
    ('{"schema": "microgpt-bench/results", "schema_version": 1, "rows": {}}', '"rows" must be a list'),
])
def test_cli_report_refuses_bad_files_with_exit_2(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = cli("report", bad, "--out", tmp_path / "r")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--watts", "foo"], "expected BACKEND=WATTS"),
    (["--watts", "x=-1"], "finite number > 0"),
    (["--watts", "numpy=lots"], "not a number of watts"),
])
def test_cli_report_bad_watts_exit_2(tmp_path, files, args, message):
    proc = cli("report", files[0], "--out", tmp_path / "r", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_report_out_is_a_file_exit_2(tmp_path, files):
    (tmp_path / "taken").write_text("x")
    proc = cli("report", files[0], "--out", tmp_path / "taken")
    assert proc.returncode == 2 and "cannot make the directory" in proc.stderr and "Traceback" not in proc.stderr


def test_watts_for_an_unknown_backend_is_a_warning(tmp_path, files):
    proc = cli("report", files[0], "--out", tmp_path / "r", "--watts", "nosuch=3")
    assert proc.returncode == 0 and "no row has backend 'nosuch'" in proc.stderr


def test_cli_report_missing_file_exit_2(tmp_path):
    proc = cli("report", tmp_path / "nope.json", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "cannot read" in proc.stderr


@needs_matplotlib
def test_run_writes_its_report(tmp_path, shared_data):
    proc = cli("run", "--backends", "numpy", "--weights", shared_data / "talos" / "weights_only.npy",
               "--seconds", "0.05", "--repeats", "1", "--json", tmp_path / "r.json", "--report", tmp_path / "ch")
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'ch' / 'report.html'}" in proc.stdout
    assert "TALOS-V2" in (tmp_path / "ch" / "report.html").read_text()
    assert (tmp_path / "ch" / "throughput.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "ch" / "perf_per_watt.png").exists()
    doc = json.loads((tmp_path / "r.json").read_text())
    row = doc["rows"][0]
    assert row["power"]["watts"] > 0
    schema_doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    fields = [*doc, *doc["machine"], *doc["config"], *row, *row["power"], *row["tok_s"], *row["gate"]]
    undocumented = [f for f in fields if f"`{f}`" not in schema_doc]
    assert not undocumented, f"fields missing from docs/results-schema.md: {undocumented}"


# ------------------------------------------------------------------ in a real browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="no Chromium here (Debian: apt-get install chromium)")


def headless(page: Path) -> tuple[str, list[str]]:
    """(the DOM after load, console messages) from headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
             page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    return proc.stdout, console


@needs_chromium
def test_headless_check_catches_console_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>'
                   "<body><p>x</p><script>undefinedThing.go()</script></body></html>")
    _, console = headless(bad)
    assert any("undefinedThing" in line for line in console)


@needs_chromium
def test_html_opens_in_chromium_without_console_errors(tmp_path, files):
    written = report.write_report(files, tmp_path, with_published=True)
    dom, console = headless(written["report.html"])
    assert console == []
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    entries = report.build_entries([report.load_results(f) for f in files], report.load_published())
    for e in entries:
        assert e["label"] in text, e["label"]
    if report.have_matplotlib():
        assert dom.count("<img") == 3


# ------------------------------------------------------------------ extending the report


def test_a_chart_and_a_section_are_one_function_and_one_line_each(tmp_path, files, monkeypatch):
    def chart_rows(ctx, path):
        Figure, FigureCanvasAgg, _, _ = report.figure_tools()
        fig = Figure()
        FigureCanvasAgg(fig)
        fig.add_subplot(1, 1, 1).bar([0], [len(ctx.entries)])
        fig.savefig(path)
        return {"count": len(ctx.entries)}

    def section_rows(ctx, d):
        d.h(2, "Row count")
        ctx.figure(d, "rows.png")
        d.table(["rows"], [[str(len(ctx.entries))]])

    monkeypatch.setattr(report, "CHARTS", [*report.CHARTS, report.Chart("rows.png", chart_rows, "rows per file")])
    monkeypatch.setattr(report, "SECTIONS", [*report.SECTIONS, section_rows])
    md = report.write_report(files, tmp_path)["report.md"].read_text()
    assert md.rstrip().endswith("| rows |\n| --- |\n| 9 |")
    if report.have_matplotlib():
        assert (tmp_path / "rows.png").read_bytes().startswith(PNG_MAGIC)
        assert "![rows per file](rows.png)" in md


def test_the_terminal_and_the_report_share_one_throughput_table(tmp_path, files):
    from microgpt_bench.table import format_table

    md = report.write_report([files[0]], tmp_path)["report.md"].read_text()
    terminal = format_table(doc_alpha())
    for cells in ("3,500,000", "285.7", "66.04x", "7,000,000", "142.9", "132.08x"):
        assert cells in terminal and f"| {cells} |" in md
