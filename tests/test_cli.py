"""The command line end to end, in subprocesses as a user would run it."""
import json
import subprocess
import sys

import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "microgpt_bench", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def talos_weights(shared_data):
    return str(shared_data / "talos" / "weights_only.npy")


def test_run_writes_table_and_json(tmp_path, talos_weights):
    out = tmp_path / "res.json"
    proc = cli("run", "--backends", "numpy,pure-python", "--weights", talos_weights, "--seconds", "0.1",
               "--repeats", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "numpy" in proc.stdout and "TALOS-V2" in proc.stdout and "vs FPGA" in proc.stdout
    assert "[1/2] numpy" in proc.stderr  # progress display
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["machine"]["cpu"]
    assert [r["backend"] for r in doc["rows"]] == ["numpy", "pure-python"]
    assert all(r["status"] == "ok" and len(r["repeats_tok_s"]) == 2 for r in doc["rows"])
    assert all(r["latency"]["status"] == "ok" and r["latency"]["fpga"]["mhz"] == 56.25 for r in doc["rows"])
    assert "latency (single-stream" in proc.stdout and "TALOS-V2 (cycle model" in proc.stdout


def test_run_default_json_goes_under_results(tmp_path, talos_weights):
    proc = cli("run", "--backends", "numpy,torch-cuda,cuda-naive", "--weights", talos_weights, "--seconds", "0.05",
               "--repeats", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [results] = list((tmp_path / "results").glob("*.json"))
    doc = json.loads(results.read_text())
    # the machine is named by its CPU and cores, not its host name
    from microgpt_bench.machine import default_label
    assert doc["machine"]["label"] == default_label() and "core" in default_label()
    # and the report is written beside the results by default
    report = results.with_name(results.stem + "-report") / "report.html"
    assert report.is_file() and f"report: {report.relative_to(tmp_path)}" in proc.stdout
    # rows that cannot run here fold into one footer line, grouped by reason; no UNAVAILABLE rows
    unavailable = [r for r in doc["rows"] if r["status"] == "unavailable"]
    if unavailable:
        assert "UNAVAILABLE" not in proc.stdout
        [footer] = [ln for ln in proc.stdout.splitlines() if ln.startswith("not run here: ")]
        assert all(r["backend"] in footer for r in unavailable)
        assert all(len(r["reason"]) > 0 for r in unavailable)  # the file keeps the full reasons


def test_not_run_footer_groups_rows_by_reason():
    from microgpt_bench.table import not_run_footer, short_reason
    rows = [{"backend": "cuda-naive", "reason": "no NVIDIA driver: libcuda.so.1 cannot be loaded (x)"},
            {"backend": "cuda-graph", "reason": "no NVIDIA driver: libcuda.so.1 cannot be loaded (x)"},
            {"backend": "mlx-gpu", "reason": "MLX has no GPU device here (y); needs Apple silicon"}]
    assert short_reason(rows[0]["reason"]) == "no NVIDIA driver"
    assert not_run_footer(rows) == ("not run here: cuda-naive, cuda-graph (no NVIDIA driver); "
                                    "mlx-gpu (MLX has no GPU device here)")


def test_no_report_writes_only_the_results(tmp_path, talos_weights):
    proc = cli("run", "--backends", "numpy", "--weights", talos_weights, "--seconds", "0.05", "--repeats", "1",
               "--no-report", "--json", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"] and "report:" not in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--backends", "numpy,cobol"], "unknown backend 'cobol'; known backends: pure-python"),
    (["run", "--repeats", "0"], "must be >= 1"),
    (["run", "--seconds", "-2"], "must be a finite number > 0"),
    (["run", "--seconds", "nan"], "must be a finite number > 0"),
    (["run", "--seed", "-1"], "seeds are 32-bit"),
    (["names", "--count", "x"], "not a whole number"),
    (["names", "--backend", "nope"], "unknown backend 'nope'"),
    (["names", "--weights", "/nonexistent.npz"], "no such file"),
    (["run", "--seconds", "10", "--timeout", "20"], "more than --timeout 20 s"),
    (["run", "--seconds", "0.015"], "must be between 0.02 and 3600"),
    (["run", "--cpu", "x"], "is not a CPU list"),
    (["run", "--backends", "numpy", "--cpu", "4096"], "--cpu [4096] is not a subset"),
    (["run", "--scenario", "no-such-scenario"], "invalid choice"),
])
def test_bad_input_is_a_clear_error_with_exit_2(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_names_prints_the_original_readme_names(talos_weights):
    proc = cli("names", "--weights", talos_weights, "--count", "3", "--sampler", "python", "--seed", "42")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["sample  1: kana", "sample  2: keelan", "sample  3: alilan"]


def test_names_xorshift_with_backend(talos_weights):
    a = cli("names", "--weights", talos_weights, "--backend", "pure-python", "--sampler", "xorshift32")
    b = cli("names", "--weights", talos_weights, "--backend", "numpy", "--sampler", "xorshift32")
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout.splitlines()) == 20


def test_info_lists_backends_and_machine():
    proc = cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["machine"]["cores"] >= 1
    names = {b["backend"]: b for b in doc["backends"]}
    assert names["numpy"]["available"] and names["pure-python"]["available"]
    for b in doc["backends"]:
        assert b["available"] or b["reason"]
    text = cli("info").stdout
    assert "backends:" in text and "clock" in text


def test_weights_show_and_convert(tmp_path, talos_weights):
    out = tmp_path / "w.npz"
    assert cli("weights", "convert", talos_weights, str(out)).returncode == 0
    proc = cli("weights", "show", str(out))
    assert proc.returncode == 0 and "layer0.mlp_fc1" in proc.stdout and "format_version" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["sweep", "--streams", "0,4"], "values must be >= 1"),
    (["sweep", "--streams", "-2"], "values must be >= 1"),
    (["sweep", "--threads", "1,x"], "not a comma-separated list"),
    (["sweep", "--backend", "pure-python"], "has no offline scenario"),
    (["sweep", "--backend", "numpy", "--threads", "100000", "--streams", "4"], "--threads must be in"),
    (["run", "--scenario", "offline", "--backends", "numpy", "--threads", "100000"], "--threads must be in"),
    (["run", "--scenario", "offline", "--streams", "0"], "must be >= 1"),
])
def test_offline_arguments_are_checked(args, message):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_sweep_writes_points(tmp_path, talos_weights):
    out = tmp_path / "sweep.json"
    proc = cli("sweep", "--backend", "numpy", "--streams", "1,3", "--threads", "1", "--seconds", "0.05",
               "--repeats", "1", "--weights", talos_weights, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    points = doc["sweeps"][0]["points"]
    assert [(p["streams"], p["threads"], p["status"]) for p in points] == [(1, 1, "ok"), (3, 1, "ok")]
    assert all(p["tok_s"] > 0 for p in points) and doc["rows"][0]["scenario"] == "offline"
