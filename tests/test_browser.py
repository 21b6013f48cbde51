"""The browser rows: wasm-wasmtime, wasm-chromium (kernels/mg_wasm.c as WebAssembly) and js-chromium.

Per available row: the fp32 gate (1e-4 of the float64 reference), the first 200
xorshift32 names of seed 42 and the python sampler's first 120 tokens token for
token against the float64 reference loop, the checksum of the timed call, and
offline stream i equal to a single-stream run seeded with stream_seed(seed, i).
A row is skipped only where its tool (clang's wasm32 target, lld, wasmtime,
Playwright, Chromium) is not installed, with the reason; without each one the
row must say why (checked everywhere by hiding it).
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest

from microgpt_bench import model, samplers
from microgpt_bench.backends import availability, backend_class, wasm
from microgpt_bench.backends.base import Unavailable
from microgpt_bench.backends.browser import JsChromiumBackend, WasmChromiumBackend
from microgpt_bench.backends.c_native import NativeError
from microgpt_bench.backends.wasm import WasmtimeBackend
from microgpt_bench.weights import load_weights
from reference_loop import reference_tokens

ROWS = {"wasm-wasmtime": WasmtimeBackend, "wasm-chromium": WasmChromiumBackend, "js-chromium": JsChromiumBackend}
N_NAMES = 200
SEED = 42
PROBES = [[model.BOS], [model.BOS] + model.encode("emma"),
          [model.BOS] + model.encode("abcdefghijklmno")]   # 16 tokens: the whole context


@pytest.fixture(scope="module")
def params():
    return load_weights()   # the shipped weights


@pytest.fixture(scope="module")
def ref_xorshift(params):
    return reference_tokens(params, "xorshift32", SEED, n_names=N_NAMES)


@pytest.fixture(scope="module", params=list(ROWS))
def backend(request, params):
    cls = ROWS[request.param]
    reason = cls.availability()
    if reason is not None:
        pytest.skip(f"{cls.name}: {reason}")
    b = cls(params)
    yield b
    b.close()


# ---------------------------------------------------------------- the module


def test_module_builds_freestanding_with_simd(tmp_path, monkeypatch):
    if wasm.module_availability():
        pytest.skip(wasm.module_availability())
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    path, info = wasm.load_module()
    data = open(path, "rb").read()
    assert data[:4] == b"\0asm" and str(tmp_path) in path
    assert info["wasm_features"] == ["simd128", "bulk-memory"] and "-msimd128" in info["flags"]
    assert wasm.load_module()[0] == path                  # built once, then the cache
    wasmtime = pytest.importorskip("wasmtime")
    module = wasmtime.Module(wasmtime.Engine(), data)
    assert list(module.imports) == []                      # freestanding: no libc, no host functions
    names = {e.name for e in module.exports}
    assert {"memory", "mg_logits", "mg_generate", "mg_generate_offline"} <= names


def test_a_corrupt_cached_module_is_rebuilt(tmp_path, monkeypatch):
    if wasm.module_availability():
        pytest.skip(wasm.module_availability())
    pytest.importorskip("wasmtime")   # what tells a truncated module from a whole one
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(wasm, "_BUILD", {})
    path, _ = wasm.build_module()
    good = open(path, "rb").read()
    with open(path, "wb") as fh:                  # truncated: the header survives, the code does not
        fh.write(good[:len(good) // 2])
    again, _ = wasm.build_module()
    assert again == path and open(again, "rb").read() == good


# ------------------------------------------------------------------ each row


def test_gate(backend, params):
    for probe in PROBES:
        got = backend.logits(probe)
        assert got.shape == (len(probe), model.VOCAB)
        np.testing.assert_allclose(got, model.reference_logits(params, probe), rtol=0, atol=1e-4)


def test_xorshift_names_match_reference(backend, ref_xorshift):
    got = backend.generate(len(ref_xorshift), SEED, "xorshift32")
    assert got == ref_xorshift
    assert len(model.names_from_tokens(got)) == N_NAMES
    assert backend.timed_generate(len(ref_xorshift), SEED) == sum(ref_xorshift)


def test_python_sampler_matches_reference(backend, params):
    got = backend.generate(120, SEED, "python")
    assert got == reference_tokens(params, "python", SEED, n_tokens=120)


@pytest.mark.parametrize("n_streams", [1, 3, 8])
def test_offline_streams_equal_single_stream(backend, n_streams):
    tps = 40   # crosses at least one reset in every stream
    got = backend.generate_offline(n_streams, tps, 7, threads=2)
    assert got.shape == (n_streams, tps)
    for i in range(n_streams):
        assert list(got[i]) == backend.generate(tps, samplers.stream_seed(7, i), "xorshift32"), i
    assert backend.timed_offline(n_streams, tps, 7) == int(got.sum())


def test_offline_gate(backend, params):
    got = backend.logits_offline(PROBES)
    for probe, logits in zip(PROBES, got):
        np.testing.assert_allclose(logits, model.reference_logits(params, probe), rtol=0, atol=1e-4)


def test_bad_arguments_are_clear_errors(backend):
    with pytest.raises(ValueError, match="token ids"):
        backend.logits([model.BOS, 27])
    with pytest.raises(ValueError, match="1..16"):
        backend.logits(list(range(17)))
    with pytest.raises(ValueError, match="seed"):
        backend.generate(5, 0, "xorshift32")
    with pytest.raises(ValueError, match="n_tokens"):
        backend.timed_generate(0, 1)
    with pytest.raises(ValueError, match="base seed"):
        backend.generate_offline(2, 5, -1)


def test_info_records_what_ran(backend):
    backend.timed_generate(50, 3)
    info = backend.info()
    if backend.name == "wasm-wasmtime":
        assert info["runtime"] == "wasmtime" and info["wasmtime_version"]
    else:
        assert info["browser"].startswith(("Chrome/", "HeadlessChrome/")) and info["js_engine"].startswith("V8 ")
        window = info["last_timed_window"]
        assert window["tokens"] == 50 and 0 <= window["page_seconds"] <= window["call_seconds"]
    if backend.name.startswith("wasm-"):
        assert info["wasm_features"] == ["simd128", "bulk-memory"] and "clang" in info["compiler_version"]


def test_wasm_error_codes_become_exceptions(params):
    if WasmtimeBackend.availability():
        pytest.skip(WasmtimeBackend.availability())
    b = WasmtimeBackend(params)
    with pytest.raises(NativeError, match="seed 0"):
        wasm.check_code(b._call("mg_generate", 5, 0, 0, 0, 0), "mg_generate")
    ptr = b._scratch(128)
    with pytest.raises(NativeError, match="out of range"):
        wasm.check_code(b._call("mg_logits", ptr, 17, ptr + 64), "mg_logits")
    with pytest.raises(ValueError, match="temperature"):
        WasmtimeBackend(params, temperature=-1.0)


def test_close_releases_the_browser(params):
    if JsChromiumBackend.availability():
        pytest.skip(JsChromiumBackend.availability())
    b = JsChromiumBackend(params)
    profile = b._profile
    assert os.path.isdir(profile)
    b.close()
    assert not os.path.exists(profile) and b._context is None
    b.close()   # twice is harmless


def test_a_backend_dropped_without_close_leaves_no_deadlock(params):
    """Garbage collection may drop a backend inside another Playwright call: its browser is
    closed at the next safe point, not from __del__ (re-entering the sync API deadlocks)."""
    import gc
    from microgpt_bench.backends.browser import _Driver
    if JsChromiumBackend.availability():
        pytest.skip(JsChromiumBackend.availability())
    dropped = JsChromiumBackend(params)
    profile = dropped._profile
    dropped.__del__()          # what collection does, wherever it happens
    del dropped
    gc.collect()
    assert _Driver.orphans and os.path.isdir(profile)
    b = JsChromiumBackend(params)   # acquiring the driver closes the orphan first
    assert not _Driver.orphans and not os.path.exists(profile)
    assert b.generate(5, 1) == b.generate(5, 1)
    b.close()


# ----------------------------------------------------- missing tools say why


@pytest.fixture
def fresh_builds(monkeypatch, tmp_path):
    """No cached module or build verdict: each check below sees only its own environment."""
    monkeypatch.setattr(wasm, "_BUILD", {})
    monkeypatch.setenv("MICROGPT_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("name", ["wasm-wasmtime", "wasm-chromium"])
def test_no_clang(name, fresh_builds, monkeypatch):
    monkeypatch.setenv("PATH", str(fresh_builds))   # an empty directory
    monkeypatch.delenv("MICROGPT_BENCH_WASM_CC", raising=False)
    if name == "wasm-chromium":
        monkeypatch.setattr("microgpt_bench.backends.browser.browser_availability", lambda: None)
    assert "no clang" in availability(name) and "apt-get install clang lld" in availability(name)


def test_clang_without_wasm32_target(fresh_builds, monkeypatch):
    fake = fresh_builds / "clang"
    fake.write_text("#!/bin/sh\necho '  Registered Targets:'\necho '    x86-64 - 64-bit X86: EM_X86_64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MICROGPT_BENCH_WASM_CC", str(fake))
    assert "has no wasm32 target" in WasmtimeBackend.availability()


def test_no_wasm_ld(fresh_builds, monkeypatch):
    if wasm.find_clang() is None:
        pytest.skip("no clang here")
    monkeypatch.setattr(wasm, "_has_wasm32_target", lambda clang: True)
    monkeypatch.setattr(wasm, "_find_wasm_ld", lambda clang: None)
    assert "no wasm-ld" in WasmtimeBackend.availability() and "lld" in WasmtimeBackend.availability()


def test_no_chromium(monkeypatch, params):
    monkeypatch.setenv("MICROGPT_BENCH_CHROMIUM", "/nonexistent/chromium")
    for cls in (WasmChromiumBackend, JsChromiumBackend):
        if "Playwright" in (cls.availability() or ""):
            pytest.skip("no Playwright here: the Chromium check comes after it")
        assert "no Chromium found" in cls.availability()
        with pytest.raises(Unavailable, match="no Chromium"):
            cls(params)


def test_chromium_that_does_not_start(tmp_path, monkeypatch, params):
    if JsChromiumBackend.availability():
        pytest.skip(JsChromiumBackend.availability())
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MICROGPT_BENCH_CHROMIUM", str(fake))
    monkeypatch.setattr("microgpt_bench.backends.browser.LAUNCH_TIMEOUT_MS", 20_000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # where the profile goes
    with pytest.raises(Unavailable, match="did not start"):
        JsChromiumBackend(params)
    assert not list(tmp_path.glob("microgpt-chromium-*"))     # the profile was removed


@pytest.mark.parametrize("name, hidden", [("wasm-wasmtime", "wasmtime"), ("wasm-chromium", "playwright"),
                                          ("js-chromium", "playwright")])
def test_missing_python_package(name, hidden, monkeypatch, params):
    monkeypatch.setitem(sys.modules, hidden, None)          # `import hidden` now fails
    monkeypatch.setitem(sys.modules, f"{hidden}.sync_api", None)
    reason = availability(name)
    assert "not installed" in reason and "pip install" in reason
    with pytest.raises(Unavailable, match="not installed"):
        backend_class(name)(params)


@pytest.mark.parametrize("name", list(ROWS))
def test_availability_never_raises(name):
    reason = availability(name)
    assert reason is None or (isinstance(reason, str) and reason)


@pytest.mark.parametrize("name", list(ROWS))
def test_offline_rows_record_the_one_thread_they_use(name):
    from microgpt_bench.harness import RunConfig, make_job
    job = make_job(RunConfig(backends=[name], scenario="offline", streams=8, threads=2), name, [])
    assert job["threads"] == 1
    assert make_job(RunConfig(backends=["c-fp32"], scenario="offline", threads=2), "c-fp32", [])["threads"] == 2


def test_row_through_the_worker(params):
    """A browser row runs like any other: a worker subprocess, the gate, calibration, timing."""
    from microgpt_bench.harness import PROBE, RunConfig, make_job, run_worker
    if WasmChromiumBackend.availability():
        pytest.skip(WasmChromiumBackend.availability())
    cfg = RunConfig(backends=["wasm-chromium"], seconds=0.3, repeats=1)
    row = run_worker(make_job(cfg, "wasm-chromium", [model.reference_logits(params, s) for s in PROBE]), 120)
    assert row["status"] == "ok", row.get("reason")
    assert row["gate"]["passed"] and row["gate"]["max_abs_error"] <= 1e-4
    window = row["info"]["last_timed_window"]
    assert window["tokens"] == row["tokens_per_repeat"] and 0 < window["page_seconds"] <= window["call_seconds"]
