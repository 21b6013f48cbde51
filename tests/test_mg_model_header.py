"""kernels/mg_model.h is the one statement of the model's shape, offsets and error codes
for the C side; the Python constants must agree with it."""
from __future__ import annotations

import re

from microgpt_bench import model, native
from microgpt_bench.backends import c_native


def header_defines() -> dict[str, int]:
    text = (native.KERNEL_DIR / "mg_model.h").read_text()
    return {name: int(value) for name, value in re.findall(r"#define (\w+) \(?(-?\d+)\)?", text)}


def test_shape_matches_model_py():
    d = header_defines()
    assert (d["MG_VOCAB"], d["MG_BOS"], d["MG_E"], d["MG_HEADS"], d["MG_HEAD_DIM"]) == (
        model.VOCAB, model.BOS, model.N_EMBD, model.N_HEAD, model.HEAD_DIM)
    assert (d["MG_HID"], d["MG_CTX"], d["MG_NPARAM"]) == (model.N_HIDDEN, model.BLOCK_SIZE, model.N_PARAMS)


def test_offsets_are_the_c_flat_order():
    d = header_defines()
    names = ["OFF_WTE", "OFF_WPE", "OFF_WQ", "OFF_WK", "OFF_WV", "OFF_WO", "OFF_FC1", "OFF_FC2", "OFF_LM"]
    offset = 0
    for macro, tensor in zip(names, model.C_ORDER, strict=True):
        assert d[macro] == offset, (macro, tensor)
        rows, cols = model.TENSOR_SHAPES[tensor]
        offset += rows * cols
    assert offset == d["MG_NPARAM"]


def test_multiply_add_count_matches_the_shape():
    d = header_defines()
    e, hid, v = model.N_EMBD, model.N_HIDDEN, model.VOCAB
    assert d["MG_MACS_FIXED"] == 4 * e * e + 2 * e * hid + v * e
    assert d["MG_MACS_PER_POS"] == 2 * model.N_HEAD * model.HEAD_DIM


def test_error_codes_match_c_native():
    d = header_defines()
    codes = {v for k, v in d.items() if k.startswith("MG_ERR_")}
    assert codes == set(c_native.ERRORS)


def test_every_c_source_includes_the_header():
    for name in ("mg_common.h", "mg_cuda.cu", "talos_emu.c"):
        assert '#include "mg_model.h"' in (native.KERNEL_DIR / name).read_text(), name
    for name in ("mg_cuda.cu", "talos_emu.c", "mg_common.h"):
        text = (native.KERNEL_DIR / name).read_text()
        assert not re.search(r"#define OFF_WTE 0|#define \w*VOCAB 27", text), f"{name} repeats the shape"
