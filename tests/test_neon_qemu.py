"""NEON against scalar and the host's vector path, under qemu-aarch64 (skipped without an
aarch64 cross compiler and qemu-aarch64): bit-identical tokens, offline streams and logits."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from microgpt_bench import native
from microgpt_bench.weights import load_weights_with_manifest

CROSS, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")

# prints one line per temperature (0.5, then 0: greedy): FNV hashes of 20,000 tokens,
# of 19 offline streams x 300 tokens (2 threads) and of one sequence's logits' bits
HARNESS = r"""
#include KERNEL
#include <stdio.h>
int main(int argc, char **argv) {
    static float w[MG_NPARAM];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(w, 4, MG_NPARAM, f) != MG_NPARAM) return 2;
    fclose(f);
    for (int g = 0; g < 2; g++) {
        void *m = PFX(create)(w, g ? 0.0f : 0.5f);
        static int32_t out[20000], off[19 * 300];
        if (PFX(generate)(m, 20000, 42, NULL, out) < 0 || PFX(generate_offline)(m, 19, 300, 5, 2, off) < 0) return 3;
        uint64_t h = 1469598103934665603ull, h2 = h;
        for (int i = 0; i < 20000; i++) h = (h ^ (uint64_t)out[i]) * 1099511628211ull;
        for (int i = 0; i < 19 * 300; i++) h2 = (h2 ^ (uint64_t)off[i]) * 1099511628211ull;
        float lg[16 * 27];
        int32_t toks[6] = {26, 4, 12, 12, 0, 26};
        if (PFX(logits)(m, toks, 6, lg)) return 4;
        uint32_t hb = 0;
        for (int i = 0; i < 6 * 27; i++) { uint32_t b; memcpy(&b, &lg[i], 4); hb = hb * 31 + b; }
        printf("%d %016llx %016llx %08x\n", g, (unsigned long long)h, (unsigned long long)h2, hb);
        PFX(destroy)(m);
    }
    return 0;
}
"""


def run_harness(tmp_path, kernel, compiler, flags, runner):
    src = tmp_path / "harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / f"h-{kernel}-{len(list(tmp_path.iterdir()))}"
    subprocess.run([compiler, "-O2", *flags, "-std=c11", f"-I{native.KERNEL_DIR}", f'-DKERNEL="mg_{kernel}.c"',
                    f"-DPFX(x)=mg_{kernel}_##x", str(src), "-o", str(exe), "-lm", "-pthread"], check=True)
    return subprocess.run([*runner, str(exe), str(tmp_path / "w.f32")], check=True, capture_output=True,
                          text=True, timeout=600).stdout


@pytest.mark.skipif(not (CROSS and QEMU and native.find_c_compiler()), reason="no aarch64 cross compiler / qemu")
@pytest.mark.parametrize("kernel", ["fp32", "q412"])
def test_neon_is_bit_identical_to_scalar_and_host(tmp_path, kernel):
    load_weights_with_manifest(None)[0].flat("c", np.float32).tofile(tmp_path / "w.f32")
    arm = ["-march=armv8.2-a", "-static"]
    neon = run_harness(tmp_path, kernel, CROSS, arm, [QEMU])
    arm_scalar = run_harness(tmp_path, kernel, CROSS, [*arm, "-DMG_FORCE_SCALAR"], [QEMU])
    host = run_harness(tmp_path, kernel, native.find_c_compiler().split()[0], ["-march=native"], [])
    assert len(neon.splitlines()) == 2
    assert neon == arm_scalar == host
