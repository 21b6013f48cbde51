"""Hostile and careless input (issue 12): bounded memory, no hang, no lost result,
no wrong number published, no stray process. Every case runs where a failure
cannot take the test run down: a subprocess under a memory limit, or a timeout."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fakes
from microgpt_bench import native
from microgpt_bench.backends import PluginError, availability, backend_class, parse_backend_list, plugins
from microgpt_bench.model import N_PARAMS, TENSOR_SHAPES, Params
from microgpt_bench.weights import (MANIFEST_KEY, WeightsError, load_weights, read_rom_hex, save_npz,
                                    shipped_weights_path)

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)
MEMORY_LIMIT = 2 << 30  # address space for a loading subprocess: numpy needs < 1 GB of it


def env(**extra) -> dict:
    out = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, TESTS]))
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def cli(*args, timeout=120, cwd=None, **extra):
    return subprocess.run([sys.executable, "-m", "microgpt_bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(**extra), cwd=cwd)


def one_line_exit_2(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines[-1]) < 700 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for word in words:
        assert word in lines[-1], lines[-1]


def load_limited(path, timeout=60, cwd=None) -> subprocess.CompletedProcess:
    """load_weights(path) in a subprocess with at most MEMORY_LIMIT of address space."""
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
        from microgpt_bench.weights import WeightsError, load_weights
        try:
            load_weights(sys.argv[1])
        except WeightsError as exc:
            print("REFUSED", exc)
        else:
            print("LOADED")
    """)
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=timeout, env=env(), cwd=cwd)


def assert_refused(path, *words):
    proc = load_limited(path)
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), (proc.returncode, proc.stderr[-2000:])
    assert len(proc.stdout) < 700, proc.stdout[:700]
    for word in words:
        assert word in proc.stdout, proc.stdout


@pytest.fixture(scope="module")
def params():
    return load_weights()


def pickled_npy(path: Path, obj) -> Path:
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)
    return path


def npy_with_header(path: Path, header: dict, payload: bytes = b"\0" * 64) -> Path:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + payload)
    return path


def raw_pickle_npy(path: Path, pickle_bytes: bytes) -> Path:
    """A .npy whose header says 'pickled object' followed by hand-made pickle bytes."""
    return npy_with_header(path, {"descr": "|O", "fortran_order": False, "shape": ()}, pickle_bytes)


# =============================================== kind 1: memory and time bounded


def test_billion_laughs_pickle_is_refused_before_any_conversion(tmp_path):
    nest = [0.0]
    for _ in range(40):  # 2**40 leaves, a few KB pickled: memo-shared
        nest = [nest, nest]
    path = pickled_npy(tmp_path / "laughs.npy", {name: nest for name in TENSOR_SHAPES})
    assert path.stat().st_size < 20_000
    assert_refused(path, "is a list, expected an array")


def test_billion_laughs_inside_an_object_array_is_refused(tmp_path):
    nest = [0.0]
    for _ in range(40):
        nest = [nest, nest]
    inner = np.empty((1,), dtype=object)
    inner[0] = nest
    assert_refused(pickled_npy(tmp_path / "obj.npy", {name: inner for name in TENSOR_SHAPES}), "dtype object")


@pytest.mark.parametrize("shape", [(10**12,), (10**6, 10**6), (2**62, 4), (4192, 10**9)])
def test_npy_header_with_a_huge_shape_is_refused_before_allocating(tmp_path, shape):
    path = npy_with_header(tmp_path / "huge.npy", {"descr": "<f4", "fortran_order": False, "shape": shape})
    assert_refused(path, "expected 4192")


def test_npz_member_that_inflates_hugely_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("wte.npy", "w", force_zip64=True) as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(300):  # 300 MB of zeros, a few hundred KB compressed
                fh.write(chunk)
    assert path.stat().st_size < 2 << 20
    assert_refused(path, "inflates to")


def test_npz_member_whose_declared_size_lies_is_read_no_further_than_the_cap(tmp_path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wte.npy", b"\0" * (8 << 20))
    raw = bytearray(path.read_bytes())
    # patch the declared uncompressed size (local header and central directory) to 1 KB
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(sig)
        raw[at + offset:at + offset + 4] = struct.pack("<I", 1024)
    path.write_bytes(bytes(raw))
    assert_refused(path)


@pytest.mark.parametrize("n_words", [
    2_000_000,     # 10 MB: far beyond any ROM's size
    27 * 16 + 1,   # one word too many
])
def test_rom_hex_is_bounded(tmp_path, n_words):
    path = tmp_path / "wte_q12.hex"
    path.write_text("0000\n" * n_words)
    with pytest.raises(WeightsError, match="more than|at most"):
        read_rom_hex(path, 27 * 16)


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["zero", "fifo"])
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".bin"])
def test_special_files_as_weights_neither_hang_nor_exhaust_memory(tmp_path, kind, suffix):
    path = tmp_path / f"w{suffix}"
    if kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        make_fifo(path)
    assert_refused(path, "not a regular file")


@pytest.mark.parametrize("kind", ["zero", "fifo", "big"])
def test_special_or_huge_training_data_is_refused_quickly(tmp_path, kind):
    path = tmp_path / "names.txt"
    if kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        make_fifo(path)
    else:
        with open(path, "wb") as fh:
            fh.truncate(100 << 20)  # sparse: 100 MB of size, no disk
    proc = cli("train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "m.npz"), timeout=60)
    one_line_exit_2(proc, str(path))
    assert not (tmp_path / "m.npz").exists()


def test_rom_directory_with_a_special_file_is_refused(tmp_path, params):
    from microgpt_bench.weights import ROM_NAMES
    for name, fname in ROM_NAMES.items():
        (tmp_path / fname).write_text("0000\n" * params[name].size)
    (tmp_path / ROM_NAMES["wte"]).unlink()
    (tmp_path / ROM_NAMES["wte"]).symlink_to("/dev/zero")
    assert_refused(tmp_path, "not a regular file")


@pytest.mark.parametrize("length, word", [(3_000_000, "unexpected"), (20_000_000, "bytes")])
def test_a_huge_tensor_name_gives_a_short_message(tmp_path, params, length, word):
    tensors = {**params.tensors, "x" * length: np.zeros(1)}
    assert_refused(pickled_npy(tmp_path / "name.npy", tensors), word)


@pytest.mark.parametrize("args, message", [
    (["run", "--streams", str(10**12)], "must be <= 65,536"),
    (["run", "--scenario", "offline", "--streams", str(2**31 - 1)], "must be <= 65,536"),
    (["sweep", "--streams", f"1,{10**12}"], "<= 65,536"),
    (["sweep", "--streams", ",".join(["1"] * 100)], "at most 64 values"),
    (["names", "--count", str(10**9)], "must be <= 10,000"),
    (["train", "--steps", str(2**31 - 1)], "must be <= 1,000,000"),
    (["run", "--repeats", str(10**20)], "must be <= 1,000"),
    (["run", "--seconds", "1e308"], "must be between"),
    (["run", "--seconds", "1e6"], "must be between"),
    (["run", "--seconds", "1e-300"], "must be between"),
    (["run", "--timeout", "1e308"], "must be between"),
    (["run", "--seconds", "100", "--repeats", "5"], "more than --timeout 300"),
    (["sweep", "--seconds", "10", "--repeats", "3", "--timeout", "30"], "more than --timeout 30"),
])
def test_sizes_and_durations_are_bounded_at_parse_time(args, message):
    proc = cli(*args, timeout=60)
    one_line_exit_2(proc, message)


@pytest.fixture
def plugin_env(monkeypatch):
    monkeypatch.setenv("MICROGPT_BENCH_PLUGINS", fakes.PLUGINS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([SRC, TESTS]))
    monkeypatch.syspath_prepend(TESTS)


def test_a_worker_flooding_stdout_costs_the_harness_no_memory(plugin_env, tmp_path):
    """The harness (in a subprocess, so its peak memory is its own) runs a worker that
    prints 100 MB: the row says why it failed and the harness's peak RSS stays small."""
    code = textwrap.dedent("""
        import json
        from microgpt_bench.harness import RunConfig, run_benchmark
        cfg = RunConfig(backends=["fake-flood"], seconds=0.05, repeats=1, timeout=120)
        row = run_benchmark(cfg, {"label": "t", "clock": {"ghz": None}})["rows"][0]
        # VmHWM: this process image's peak RSS (ru_maxrss would carry over the forking parent's)
        peak = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
        print(json.dumps({"row": row, "maxrss_kb": peak}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["row"]["status"] == "failed" and "signal 6" in out["row"]["reason"]
    assert len(out["row"]["reason"]) < 1000
    assert out["maxrss_kb"] < 100 * 1024, out["maxrss_kb"]  # the flood alone is 100 MB


# =================================================== kind 2: parsing, strictly


@pytest.mark.parametrize("word", ["１２", "-1", "0x7f", "1_2", "+7ff", "12345", "g", "٣", "7f 7f", "0X1"])
def test_rom_words_must_be_one_to_four_ascii_hex_digits(tmp_path, word):
    path = tmp_path / "lm_head_q12.hex"
    path.write_text("\n".join(["0000"] * 5 + [word] + ["0000"] * 5) + "\n", encoding="utf-8")
    with pytest.raises(WeightsError, match="line 6: .* is not a 16-bit hex word"):
        read_rom_hex(path, 11)


def test_rom_words_of_every_legal_form_are_read(tmp_path):
    path = tmp_path / "wte_q12.hex"
    path.write_text("7FFF\r\n8000\n0\n  ffff  \n\n1a\n")
    assert read_rom_hex(path, 5).tolist() == [32767, -32768, 0, -1, 26]


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, np.bool_, np.complex64])
def test_non_float_tensors_are_refused_saying_a_float_is_expected(tmp_path, params, dtype):
    np.savez(tmp_path / "w.npz", **{n: t.astype(dtype) for n, t in params.tensors.items()})
    with pytest.raises(WeightsError, match="expected a float type"):
        load_weights(tmp_path / "w.npz")
    np.save(tmp_path / "flat.npy", params.flat().astype(dtype))
    with pytest.raises(WeightsError, match="expected a float type"):
        load_weights(tmp_path / "flat.npy")
    pickled_npy(tmp_path / "dict.npy", {n: t.astype(dtype) for n, t in params.tensors.items()})
    with pytest.raises(WeightsError, match="expected a float type"):
        load_weights(tmp_path / "dict.npy")


@pytest.mark.parametrize("manifest", [[1, 2], "format_version", 7, None, {"format_version": [1]}])
def test_a_manifest_that_is_not_an_object_is_one_line(tmp_path, params, manifest):
    arrays = {n: t.astype(np.float32) for n, t in params.tensors.items()}
    arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(tmp_path / "m.npz", **arrays)
    proc = cli("weights", "show", str(tmp_path / "m.npz"), timeout=60)
    one_line_exit_2(proc, "m.npz")


class Reduce:
    """Pickles as whatever __reduce__ tuple it is given: hand-made hostile pickles."""

    def __init__(self, *reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def _np_global(name):
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


def hostile(*reduced) -> bytes:
    return pickle.dumps(Reduce(*reduced), protocol=2)


RECONSTRUCT = _np_global("_reconstruct")
HOSTILE_PICKLES = {
    # an object array whose state holds fewer items than its shape: crashes numpy itself
    "short object state": hostile(RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                  (1, (10**6,), np.dtype(object), False, [1])),
    # a float array whose state's data is shorter than its shape
    "short float state": hostile(RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                 (1, (10**6,), np.dtype("f8"), False, b"\0" * 8)),
    # numpy's rebuilder asked for a 10**12-element array
    "huge reconstruct": hostile(RECONSTRUCT, (np.ndarray, (10**12,), b"b")),
    # ndarray itself called to allocate (and fill) a billion object slots
    "ndarray call": hostile(np.ndarray, ((10**9,), object)),
    # object construction through NEWOBJ
    "newobj": b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85\x81.",
    # a structured dtype rebuilt through numpy.dtype
    "dtype reduce": hostile(np.dtype, ("V1000000000", False, True)),
    # a memo index of 2**32 - 2 (the C unpickler's memo array would grow to it)
    "memo index": b"\x80\x02Nr\xfe\xff\xff\xff}.",
    # classic code execution, GLOBAL and STACK_GLOBAL
    "os.system": b"cos\nsystem\n(S'touch PWNED'\ntR.",
    "builtins eval": b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x12open('PWNED', 'w')\x85R.",
}


@pytest.mark.parametrize("name", HOSTILE_PICKLES)
def test_hostile_pickles_are_refused_without_crash_or_allocation(tmp_path, name):
    path = raw_pickle_npy(tmp_path / "evil.npy", HOSTILE_PICKLES[name])
    proc = load_limited(path, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), (proc.returncode, proc.stderr[-1500:])
    assert not (tmp_path / "PWNED").exists()


def test_genuine_numpy_pickles_still_load(tmp_path, params):
    for obj in ({n: t.astype(np.float32) for n, t in params.tensors.items()},
                {n: np.asfortranarray(t) for n, t in params.tensors.items()}):
        got = load_weights(pickled_npy(tmp_path / "ok.npy", obj))
        assert np.array_equal(got.flat(dtype=np.float64), Params(
            {n: np.asarray(v, np.float64) for n, v in obj.items()}).flat(dtype=np.float64))


def test_a_blank_cc_means_the_default_compiler(monkeypatch):
    monkeypatch.setenv("CC", "   ")
    assert native.find_c_compiler() in (None, "cc", "gcc", "clang")
    monkeypatch.setenv("CC", "no-such-compiler-xyz -O2")
    assert native.find_c_compiler() is None


def test_blank_cc_on_the_command_line():
    proc = cli("info", CC=" ", timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("args", [["run", "--backends", "numpy"], ["names", "--backend", "c-fp32"], ["info"],
                                  ["sweep", "--backend", "c-fp32"]])
def test_a_bogus_simd_setting_is_a_clear_error(args):
    one_line_exit_2(cli(*args, MICROGPT_BENCH_SIMD="bogus", timeout=60), "MICROGPT_BENCH_SIMD='bogus'")


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "is not name=package.module:Class"),
    ("x=", "is not name=package.module:Class"),
    ("=fakes:SlowBackend", "is not name=package.module:Class"),
    ("x=fakes", "is not name=package.module:Class"),
    ("x=fakes:Slow:Backend", "is not name=package.module:Class"),
    ("numpy=fakes:WrongBackend", "would replace the built-in backend"),
    ("a=fakes:SlowBackend;a=fakes:WrongBackend", "named twice"),
])
def test_malformed_plugin_specs_are_one_line(spec, message):
    one_line_exit_2(cli("run", "--backends", "numpy", MICROGPT_BENCH_PLUGINS=spec, timeout=60), message)


def test_a_plugin_that_raises_or_is_not_a_backend_is_one_line(tmp_path):
    (tmp_path / "boom_plugin.py").write_text("raise RuntimeError('plugin exploded')\nclass B: pass\n")
    (tmp_path / "notabackend.py").write_text("class B:\n    pass\n")
    path = os.pathsep.join([SRC, str(tmp_path)])
    for spec, message in (("boom=boom_plugin:B", "plugin exploded"), ("nb=notabackend:B", "not a Backend"),
                          ("gone=no_such_module_xyz:B", "ModuleNotFoundError")):
        name = spec.split("=")[0]
        for args in (["run", "--backends", f"numpy,{name}"], ["names", "--backend", name]):
            proc = cli(*args, MICROGPT_BENCH_PLUGINS=spec, PYTHONPATH=path, timeout=60)
            one_line_exit_2(proc, message)
    info = cli("info", MICROGPT_BENCH_PLUGINS="boom=boom_plugin:B", PYTHONPATH=path, timeout=300)
    assert info.returncode == 0 and "plugin exploded" in info.stdout, info.stderr[-1000:]


def test_plugin_spec_parsing_in_process(monkeypatch):
    monkeypatch.setenv("MICROGPT_BENCH_PLUGINS", " a = fakes:SlowBackend ; ;b=fakes:WrongBackend;")
    assert plugins() == {"a": "fakes:SlowBackend", "b": "fakes:WrongBackend"}
    monkeypatch.setenv("MICROGPT_BENCH_PLUGINS", "c-fp32=fakes:SlowBackend")
    with pytest.raises(PluginError, match="built-in"):
        plugins()


def test_a_backend_named_twice_runs_once():
    assert parse_backend_list("numpy,,numpy") == ["numpy"]
    assert parse_backend_list(" numpy , pure-python,numpy,pure-python ") == ["numpy", "pure-python"]


@pytest.mark.parametrize("backend, sampler", [("talos-emu-py", None), ("numpy", "xorshift32")])
def test_seed_zero_is_refused_for_xorshift_samplers(backend, sampler):
    args = ["names", "--backend", backend, "--seed", "0"] + (["--sampler", sampler] if sampler else [])
    one_line_exit_2(cli(*args, timeout=60), "fixed point")


def test_seed_zero_is_fine_for_the_python_sampler():
    proc = cli("names", "--seed", "0", "--count", "3", "--sampler", "python", timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stderr


def test_names_asks_for_a_bounded_number_of_tokens(monkeypatch, capsys):
    """A backend that never samples BOS still ends a name every 16 tokens: one call suffices."""
    from microgpt_bench import cli as cli_module
    from microgpt_bench.backends.numpy_backend import NumpyBackend
    calls = []

    class NoBos(NumpyBackend):
        def generate(self, n_tokens, seed, sampler="xorshift32"):
            calls.append(n_tokens)
            return [0] * n_tokens

    monkeypatch.setattr(cli_module.registry, "backend_class", lambda name: NoBos)
    assert cli_module.main(["names", "--count", "7", "--sampler", "xorshift32"]) == 0
    assert calls == [16 * 7] and capsys.readouterr().out.count("aaaaaaaaaaaaaaaa") == 7


# ============================================= kind 3: results never lost or misplaced


def quick_run(*args, cwd=None, **extra):
    return cli("run", "--backends", "numpy", "--seconds", "0.05", "--repeats", "1", *args, timeout=180, cwd=cwd,
               **extra)


@pytest.mark.parametrize("target, message", [
    ("DIR", "is a directory"),
    ("/proc/self/status", "cannot write there"),
    ("/proc/microgpt-bench.json", "cannot write there"),
    ("LONG", "too long"),
])
def test_unwritable_results_paths_are_refused_before_the_run(tmp_path, target, message):
    target = {"DIR": str(tmp_path), "LONG": str(tmp_path / ("x" * 300 + ".json"))}.get(target, target)
    proc = quick_run("--json", target)
    one_line_exit_2(proc, message)
    assert "[1/1]" not in proc.stderr  # refused before any row ran


def needs_mknod(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null twin, in tmp_path
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


def test_device_nodes_are_never_replaced(tmp_path, params):
    node = needs_mknod(tmp_path / "null")
    names = tmp_path / "names.txt"
    names.write_text("anna\nbob\n")
    for proc in (quick_run("--json", str(node)),
                 cli("train", "--data", str(names), "--steps", "1", "--out", str(node), timeout=60),
                 cli("weights", "convert", str(shipped_weights_path()), str(node))):
        one_line_exit_2(proc, "not a regular file")
        assert stat.S_ISCHR(os.lstat(node).st_mode)
    link = tmp_path / "link.json"
    link.symlink_to(node)
    one_line_exit_2(quick_run("--json", str(link)), "not a regular file")
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    with pytest.raises(ValueError, match="not a regular file"):
        save_npz(params, node, {})
    assert stat.S_ISCHR(os.lstat(node).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_files_honour_the_umask(tmp_path, params, umask):
    from microgpt_bench.results import write_json
    old = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "r.json")
        save_npz(params, tmp_path / "w.npz", {})
    finally:
        os.umask(old)
    for name in ("r.json", "w.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


def test_a_full_disk_at_the_end_keeps_a_copy_and_says_where(tmp_path, monkeypatch, capsys):
    import errno

    from microgpt_bench import cli as cli_module
    from microgpt_bench import results
    target = tmp_path / "r.json"
    real = results.atomic_write

    def full(path, write):
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(results, "atomic_write", full)
    doc = {"rows": [{"backend": "numpy"}], "x": 1}
    assert cli_module.save_results(doc, target) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "a copy is in" in err
    copy = Path(err.rsplit("a copy is in ", 1)[1].strip())
    try:
        assert json.loads(copy.read_text()) == doc
    finally:
        copy.unlink()


def test_a_huge_label_still_runs_and_gives_a_short_file_name(tmp_path):
    proc = quick_run("--label", "m" * 10_000, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = list((tmp_path / "results").glob("*.json"))
    assert len(found.name) < 120
    assert json.loads(found.read_text())["machine"]["label"] == "m" * 10_000


@pytest.mark.parametrize("how", ["xdg-proc", "home-readonly"])
def test_an_unwritable_cache_falls_back_to_a_private_temporary_one(tmp_path, how):
    home = tmp_path / "home"
    home.mkdir()
    extra = {"MICROGPT_BENCH_CACHE": None}
    if how == "xdg-proc":
        extra["XDG_CACHE_HOME"] = "/proc"
    else:
        (home / ".cache").write_text("a file where the cache directory would go")
        extra["HOME"] = str(home)
    run_env = env(**extra)
    run_env.pop("MICROGPT_BENCH_CACHE", None)
    if how == "home-readonly":
        run_env.pop("XDG_CACHE_HOME", None)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "microgpt_bench", "run", "--backends", "numpy,c-fp32",
                           "--seconds", "0.05", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["numpy"]["status"] == "ok"
    if native.find_c_compiler():
        assert rows["c-fp32"]["status"] == "ok", rows["c-fp32"]


def test_cache_dir_prefers_the_configured_one_and_refuses_a_foreign_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path / "c"))
    assert native.cache_dir() == tmp_path / "c" / "build"
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", "/proc/nope")
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path))
    shared = tmp_path / f"microgpt-bench-cache-{os.getuid()}"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # open to everyone: somebody else could have planted it
    with pytest.raises(native.BuildError, match="no writable build cache"):
        native.cache_dir()
    os.chmod(shared, 0o700)
    assert native.cache_dir() == shared / "build"


def test_a_truncated_cached_library_is_rebuilt(tmp_path):
    if native.find_c_compiler() is None:
        pytest.skip("no C compiler")
    code = textwrap.dedent("""
        from microgpt_bench import native
        lib, path = native.build_and_load("clock", [native.KERNEL_DIR / "clock.c"], native.find_c_compiler(),
                                          native.c_flags())
        print(path, path.stat().st_size, hasattr(lib, "mg_add_chain"))
    """)

    def load():  # a fresh process each time: a process never loads the same library twice
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=env(MICROGPT_BENCH_CACHE=str(tmp_path)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split()

    path, size, ok = load()
    Path(path).write_bytes(Path(path).read_bytes()[:200])  # a truncated cache entry
    assert load() == [path, size, "True"] and ok == "True"


# ===================================================== kind 4: no wrong number published


def test_accuracy_exercises_the_sampler_that_runs_at_the_runs_temperature(params):
    from microgpt_bench.accuracy import sampler_check
    assert sampler_check(backend_class("numpy")(params, 0.5), 0.5, steps=300)["differs_share"] == 0.0

    class BrokenSampler(backend_class("numpy")):
        """Right logits, a sampler that ignores the distribution: what a C sampler
        overflowing at a tiny temperature looks like from outside."""
        def generate(self, n_tokens, seed, sampler="xorshift32"):
            return [(seed + i) % 26 for i in range(n_tokens)]

    assert sampler_check(BrokenSampler(params, 0.5), 0.5, steps=300)["differs_share"] > 0.5
    if not availability("c-fp32"):
        c = backend_class("c-fp32")
        assert sampler_check(c(params, 0.5), 0.5, steps=300)["differs_share"] < 0.01
        tiny = 1e-39  # below what float32 can invert: C's sampler breaks, numpy's does not
        try:
            assert sampler_check(c(params, tiny), tiny, steps=300)["differs_share"] > 0.5
        except ValueError:
            pass  # the backend refuses the temperature outright: also honest


def test_accuracy_report_carries_the_sampler_check(params):
    from microgpt_bench.accuracy import measure_accuracy, reference_contexts
    seqs, logits = reference_contexts(params, 0.5, steps=100)
    got = measure_accuracy(backend_class("numpy")(params, 0.5), seqs, logits, 0.5)
    assert got["sampler"]["differs_share"] == 0.0 and got["sampler"]["steps"] == 2000
    assert measure_accuracy(backend_class("talos-emu-py")(params, 0.5), seqs, logits, 0.5)["sampler"] is None


@pytest.mark.parametrize("value, message", [(3e38, "overflow float32"), (1e300, "beyond float32's range")])
def test_weights_that_overflow_are_named_not_the_backends(tmp_path, params, value, message):
    path = tmp_path / "big.npz"
    np.savez(path, **{n: np.full(t.shape, value) for n, t in params.tensors.items()})
    one_line_exit_2(quick_run("--weights", str(path)), message, "big.npz")


# ============================================================ kind 5: processes


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(path: Path, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_termination_signals_end_the_worker_its_children_and_temp_dirs(tmp_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    pid_file = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-m", "microgpt_bench", "run", "--backends", "fake-spawn-hang",
                             "--seconds", "0.05", "--repeats", "1", "--json", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(MICROGPT_BENCH_PLUGINS=fakes.PLUGINS, FAKE_PID_FILE=str(pid_file),
                                    TMPDIR=str(tmp)))
    try:
        worker, child = map(int, wait_for(pid_file).split())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err[-2000:]
    deadline = time.monotonic() + 10
    while (alive(worker) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker) and not alive(child)
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("microgpt-bench-")]
    assert "Traceback" not in err


def test_a_timed_out_worker_takes_its_children_with_it(plugin_env, tmp_path, monkeypatch):
    from microgpt_bench.harness import RunConfig, run_benchmark
    pid_file = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PID_FILE", str(pid_file))
    cfg = RunConfig(backends=["fake-spawn-hang"], seconds=0.05, repeats=1, timeout=10)
    row = run_benchmark(cfg, {"label": "t", "clock": {"ghz": None}})["rows"][0]
    assert row["status"] == "failed" and "timed out" in row["reason"]
    worker, child = map(int, pid_file.read_text().split())
    time.sleep(0.5)
    assert not alive(worker) and not alive(child)


def test_a_native_probe_that_aborts_falls_back(monkeypatch):
    with pytest.raises(native.ProbeError, match="signal 6"):
        native.run_probe("os:abort", timeout=30)
    assert native.run_probe("json:dumps", timeout=30, obj=[1, 2]) == "[1, 2]"
    from microgpt_bench import machine
    monkeypatch.setattr(native, "run_probe", lambda *a, **k: (_ for _ in ()).throw(native.ProbeError("x")))
    clock = machine.estimate_clock_ghz()
    assert "no add-chain estimate" in clock["method"]


def test_a_sanitizer_compiler_does_not_abort_the_cli(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("needs gcc")
    asan = {"CC": "gcc -fsanitize=address", "MICROGPT_BENCH_CACHE": str(tmp_path / "cache")}
    proc = cli("run", "--backends", "numpy,c-fp32", "--seconds", "0.05", "--repeats", "1", "--no-report",
               "--json", str(tmp_path / "r.json"), timeout=300, **asan)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a row failed, reported as such
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = {r["backend"]: r for r in doc["rows"]}
    assert rows["numpy"]["status"] == "ok" and rows["c-fp32"]["status"] != "ok"
    assert doc["machine"]["clock"]["method"]  # an estimate or the stated fallback, never an abort
    one_line_exit_2(cli("names", "--backend", "c-fp32", timeout=300, **asan), "c-fp32")


def test_info_survives_a_backend_that_aborts_when_loaded():
    proc = cli("info", "--json", MICROGPT_BENCH_PLUGINS=fakes.PLUGINS, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["backend"]: r for r in json.loads(proc.stdout)["backends"]}
    assert "signal 6" in rows["fake-abort-on-load"]["reason"] and not rows["fake-abort-on-load"]["available"]
    assert rows["numpy"]["available"] and rows["fake-instant"]["available"]
