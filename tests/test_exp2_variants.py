"""The avx512-scalef variant's exp2 (VREDUCEPS, VSCALEFPS) gives the add form's bits."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from microgpt_bench import native
from microgpt_bench.backends import c_native

SOURCE = Path(__file__).with_name("exp2_variants.c")


def build(variant: str):
    if c_native.candidate_variants().get(variant, "not this architecture"):
        pytest.skip(f"{variant} not runnable here")
    cc = native.find_c_compiler()
    flags = [*c_native.variant_flags(variant), f"-I{native.KERNEL_DIR}"]
    lib, _ = native.build_and_load(f"test-exp2-{variant}", [SOURCE], cc, flags, link=["-lm"])
    for fn in (lib.exp2_nc, lib.exp2_clamped, lib.exp2_live):
        fn.restype = None
    return lib


def inputs() -> np.ndarray:
    """Every 251st float in [-126, 64] by bit pattern, both signs, and the edges: the
    integers and half-integers with their neighbours, where rint's ties and the scaling live."""
    neg = np.arange(np.float32(-0.0).view(np.uint32), np.float32(-126.0).view(np.uint32) + 1, 251, dtype=np.uint32)
    pos = np.arange(0, np.float32(64.0).view(np.uint32) + 1, 251, dtype=np.uint32)
    grid = np.arange(-252, 129, dtype=np.float32) / 2  # -126 .. 64 in halves
    edges = np.concatenate([grid, np.nextafter(grid, np.float32(-np.inf)), np.nextafter(grid, np.float32(np.inf))])
    x = np.concatenate([neg.view(np.float32), pos.view(np.float32), edges[(edges >= -126) & (edges <= 64)]])
    return np.ascontiguousarray(np.pad(x, (0, -len(x) % 16), constant_values=np.float32(1.0)), dtype=np.float32)


def run(lib, name, x, *extra):
    out = np.empty_like(x)
    getattr(lib, name)(native.float_ptr(x), native.float_ptr(out), ctypes.c_long(len(x)), *extra)
    return out


def test_scalef_exp2_is_bit_identical_to_the_add_form():
    add, scalef = build("avx512"), build("avx512-scalef")
    x = inputs()
    assert len(x) > 8_000_000
    a = run(add, "exp2_nc", x)
    assert np.array_equal(a.view(np.uint32), run(scalef, "exp2_nc", x).view(np.uint32))
    assert np.allclose(a, np.exp2(x.astype(np.float64)), rtol=3e-7, atol=0)  # and it is 2^x
    below = np.linspace(-400, -126, 4096, dtype=np.float32)  # the clamp's side
    assert np.array_equal(run(add, "exp2_clamped", below).view(np.uint32),
                          run(scalef, "exp2_clamped", below).view(np.uint32))
    live = ctypes.c_uint(0b1010_0110_0011_1001)
    got, want = run(scalef, "exp2_live", x[:1 << 16], live), run(add, "exp2_live", x[:1 << 16], live)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    lanes = np.array([(0b1010_0110_0011_1001 >> (i % 16)) & 1 for i in range(1 << 16)], bool)
    assert not got[~lanes].any() and np.array_equal(got[lanes], a[: 1 << 16][lanes])
