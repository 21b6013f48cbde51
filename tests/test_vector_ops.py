"""scripts/vector_ops.py and trace_ops.c: an exact dynamic count of what an offline pass
executes (x86-64 Linux, ptrace), checked against counts the kernels' structure fixes."""
from __future__ import annotations

import json
import platform
import subprocess

import pytest

from script_module import load_script

from microgpt_bench import machine, native

FIXED_MACS = 3504                 # the matvecs' multiply-adds a token (mg_model.h)
FIRST_STEPS_FP32 = 1048           # multiplies, not FMAs: each canonical chain's first step


@pytest.fixture(scope="module")
def script():
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("the tracer single-steps x86-64 under Linux ptrace")
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    mod = load_script("vector_ops")
    probe = subprocess.run([str(mod.tracer())], capture_output=True, text=True)
    if probe.returncode != 2:  # usage error: it runs
        pytest.skip(f"the tracer does not run here: {probe.stderr[:200]}")
    return mod


def lanes_of(variant: str) -> int:
    return 16 if variant.startswith("avx512") else 8


def test_q412_does_every_matvec_multiply_add_with_vnni(script):
    if "avx512_vnni" not in machine.cpu_flags():
        pytest.skip("no AVX-512 VNNI")
    got = script.per_token("q412", "avx512", 16, 4)
    # 3,504 int16 multiply-adds a token, two per 32-bit lane of a vpdpwssd over 16 streams: exactly
    assert got["vpdpwssd"] == FIXED_MACS / 2 / 16
    assert 3504 + 32 <= got["macs"] <= 3504 + 32 * 16
    assert got["vector_alu"] == got["vector"] - got["vector_moves"] > got["vpdpwssd"]


def test_fp32_counts_are_exact_and_hold_the_canonical_chains(script):
    variant = "avx512" if "avx512f" in machine.cpu_flags() else "avx2"
    if variant == "avx2" and "avx2" not in machine.cpu_flags():
        pytest.skip("no AVX2")
    first = script.per_token("fp32", variant, 16, 4)
    assert script.per_token("fp32", variant, 16, 4) == first  # a count, not a timing: the same twice
    # every chain step after the first is an FMA over `lanes` streams; the attention and exp2 add more
    assert first["fma"] * lanes_of(variant) >= FIXED_MACS - FIRST_STEPS_FP32
    assert first["instructions"] > first["vector"] > first["vector_moves"] > 0


def test_main_prints_the_bound_and_writes_json(script, tmp_path, capsys):
    out = tmp_path / "ops.json"
    variant = "avx512" if "avx512f" in machine.cpu_flags() else "avx2"
    assert script.main(["--backend", "c-q412", "--variant", variant, "--streams", "16", "--tokens", "3",
                        "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["per_token"]["vector_alu"] > 0 and doc["backend"] == "c-q412"
    if doc.get("vector_alu_bound_cycles"):
        assert "vector ALU instructions" in capsys.readouterr().out


def test_a_library_that_is_not_a_kernel_is_a_clear_error(script, tmp_path):
    weights = tmp_path / "w.f32"
    weights.write_bytes(b"\0" * 64)
    with pytest.raises(RuntimeError, match="trace_ops exited"):
        script.count_call(str(tmp_path / "missing.so"), "fp32", str(weights), 16, 2, 1)


@pytest.mark.parametrize("args", [["--streams", "0"], ["--variant", "no-such"]])
def test_bad_arguments_are_usage_errors(script, args):
    with pytest.raises(SystemExit) as exc:
        script.main(args)
    assert exc.value.code == 2
