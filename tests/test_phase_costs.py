"""scripts/phase_costs.py: each phase hook repeats its phase without changing the tokens,
and the script reports every hooked phase of the offline pass."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from script_module import load_script

from microgpt_bench import native
from microgpt_bench.weights import load_weights



@pytest.fixture(scope="module")
def script():
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    return load_script("phase_costs")


@pytest.mark.parametrize("backend", ["c-fp32", "c-q412"])
def test_every_phase_is_hooked_and_keeps_the_tokens(script, tmp_path, backend):
    variant = script.default_variant()
    if variant.startswith("scalar"):
        pytest.skip("the scalar path has no offline pass to hook")
    out = tmp_path / "phases.json"
    # main() exits with an error if any repeated phase changed the checksum of the tokens
    assert script.main(["--backend", backend, "--streams", "32", "--tokens", "40", "--rounds", "1",
                        "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["variant"] == variant and doc["clock_ghz"] > 0
    for phase in script.PHASES:  # both kernels' passes hook all seven
        assert doc["phases"][phase.lower()] is not None, phase
    assert doc["phases"]["baseline"]["cycles"] > 0 and doc["phases"]["shipped"]["cycles"] > 0


def test_a_phase_repeat_really_runs_twice(script):
    """The QKV build differs from the baseline (the hook is compiled in) and gives the same tokens."""
    variant = script.default_variant()
    if variant.startswith("scalar"):
        pytest.skip("the scalar path has no offline pass to hook")
    w = np.ascontiguousarray(load_weights(None).flat("c", np.float32))
    base = script.open_build("fp32", variant, w, 0.5, "baseline")
    qkv = script.open_build("fp32", variant, w, 0.5, "QKV")
    assert Path(base["library"]).read_bytes() != Path(qkv["library"]).read_bytes()
    out = np.zeros(32 * 30, np.int32)
    sums = [script.time_round(b, 32, 30, 7, out) for b in (base, qkv)]
    assert sums[0] == sums[1] and sums[0] > 0


def test_bad_arguments_are_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--variant", "no-such-variant"])
    assert "unknown variant" in capsys.readouterr().err


def test_a_hook_that_changed_the_tokens_is_caught(script, monkeypatch):
    if script.default_variant().startswith("scalar"):
        pytest.skip("the scalar path has no offline pass to hook")
    real = script.time_round

    def skewed(build, *args):  # as if the repeated attention moved a token
        return real(build, *args) + (build["phase"] == "ATTENTION")

    monkeypatch.setattr(script, "time_round", skewed)
    with pytest.raises(SystemExit, match="changed the tokens"):
        script.main(["--streams", "16", "--tokens", "20", "--rounds", "1"])
