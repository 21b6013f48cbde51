"""Greedy decoding (temperature 0 and --sampler argmax) on every backend, and the temperature range."""
import numpy as np
import pytest

from microgpt_bench.backends import REGISTRY, availability, backend_class
from microgpt_bench.cli import main
from microgpt_bench.model import BLOCK_SIZE, BOS, reference_forward
from microgpt_bench.samplers import check_temperature, softmax_t, stream_seed
from microgpt_bench.weights import load_weights
from test_cli import cli

FLOAT_BACKENDS = sorted(n for n in REGISTRY if backend_class(n).greedy_at_zero_temperature)


@pytest.fixture(scope="module")
def params():
    return load_weights()


@pytest.fixture(scope="module")
def greedy_reference(params):
    """The float64 model decoded greedily: at each step the lowest index of the max logit."""
    w, out, tok, pos, keys, values = params.as_lists(), [], BOS, 0, [], []
    while len(out) < 40:
        logits = reference_forward(w, tok, pos, keys, values)
        tok = int(np.argmax(logits))  # numpy's argmax: the first (lowest) index of the maximum
        out.append(tok)
        pos += 1
        if tok == BOS or pos == BLOCK_SIZE:
            tok, pos, keys, values = BOS, 0, [], []
    return out


def make(name, params, temperature, sampler="xorshift32"):
    reason = availability(name)
    if reason:
        pytest.skip(f"{name} unavailable here: {reason}")
    cls = backend_class(name)
    if "argmax" not in cls.samplers:
        pytest.skip(f"{name} has no greedy decoding (samplers: {', '.join(cls.samplers)})")
    return cls.create(params, temperature, sampler)


@pytest.mark.parametrize("name", FLOAT_BACKENDS)
def test_temperature_zero_is_the_reference_argmax(name, params, greedy_reference):
    backend = make(name, params, 0.0)
    assert backend.temperature == 0.0
    assert list(backend.generate(40, 42)) == greedy_reference
    # the timed loop decodes greedily too: its checksum is the greedy tokens' sum
    assert backend.timed_generate(40, 7) == sum(greedy_reference)


@pytest.mark.parametrize("name", FLOAT_BACKENDS)
def test_sampler_argmax_is_greedy_whatever_the_temperature(name, params, greedy_reference):
    backend = make(name, params, 0.5, "argmax")
    assert list(backend.generate(40, 42, "argmax")) == greedy_reference


@pytest.mark.parametrize("name", sorted(n for n in FLOAT_BACKENDS if "offline" in backend_class(n).scenarios))
def test_offline_greedy_streams_equal_single_stream(name, params, greedy_reference):
    backend = make(name, params, 0.0)
    out = np.asarray(backend.generate_offline(3, 40, 42))
    assert out.shape == (3, 40)
    assert all(list(row) == greedy_reference for row in out)


def test_greedy_distribution_is_one_hot_at_the_lowest_maximum():
    assert softmax_t([1.0, 3.0, 3.0, 2.0], 0).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert np.array_equal(softmax_t(np.array([[0.0, 1.0], [5.0, 5.0]]), 0), [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 1e-39, 5e-4, 1e3 + 1, "x"])
def test_float_backends_refuse_bad_temperatures(bad):
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(bad)


@pytest.mark.parametrize("args, message", [
    (["names", "--temperature", "-0.5"], "finite number >= 0"),
    (["names", "--temperature", "nan"], "finite number >= 0"),
    (["names", "--temperature", "inf"], "finite number >= 0"),
    (["names", "--temperature", "1e-39"], "0 (greedy) or in 0.001..1000"),
    (["names", "--temperature", "2000"], "0 (greedy) or in 0.001..1000"),
    (["names", "--backend", "talos-emu-py", "--temperature", "256"], "Q8.8: 0..255.996"),
    (["names", "--backend", "talos-emu-py", "--temperature", "-1"], "finite number >= 0"),
    (["run", "--backends", "numpy", "--temperature", "1e-39"], "--temperature for numpy"),
    (["run", "--backends", "talos-emu-py", "--temperature", "300"], "Q8.8"),
    (["run", "--backends", "numpy", "--sampler", "python"], "invalid choice"),
    (["names", "--backend", "talos-emu-py", "--sampler", "xorshift32"], "supports samplers talos, argmax"),
])
def test_bad_temperature_and_sampler_combinations_exit_2(args, message):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("microgpt-bench: error:") or "usage:" in proc.stderr


def test_names_at_temperature_zero_repeat_the_greedy_name(capsys, greedy_reference):
    assert main(["names", "--temperature", "0", "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and len({line.split(": ")[1] for line in out}) == 1


def test_names_argmax_on_talos_emu_is_its_sample_mode_0(capsys):
    assert main(["names", "--backend", "talos-emu-py", "--sampler", "argmax", "--count", "2"]) == 0
    first = capsys.readouterr().out
    assert main(["names", "--backend", "talos-emu-py", "--sampler", "argmax", "--count", "2", "--seed", "9"]) == 0
    assert capsys.readouterr().out == first  # greedy: the seed plays no part


def test_talos_emu_takes_temperature_zero_and_samples(capsys):
    assert main(["names", "--backend", "talos-emu-py", "--temperature", "0", "--count", "5"]) == 0
    names = [line.split(": ")[1] for line in capsys.readouterr().out.splitlines()]
    assert len(names) == 5 and len(set(names)) > 1  # sampled, not greedy


def test_run_with_argmax_times_greedy_rows(tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "--backends", "numpy,talos-emu-py", "--sampler", "argmax", "--seconds", "0.05",
                 "--repeats", "1", "--quiet", "--json", str(out)]) == 0
    import json
    data = json.loads(out.read_text())
    assert data["config"]["sampler"] == "argmax"
    rows = {r["backend"]: r for r in data["rows"]}
    assert rows["numpy"]["status"] == "ok" and rows["talos-emu-py"]["status"] == "ok"
    assert rows["talos-emu-py"]["info"]["sample_mode"] == 0


def test_stream_seed_does_not_matter_when_greedy(params, greedy_reference):
    backend = make("numpy", params, 0.0)
    assert list(backend.generate(40, stream_seed(42, 5))) == greedy_reference
