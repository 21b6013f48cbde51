"""The accuracy table: divergence from the float64 model, next to speed."""
import numpy as np
import pytest

from microgpt_bench.accuracy import kl_floored, measure_accuracy, reference_contexts
from microgpt_bench.backends import availability, backend_class
from microgpt_bench.weights import load_weights


@pytest.fixture(scope="module")
def setup(shared_data):
    params = load_weights(shared_data / "talos" / "weights_only.npy")
    seqs, logits = reference_contexts(params, 0.5, steps=400)
    return params, seqs, logits


def acc(name, setup):
    params, seqs, logits = setup
    if availability(name):
        pytest.skip(f"{name}: {availability(name)}")
    return measure_accuracy(backend_class(name)(params, 0.5), seqs, logits, 0.5)


def test_contexts_cover_the_requested_steps(setup):
    _, seqs, logits = setup
    assert sum(len(s) for s in seqs) == 400
    assert all(len(s) == len(x) for s, x in zip(seqs, logits))


def test_fp32_rows_are_near_zero_and_stable(setup):
    a, b = acc("numpy", setup), acc("numpy", setup)
    assert a == b
    assert a["mean_kl"] < 1e-9 and a["token_differs_share"] == 0.0


def test_talos_draws_from_a_visibly_different_distribution(setup):
    a = acc("talos-emu", setup)
    assert a == acc("talos-emu", setup)
    assert a["mean_kl"] > 0.01 and 0.01 < a["token_differs_share"] < 0.9
    assert "TALOS" in a["distribution"]


def test_kl_of_identical_distributions_is_zero_and_positive_otherwise():
    p = np.array([0.5, 0.5, 0.0])
    assert kl_floored(p, p) == 0.0
    assert kl_floored(p, np.array([0.9, 0.1, 0.0])) > 0.3


def test_report_shows_the_accuracy_table(tmp_path):
    from pathlib import Path

    from microgpt_bench.report import write_report
    measured = Path(__file__).resolve().parents[1] / "docs" / "measured" / "dev-epyc-2core.json"
    write_report([measured], tmp_path)
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Accuracy"):]
    assert "TALOS sampler weight table" in section and "c-q412" in section
