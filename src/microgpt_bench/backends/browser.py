"""The browser rows: wasm-chromium (the wasm kernel) and js-chromium (the model in plain JavaScript).

Both run in headless Chromium (the system's browser; nothing is downloaded),
driven through Playwright for Python. One browser per backend instance,
launched in __init__ with a fresh profile directory and closed in close(); the
page is the packaged web/harness.html, loaded from the file system, and runs
web/harness.js over either the .wasm of backends/wasm.py (the same file
wasm-wasmtime runs) or web/mg_model.js.

The page times its own loop with performance.now() and returns the checksum and
its figure; the worker times the whole call from Python (the project's rule),
so info() shows both for the last timed window: the difference is the launch-free
IPC cost, negligible once calibration makes a window last about a second.

Environment: MICROGPT_BENCH_CHROMIUM, the browser executable (else chromium,
chromium-browser, google-chrome, google-chrome-stable on PATH).
"""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..model import VOCAB, Params
from ..samplers import SAMPLERS, check_seed, python_uniforms
from .base import Backend, Unavailable
from .c_native import _check_count, _check_tokens
from .wasm import WASM_FEATURES, check_offline_args, load_module, module_availability, module_build_info

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAUNCH_TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    env = os.environ.get("MICROGPT_BENCH_CHROMIUM")
    if env:
        return shutil.which(env)
    return next((shutil.which(n) for n in BROWSER_NAMES if shutil.which(n)), None)


def _import_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise Unavailable(f"Playwright for Python is not installed ({exc}); pip install "
                          "'microgpt-bench[browser]' (or: pip install playwright; the system Chromium is used, "
                          "no browser download needed)") from exc
    return sync_playwright


class _Driver:
    """One Playwright driver per process, shared by the live backends (its sync API
    allows one per thread); stopped when the last of them closes.

    A backend garbage-collected without close() may be collected inside another
    Playwright call, where the sync API must not be re-entered (it deadlocks): its
    browser is left here and closed at the driver's next acquire or release."""
    playwright = None
    users = 0
    orphans: list = []

    @classmethod
    def acquire(cls, sync_playwright):
        cls.close_orphans()
        if cls.playwright is None:
            cls.playwright = sync_playwright().start()
        cls.users += 1
        return cls.playwright

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        cls.close_orphans()
        if cls.users == 0 and cls.playwright is not None:
            driver, cls.playwright = cls.playwright, None
            driver.stop()

    @classmethod
    def orphan(cls, context, profile) -> None:
        """From __del__: no Playwright call here, only bookkeeping."""
        cls.users -= 1
        cls.orphans.append((context, profile))

    @classmethod
    def close_orphans(cls) -> None:
        while cls.orphans:
            context, profile = cls.orphans.pop()
            if context is not None:
                _close_quietly(context)
            if profile:
                shutil.rmtree(profile, ignore_errors=True)


def _close_quietly(context) -> None:
    try:
        context.close()
    except Exception:  # the browser already gone (crashed, killed): nothing left to release
        pass


def browser_availability() -> str | None:
    try:
        _import_playwright()
    except Unavailable as exc:
        return str(exc)
    if find_chromium() is None:
        return f"no Chromium found (looked for {', '.join(BROWSER_NAMES)}; Debian: apt-get install chromium)"
    return None


class _ChromiumBackend(Backend):
    kind: ClassVar[str] = "?"   # the page's runner: "wasm" or "js"
    precision = "fp32"
    scenarios = ("single-stream", "offline")
    samplers = SAMPLERS
    max_threads = 1   # offline runs its streams one after another (no wasm threads, one JS thread)

    def __init__(self, params: Params, temperature: float = 0.5):
        super().__init__(params, temperature)
        sync_playwright = _import_playwright()
        self.executable = find_chromium()
        if self.executable is None:
            raise Unavailable(browser_availability())
        wasm_b64 = None
        if self.kind == "wasm":
            module_path, self._module_info = load_module()
            wasm_b64 = base64.b64encode(Path(module_path).read_bytes()).decode()
        self.last_window: dict | None = None
        self._profile = tempfile.mkdtemp(prefix="microgpt-chromium-")
        self._context = self._pw = None
        try:
            self._pw = _Driver.acquire(sync_playwright)
            self._context = self._pw.chromium.launch_persistent_context(
                self._profile, executable_path=self.executable, headless=True, args=CHROMIUM_FLAGS,
                timeout=LAUNCH_TIMEOUT_MS)
        except Exception as exc:  # the browser (or Playwright's driver) would not start: no row here
            self.close()
            raise Unavailable(f"Chromium ({self.executable}) did not start: {str(exc).strip().splitlines()[0]}") from exc
        try:
            self.page = self._context.pages[0] if self._context.pages else self._context.new_page()
            self.page.goto((WEB_DIR / "harness.html").as_uri())
            weights = params.flat("c", np.float32).astype(np.float64).tolist()
            self.page_info = self.page.evaluate("([k, w, t, b]) => mgHarness.init(k, w, t, b)",
                                                [self.kind, weights, self.temperature, wasm_b64])
            self.versions = self._versions()
        except BaseException:  # a broken page is a failed row, reported by the worker
            self.close()
            raise

    @classmethod
    def availability(cls) -> str | None:
        reason = browser_availability()
        if reason is None and cls.kind == "wasm":
            reason = module_availability()
        return reason

    @classmethod
    def build_info(cls) -> dict:
        info = {"browser": find_chromium()}
        return {**info, **module_build_info()} if cls.kind == "wasm" else info

    def _versions(self) -> dict:
        """The browser's and V8's versions, from the DevTools protocol's Browser.getVersion."""
        cdp = self._context.new_cdp_session(self.page)
        got = cdp.send("Browser.getVersion")
        cdp.detach()
        return {"browser": got.get("product"), "js_engine": f"V8 {got.get('jsVersion')}",
                "user_agent": got.get("userAgent")}

    def info(self) -> dict:
        from importlib.metadata import version
        info = {**self.versions, "executable": self.executable, "browser_flags": " ".join(CHROMIUM_FLAGS),
                "driver": f"playwright {version('playwright')}",
                "last_timed_window": self.last_window}
        if self.kind == "wasm":
            info.update(compiler_version=self._module_info["compiler_version"], wasm_flags=self._module_info["flags"],
                        wasm_features=list(WASM_FEATURES))
        return info

    def _timed(self, script: str, args: list, tokens: int) -> dict:
        """Run a self-timing page call; keep its figure beside this call's own."""
        t0 = time.perf_counter()
        got = self.page.evaluate(script, args)
        call = time.perf_counter() - t0
        self.last_window = {"tokens": tokens, "page_seconds": got["ms"] / 1000, "call_seconds": call}
        return got

    # ----------------------------------------------------------- single stream
    def logits(self, tokens) -> np.ndarray:
        arr = _check_tokens(tokens)
        got = self.page.evaluate("t => mgHarness.logits(t)", arr.tolist())
        return np.asarray(got, np.float64).reshape(arr.size, VOCAB)

    def generate(self, n_tokens: int, seed: int, sampler: str = "xorshift32") -> list[int]:
        n = _check_count("n_tokens", n_tokens, 1, 2**31 - 1)
        check_seed(sampler, seed)
        uniforms = python_uniforms(seed, n) if sampler == "python" else None
        xs_seed = seed if sampler == "xorshift32" else 0   # greedy: the seed plays no part
        return [int(t) for t in self.page.evaluate("([n, s, u, g]) => mgHarness.generate(n, s, u, g)",
                                                   [n, xs_seed, uniforms, sampler == "argmax"])]

    def timed_generate(self, n_tokens: int, seed: int) -> int:
        n = _check_count("n_tokens", n_tokens, 1, 2**31 - 1)
        check_seed("xorshift32", seed)
        return int(self._timed("([n, s]) => mgHarness.timed(n, s)", [n, seed], n)["checksum"])

    # ----------------------------------------------------------------- offline
    def generate_offline(self, n_streams, tokens_per_stream, seed, threads=1) -> np.ndarray:
        ns, tps, seed = check_offline_args(n_streams, tokens_per_stream, seed, threads)
        got = self.page.evaluate("([n, t, s]) => mgHarness.offline(n, t, s, true)", [ns, tps, seed])
        return np.asarray(got["tokens"], np.int32).reshape(ns, tps)

    def timed_offline(self, n_streams, tokens_per_stream, seed, threads=1) -> int:
        ns, tps, seed = check_offline_args(n_streams, tokens_per_stream, seed, threads)
        return int(self._timed("([n, t, s]) => mgHarness.offline(n, t, s, false)", [ns, tps, seed],
                               ns * tps)["checksum"])

    def close(self) -> None:
        context, self._context = getattr(self, "_context", None), None
        if context is not None:
            _close_quietly(context)
        if getattr(self, "_pw", None) is not None:
            self._pw = None
            _Driver.release()
        self._remove_profile()

    def _remove_profile(self) -> None:
        if getattr(self, "_profile", None):
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __del__(self):
        if getattr(self, "_pw", None) is not None:
            _Driver.orphan(getattr(self, "_context", None), getattr(self, "_profile", None))
            self._pw = self._context = self._profile = None


class WasmChromiumBackend(_ChromiumBackend):
    name = "wasm-chromium"
    description = "the fp32 kernel as WebAssembly (wasm32 + SIMD128, no FMA) in headless Chromium; whole loop in wasm"
    kind = "wasm"


class JsChromiumBackend(_ChromiumBackend):
    name = "js-chromium"
    description = "the model in plain JavaScript (Float32Array, KV cache) in headless Chromium"
    kind = "js"
