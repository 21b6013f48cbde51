"""Training: the corpus loader, the hand-written backward pass, and exactness against TALOS-V2."""
import hashlib
import math
import random

import numpy as np
import pytest

from microgpt_bench import train as tr
from microgpt_bench.model import BOS, N_PARAMS, TALOS_ORDER, Params, encode, reference_logits
from microgpt_bench.train import TrainingDataError, load_docs, train, training_manifest
from microgpt_bench.weights import load_weights


@pytest.fixture(scope="module")
def names(shared_data):
    return load_docs(shared_data / "names.txt")


@pytest.fixture(scope="module")
def full_run(names):
    """The default 1000-step training (about a second), shared by the tests that need it."""
    return train(names)


# ------------------------------------------------------------------ load_docs


def test_load_docs_strips_and_skips_blank_lines(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("emma\n\n  olivia  \n\t\nava\n")
    assert load_docs(corpus) == ["emma", "olivia", "ava"]


def test_names_corpus_loads(names):
    assert len(names) == 32033 and names[0] == "emma"


@pytest.mark.parametrize("bad_line, char",
                         [("Emma", "E"), ("jean-luc", "-"), ("zoë", "ë"), ("ann marie", " ")])
def test_load_docs_names_file_line_and_character(tmp_path, bad_line, char):
    corpus = tmp_path / "c.txt"
    corpus.write_text(f"emma\nolivia\n{bad_line}\nava\n", encoding="utf-8")
    with pytest.raises(TrainingDataError) as err:
        load_docs(corpus)
    message = str(err.value)
    assert str(corpus) in message and "line 3" in message
    assert repr(bad_line) in message and repr(char) in message


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_load_docs_empty_corpus_is_a_clear_error(tmp_path, text):
    corpus = tmp_path / "c.txt"
    corpus.write_text(text)
    with pytest.raises(TrainingDataError, match="no words"):
        load_docs(corpus)


def test_load_docs_missing_file(tmp_path):
    with pytest.raises(TrainingDataError, match="cannot read"):
        load_docs(tmp_path / "nope.txt")


def test_train_rejects_bad_documents():
    with pytest.raises(TrainingDataError):
        train([])
    with pytest.raises(TrainingDataError, match="'Bob'"):
        train(["ann", "Bob"], steps=1)


# --------------------------------------------------------- the model's maths


def _random_params(seed):
    rng = random.Random(seed)
    return tr._init_params(rng)[1]


def test_forward_matches_the_reference_model():
    w = _random_params(1)
    tokens = [BOS] + encode("isabella")
    logits, _ = tr._forward(w, np.array(tokens))
    # Not bit-equal: the reference divides by the softmax total, training multiplies by its inverse.
    np.testing.assert_allclose(logits, reference_logits(Params(w), tokens), rtol=0, atol=1e-13)


def test_backward_matches_finite_differences():
    w = _random_params(2)
    tokens = [BOS] + encode("annabelle") + [BOS]     # repeated letters exercise wte accumulation
    _, grads = tr._loss_and_grads(w, tokens)
    rng = np.random.default_rng(0)
    for name in TALOS_ORDER:
        nonzero = np.argwhere(grads[name] != 0)
        for idx in map(tuple, nonzero[rng.choice(len(nonzero), 4, replace=False)]):
            old, h = w[name][idx], 1e-6
            w[name][idx] = old + h
            up = tr._loss_and_grads(w, tokens)[0]
            w[name][idx] = old - h
            down = tr._loss_and_grads(w, tokens)[0]
            w[name][idx] = old
            assert grads[name][idx] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), (name, idx)


def test_long_documents_use_only_sixteen_positions():
    w = _random_params(3)
    loss, grads = tr._loss_and_grads(w, [BOS] + encode("a" * 30) + [BOS])
    assert math.isfinite(loss) and grads["wpe"].shape == (16, 16) and np.all(grads["wpe"][15] != 0)


# ------------------------------------------------------------------- training


def test_a_few_steps_are_fast_and_the_loss_falls(names):
    result = train(names, steps=60)
    assert len(result.losses) == 60 and result.seconds < 5
    assert abs(result.losses[0] - math.log(27)) < 0.3          # an untrained model is near uniform
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.3
    assert all(t.dtype == np.float64 for t in result.params.tensors.values())


def test_one_word_is_learned_by_heart():
    result = train(["anna"], steps=30)
    assert result.losses[-1] < 0.05 < 2 < result.losses[0]


def test_progress_is_called_every_step(names):
    seen = []
    train(names, steps=5, progress=lambda step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5] and all(math.isfinite(loss) for _, loss in seen)


def test_same_seed_same_weights_other_seed_other_weights(names):
    a, b, c = train(names, steps=20), train(names, steps=20), train(names, steps=20, seed=7)
    assert a.losses == b.losses
    assert np.array_equal(a.params.flat("talos", np.float64), b.params.flat("talos", np.float64))
    assert a.rng.getstate() == b.rng.getstate()
    assert not np.array_equal(a.params.flat("talos", np.float64), c.params.flat("talos", np.float64))


def test_rng_continues_after_shuffle_and_init_as_the_original(names):
    random.seed(42)              # the original's global-RNG recipe, replayed
    docs = list(names)
    random.shuffle(docs)
    for _ in range(N_PARAMS):
        random.gauss(0, 0.08)
    result = train(names, steps=1)
    assert result.rng.random() == random.random()


def test_default_training_reproduces_talos_weights_exactly(shared_data, full_run):
    """The acceptance check: the float32 cast equals TALOS-V2's weights_only.npy, every element."""
    talos = load_weights(shared_data / "talos" / "weights_only.npy")
    ours = full_run.params.flat("talos", np.float32)
    theirs = talos.flat("talos", np.float32)
    assert np.count_nonzero(ours != theirs) == 0
    assert np.abs(ours.astype(np.float64) - theirs).max() == 0.0
    assert len(full_run.losses) == 1000 and 2.0 < full_run.losses[-1] < 3.0


def test_training_manifest(shared_data, full_run):
    manifest = training_manifest(shared_data / "names.txt", 1000, 42, full_run)
    assert manifest["made_by"] == "microgpt-bench train"
    assert manifest["data_sha256"] == hashlib.sha256((shared_data / "names.txt").read_bytes()).hexdigest()
    assert manifest["steps"] == 1000 and manifest["seed"] == 42
    assert manifest["final_loss"] == full_run.losses[-1] and manifest["seconds"] >= 0
