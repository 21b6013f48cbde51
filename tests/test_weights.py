"""Every weight format, and every way a weight file can be bad."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from microgpt_bench.model import C_ORDER, TALOS_ORDER, TENSOR_SHAPES
from microgpt_bench.weights import (MANIFEST_KEY, WeightsError, load_weights, load_weights_with_manifest,
                                    save_npz)


@pytest.fixture(scope="module")
def talos(shared_data):
    return load_weights(shared_data / "talos" / "weights_only.npy")


def test_talos_dict_npy_loads_float32_values(talos):
    assert set(talos.tensors) == set(TENSOR_SHAPES)
    assert talos["wte"].shape == (27, 16) and talos["layer0.mlp_fc2"].shape == (16, 64)
    assert np.all(talos.flat("c") == talos.flat("c").astype(np.float32))


def test_rom_directory_matches_rounded_floats(shared_data, talos):
    rom = load_weights(shared_data / "talos" / "q12")
    expected = np.clip(np.rint(talos.flat() * 4096), -32768, 32767) / 4096
    assert np.array_equal(rom.flat(dtype=np.float64), expected)


@pytest.mark.parametrize("order", ["c", "talos"])
def test_flat_npy_and_bin_in_both_orders(tmp_path, talos, order):
    flat = talos.flat(order)
    np.save(tmp_path / "w.npy", flat)
    flat.astype("<f4").tofile(tmp_path / "w.bin")
    for name in ("w.npy", "w.bin"):
        got = load_weights(tmp_path / name, order=order)
        assert all(np.array_equal(got[n], talos[n]) for n in TENSOR_SHAPES)


def test_flat_orders_differ(talos):
    assert C_ORDER != TALOS_ORDER
    assert not np.array_equal(talos.flat("c"), talos.flat("talos"))


def test_npz_round_trip_with_manifest(tmp_path, talos):
    save_npz(talos, tmp_path / "m.npz", {"made_by": "test"})
    params, manifest = load_weights_with_manifest(tmp_path / "m.npz")
    assert manifest["made_by"] == "test" and manifest["format_version"] == 1
    assert np.array_equal(params.flat(), talos.flat())


def test_npz_contains_no_pickles(tmp_path, talos):
    save_npz(talos, tmp_path / "m.npz", {})
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        assert set(npz.files) == set(TENSOR_SHAPES) | {MANIFEST_KEY}


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    Evil.marker = marker
    arr = np.empty((), dtype=object)
    arr[()] = {"wte": Evil()}
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(WeightsError, match="refused to unpickle"):
        load_weights(tmp_path / "evil.npy")
    assert not marker.exists()


def test_pickle_of_a_non_dict_is_refused(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = [1, 2, 3]
    np.save(tmp_path / "list.npy", arr, allow_pickle=True)
    with pytest.raises(WeightsError, match="expected a dict"):
        load_weights(tmp_path / "list.npy")


def test_truncated_files_give_clear_errors(tmp_path, shared_data, talos):
    raw = (shared_data / "talos" / "weights_only.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(WeightsError, match="cut.npy"):
        load_weights(tmp_path / "cut.npy")
    talos.flat().tofile(tmp_path / "cut.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "cut.bin").read_bytes()[:-4])
    with pytest.raises(WeightsError, match="expected 16768"):
        load_weights(tmp_path / "cut.bin")
    save_npz(talos, tmp_path / "m.npz", {})
    (tmp_path / "cut.npz").write_bytes((tmp_path / "m.npz").read_bytes()[:500])
    with pytest.raises(WeightsError, match="not a readable .npz"):
        load_weights(tmp_path / "cut.npz")


def test_wrong_shape_and_nan_name_the_tensor(tmp_path, talos):
    bad = dict(talos.tensors)
    bad["layer0.attn_wk"] = np.zeros((16, 15))
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(WeightsError, match=r"layer0.attn_wk has shape \(16, 15\)"):
        load_weights(tmp_path / "shape.npz")
    bad = dict(talos.tensors)
    bad["lm_head"] = talos["lm_head"].copy()
    bad["lm_head"][3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(WeightsError, match="lm_head holds NaN"):
        load_weights(tmp_path / "nan.npz")


def test_missing_tensor_and_wrong_dtype(tmp_path, talos):
    bad = {k: v for k, v in talos.tensors.items() if k != "wpe"}
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(WeightsError, match="missing: \\['wpe'\\]"):
        load_weights(tmp_path / "missing.npz")
    bad = dict(talos.tensors)
    bad["wte"] = np.zeros((27, 16), dtype=np.complex64)
    np.savez(tmp_path / "dtype.npz", **bad)
    with pytest.raises(WeightsError, match="wte has dtype complex64"):
        load_weights(tmp_path / "dtype.npz")


def test_manifest_version_and_vocabulary_checked(tmp_path, talos):
    arrays = {k: v.astype(np.float32) for k, v in talos.tensors.items()}
    for manifest, msg in [({"format_version": 99}, "format_version 99"),
                          ({"format_version": 1, "vocabulary": "abc"}, "vocabulary")]:
        arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
        np.savez(tmp_path / "m.npz", **arrays)
        with pytest.raises(WeightsError, match=msg):
            load_weights(tmp_path / "m.npz")


def test_bad_rom_files(tmp_path, shared_data):
    rom = tmp_path / "rom"
    shutil.copytree(shared_data / "talos" / "q12", rom)
    path = rom / "wpe_q12.hex"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(WeightsError, match="wpe_q12.hex: 255 words, expected 256"):
        load_weights(rom)
    path.write_text("\n".join(["zz12"] + lines[1:]) + "\n")
    with pytest.raises(WeightsError, match="line 1: 'zz12'"):
        load_weights(rom)
    path.unlink()
    with pytest.raises(WeightsError, match="missing ROM wpe_q12.hex"):
        load_weights(rom)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(WeightsError, match="unknown weight format"):
        load_weights(tmp_path / "w.txt")
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(tmp_path / "nope.npz")


def test_wrong_size_flat_npy(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(100, np.float32))
    with pytest.raises(WeightsError, match="100 values, expected 4192"):
        load_weights(tmp_path / "w.npy")
