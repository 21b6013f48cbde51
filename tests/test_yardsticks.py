"""The plain C ports that `scripts/bench_c.py --original` times as yardsticks do the
same work as the tuned kernels: the same generation loop, the same sampler draws, so
the same tokens (their checksums agree with c-fp32's and c-q412's over thousands of
tokens). A yardstick that generated something else would make its ratio meaningless."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from microgpt_bench import native
from microgpt_bench.backends.c_native import CFp32Backend, CQ412Backend
from microgpt_bench.weights import load_weights

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def params(shared_data):
    return load_weights(shared_data / "talos" / "weights_only.npy")


@pytest.mark.parametrize("source, cls", [("plain_microgpt.c", CFp32Backend),
                                         ("plain_microgpt_q412.c", CQ412Backend)])
def test_yardstick_generates_the_tuned_kernels_tokens(params, tmp_path, source, cls):
    cc = shutil.which("clang") or native.find_c_compiler()
    if not cc or cls.availability():
        pytest.skip("no C compiler / native backend here")
    exe, weights = tmp_path / "plain", tmp_path / "w.f32"
    params.flat("c", np.float32).tofile(weights)
    subprocess.run(cc.split() + ["-O3", "-ffast-math", "-std=c11", str(SCRIPTS / source), "-o", str(exe), "-lm"],
                   check=True)
    tuned = cls(params)
    try:
        for n, seed in ((3000, 42), (3000, 7)):
            out = subprocess.run([str(exe), str(weights), str(n), str(seed)], check=True, capture_output=True,
                                 text=True).stdout.split()
            ns_per_token, checksum = float(out[0]), int(out[1])
            assert ns_per_token > 0
            assert checksum == tuned.timed_generate(n, seed)
    finally:
        tuned.close()


def test_yardstick_rejects_unreadable_weights(tmp_path):
    cc = native.find_c_compiler()
    if not cc:
        pytest.skip("no C compiler here")
    exe = tmp_path / "plain"
    subprocess.run(cc.split() + ["-O2", "-std=c11", str(SCRIPTS / "plain_microgpt_q412.c"), "-o", str(exe), "-lm"],
                   check=True)
    short = tmp_path / "short.f32"
    short.write_bytes(b"\0" * 100)
    r = subprocess.run([str(exe), str(short), "10", "42"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read 4192" in r.stderr
