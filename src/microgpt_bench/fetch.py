"""`microgpt-bench weights fetch`: the public TALOS-V2 weights and names list, verified."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

# Public addresses and sha256 digests, as listed in the project's data notes.
SOURCES = {
    "names.txt": ("https://raw.githubusercontent.com/karpathy/makemore/988aa59/names.txt",
                  "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d", "--data"),
    "weights_only.npy": ("https://raw.githubusercontent.com/Luthiraa/TALOS-V2/main/rtl/microgpt/weights_only.npy",
                         "9709848b14261aa31cd538352edad15d39951f9848b3f88c86137eff0bbbd702", "--weights"),
}


class FetchError(RuntimeError):
    pass


def data_cache_dir() -> Path:
    root = os.environ.get("MICROGPT_BENCH_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "microgpt-bench")
    path = Path(root) / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(name: str, timeout: float = 30.0, opener=urllib.request.urlopen) -> Path:
    """Download one file into the cache (if not already there and verified)."""
    url, digest, flag = SOURCES[name]
    target = data_cache_dir() / name
    if target.exists() and sha256_file(target) == digest:
        return target
    try:
        with opener(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise FetchError(f"cannot download {name} from {url} ({exc}). Offline? Get the file another way "
                         f"and pass it with {flag} PATH") from exc
    got = hashlib.sha256(payload).hexdigest()
    if got != digest:
        raise FetchError(f"{name} from {url} has sha256 {got}, expected {digest}; not saved")
    tmp = target.with_suffix(".part")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    return target
