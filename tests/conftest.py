"""Shared fixtures: the test data, all from this repository (nothing outside it is read).

`shared_data` is a directory laid out as the public data is (names.txt, talos/...),
built once per session from what the package ships and what the tool derives:
  - names.txt and talos/rtl-vectors.jsonl: copies of the shipped package data;
  - talos/q12/*.hex: the tool's own Q4.12 export of the shipped weights
    (weights.save_rom_dir), which must equal TALOS-V2's published ROM images;
  - talos/weights_only.npy: a TALOS-style pickled dict of the 9 float32 arrays,
    made with np.save(..., allow_pickle=True) as TALOS-V2 made its file.
TALOS-V2's own weight and ROM files are outside its Apache-2.0 licence, so they
are derived, never copied. Missing data is a failure, never a skip.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from microgpt_bench.weights import load_weights, save_rom_dir, shipped_data_path

ROOT = Path(__file__).resolve().parents[1]

# sha256 of TALOS-V2's published ROM images (rtl/generated/*_q12.hex, commit 86d346e), as
# listed with the public data's sources: facts the derived ROMs are checked against.
PUBLISHED_ROM_SHA256 = {
    "layer0_attn_wk_q12.hex": "941e33e3c49a87869b7de7527734febb9ba5c7fc9ba4e51877a95930e77c9b06",
    "layer0_attn_wo_q12.hex": "9c21eebec2fd3ebbb97e3e011e58b51d37db617da6a2728898ffd31d17df0bbb",
    "layer0_attn_wq_q12.hex": "8a24dae76d0ba30275fe39609777035229e13d45bc81a4c4320a239461570518",
    "layer0_attn_wv_q12.hex": "11ee2a38d23fb1b45bab3e16e3ecccdd2513705d103f7a2455a9e30e5cc1a167",
    "layer0_mlp_fc1_q12.hex": "ebcad7a116e863c8c1bccda8f949120189d1ff3f888b017e1dd0926308a5c52b",
    "layer0_mlp_fc2_q12.hex": "2095d952f0817fec5f463b74cfb9252c87ff115ea5da35dec0342a484df20852",
    "lm_head_q12.hex": "94910236e6f473378d3e651ac8a912120cba121e8aeda0a8481dd06b0863b8e1",
    "wpe_q12.hex": "82a5fd6881266d4605d143bcb01493dbf69c9dce399cbe628a015277f1449fa2",
    "wte_q12.hex": "4329f3e273feef8b891e318a210fe68052744e650c30dd1a68740a1c64c7f419",
}
# sha256 of TALOS-V2's rtl/microgpt/weights_only.npy (commit 86d346e) and of names.txt
PUBLISHED_WEIGHTS_NPY_SHA256 = "9709848b14261aa31cd538352edad15d39951f9848b3f88c86137eff0bbbd702"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
RTL_VECTORS_SHA256 = "83f7af46e8ed27d08564b8d5379523058917409cc4507d2dee30a194658e7491"
# the tensor order of TALOS-V2's pickled dict
TALOS_DICT_ORDER = ["wte", "wpe", "lm_head", "layer0.attn_wq", "layer0.attn_wk", "layer0.attn_wv",
                    "layer0.attn_wo", "layer0.mlp_fc1", "layer0.mlp_fc2"]


def write_talos_style_npy(params, path: Path) -> Path:
    """A pickled dict of float32 arrays in an .npy, the way TALOS-V2 stores its weights."""
    np.save(path, {name: params[name].astype(np.float32) for name in TALOS_DICT_ORDER}, allow_pickle=True)
    return path


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    shutil.copyfile(shipped_data_path("names.txt"), root / "names.txt")
    talos = root / "talos"
    talos.mkdir()
    shutil.copyfile(shipped_data_path("talos-rtl-vectors.jsonl"), talos / "rtl-vectors.jsonl")
    params = load_weights()
    save_rom_dir(params, talos / "q12")
    write_talos_style_npy(params, talos / "weights_only.npy")
    return root
