"""What the package ships and derives: names.txt, the RTL vectors, TALOS-V2's ROMs and pickled dict."""
import hashlib

import numpy as np

from conftest import (NAMES_SHA256, PUBLISHED_ROM_SHA256, PUBLISHED_WEIGHTS_NPY_SHA256, RTL_VECTORS_SHA256,
                      write_talos_style_npy)
from microgpt_bench import talos
from microgpt_bench.cli import main
from microgpt_bench.weights import ROM_NAMES, load_weights, save_rom_dir, shipped_data_path


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_files_are_the_published_ones():
    assert sha256(shipped_data_path("names.txt")) == NAMES_SHA256
    assert sha256(shipped_data_path("talos-rtl-vectors.jsonl")) == RTL_VECTORS_SHA256
    notice = shipped_data_path("README.md").read_text()
    assert "MIT License" in notice and "makemore" in notice and NAMES_SHA256 in notice


def test_rom_export_equals_talos_v2s_published_roms(tmp_path):
    written = save_rom_dir(load_weights(), tmp_path)
    assert sorted(p.name for p in written) == sorted(ROM_NAMES.values()) == sorted(PUBLISHED_ROM_SHA256)
    assert {p.name: sha256(p) for p in written} == PUBLISHED_ROM_SHA256


def test_rom_export_round_trips(tmp_path):
    params = load_weights()
    save_rom_dir(params, tmp_path)
    rom = load_weights(tmp_path)
    assert np.array_equal(rom.flat(dtype=np.float64), np.clip(np.rint(params.flat() * 4096), -32768, 32767) / 4096)


def test_talos_style_pickle_is_byte_identical_to_talos_v2s(tmp_path):
    """The shipped weights pickled as TALOS-V2 pickles them give its file, byte for byte (numpy 2
    writes the module paths its file names; numpy 1 pickles would differ in those bytes only)."""
    path = write_talos_style_npy(load_weights(), tmp_path / "weights_only.npy")
    assert np.array_equal(load_weights(path).flat(), load_weights().flat())
    if int(np.__version__.split(".")[0]) >= 2:
        assert sha256(path) == PUBLISHED_WEIGHTS_NPY_SHA256


def test_the_emulator_finds_the_shipped_vectors(monkeypatch):
    monkeypatch.delenv("MICROGPT_BENCH_TALOS_VECTORS", raising=False)
    assert talos.find_vectors() == shipped_data_path("talos-rtl-vectors.jsonl")
    assert talos.find_vectors().is_file()


def test_missing_vectors_fail_the_talos_gate(monkeypatch, tmp_path):
    from microgpt_bench.backends.talos_emu import TalosEmuPyBackend
    from microgpt_bench.harness import PROBE
    from microgpt_bench.model import reference_logits

    monkeypatch.setenv("MICROGPT_BENCH_TALOS_VECTORS", str(tmp_path / "gone.jsonl"))
    params = load_weights()
    gate = TalosEmuPyBackend(params).custom_gate(PROBE[:1], [reference_logits(params, PROBE[0])])
    assert not gate["passed"] and "missing" in gate["failure"]


def test_train_defaults_to_the_shipped_names(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    from microgpt_bench.train import load_docs
    n_docs = len(load_docs(shipped_data_path("names.txt")))
    assert n_docs > 32_000 and f"on {n_docs} documents" in capsys.readouterr().out and out.exists()


def test_weights_export_rom_command(tmp_path, capsys):
    assert main(["weights", "export-rom", str(tmp_path / "rom")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 9
    assert {p.name: sha256(p) for p in (tmp_path / "rom").iterdir()} == PUBLISHED_ROM_SHA256
