"""Loading and saving the model's weights, in every format met in the wild.

Formats (recognised from the file, see load_weights):
  - TALOS-V2's weights_only.npy: a pickled dict of 9 float32 arrays. It is read
    with a restricted unpickler (RestrictedUnpickler) that admits only what
    numpy needs to rebuild arrays and a dict; anything else is refused before
    any of it runs.
  - a flat 4,192-value .npy (not pickled) or raw little-endian float32 .bin, in
    either flat order of the spec (`order`: "c" or "talos").
  - a directory of TALOS-V2 Q4.12 ROM images, `<tensor>_q12.hex`.
  - the project's own .npz: the 9 named tensors plus `manifest.json` stored as a
    uint8 array (format version, vocabulary, the training data's sha256, how it
    was made). Loaded with allow_pickle=False.
Every loader validates names, shapes, dtype and finiteness and names the bad tensor.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from .model import CHARS, FLAT_ORDERS, N_PARAMS, TENSOR_SHAPES, Params

NPZ_FORMAT_VERSION = 1
MANIFEST_KEY = "manifest.json"
ROM_NAMES = {name: name.replace(".", "_") + "_q12.hex" for name in TENSOR_SHAPES}


class WeightsError(ValueError):
    """A weight file that cannot be used; the message says which file and which tensor."""


# ------------------------------------------------------------------ validation


def validate(tensors: dict, source: str) -> Params:
    missing = [n for n in TENSOR_SHAPES if n not in tensors]
    extra = [n for n in tensors if n not in TENSOR_SHAPES]
    if missing or extra:
        raise WeightsError(f"{source}: tensor names do not match the model "
                           f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})")
    clean = {}
    for name, shape in TENSOR_SHAPES.items():
        arr = np.asarray(tensors[name])
        if arr.dtype.kind not in "fi":
            raise WeightsError(f"{source}: tensor {name} has dtype {arr.dtype}, expected a float type")
        if arr.shape != shape:
            raise WeightsError(f"{source}: tensor {name} has shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"{source}: tensor {name} holds NaN or infinite values")
        clean[name] = arr.astype(np.float64)
    return Params(clean)


# ------------------------------------------------------- restricted unpickling


def _reconstruct_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0]


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals numpy uses to pickle arrays; everything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise WeightsError(f"refused to unpickle {module}.{name}: only numpy arrays and a dict are allowed")


def _load_pickled_dict(path: Path) -> dict:
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = reader(fh)
        except ValueError as exc:
            raise WeightsError(f"{path}: not a valid .npy ({exc})") from exc
        if dtype != np.dtype(object) or shape != ():
            raise WeightsError(f"{path}: expected a pickled dict in the .npy, found {dtype} {shape}")
        try:
            obj = RestrictedUnpickler(io.BytesIO(fh.read())).load()
        except WeightsError:
            raise
        except Exception as exc:  # truncated or corrupt pickles raise many kinds
            raise WeightsError(f"{path}: corrupt pickle ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj[()]
    if isinstance(obj, np.ndarray) and obj.shape == (1,):
        obj = obj[0]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: the pickle holds {type(obj).__name__}, expected a dict of arrays")
    return obj


# ----------------------------------------------------------------- the formats


def from_flat(values: np.ndarray, order: str, source: str) -> Params:
    if order not in FLAT_ORDERS:
        raise WeightsError(f"unknown flat order {order!r}; choose {' or '.join(FLAT_ORDERS)}")
    values = np.asarray(values).ravel()
    if values.size != N_PARAMS:
        raise WeightsError(f"{source}: {values.size} values, expected {N_PARAMS}")
    tensors, at = {}, 0
    for name in FLAT_ORDERS[order]:
        r, c = TENSOR_SHAPES[name]
        tensors[name] = values[at:at + r * c].reshape(r, c)
        at += r * c
    return validate(tensors, source)


def _load_npy(path: Path, order: str) -> Params:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise WeightsError(f"{path}: not a valid .npy ({exc})") from exc
        return validate(_load_pickled_dict(path), str(path))
    except (OSError, EOFError) as exc:
        raise WeightsError(f"{path}: cannot read ({exc})") from exc
    return from_flat(arr, order, str(path))


def _load_bin(path: Path, order: str) -> Params:
    raw = path.read_bytes()
    if len(raw) != 4 * N_PARAMS:
        raise WeightsError(f"{path}: {len(raw)} bytes, expected {4 * N_PARAMS} (4,192 float32 values)")
    return from_flat(np.frombuffer(raw, dtype="<f4"), order, str(path))


def read_rom_hex(path: Path, count: int) -> np.ndarray:
    """A Q4.12 ROM image: one 16-bit two's-complement hex word a line -> int16 values."""
    try:
        words = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: cannot read ({exc})") from exc
    if len(words) != count:
        raise WeightsError(f"{path}: {len(words)} words, expected {count}")
    values = np.empty(count, dtype=np.int16)
    for i, word in enumerate(words):
        if len(word) > 4:
            raise WeightsError(f"{path}: line {i + 1}: {word!r} is not a 16-bit hex word")
        try:
            v = int(word, 16)
        except ValueError:
            raise WeightsError(f"{path}: line {i + 1}: {word!r} is not a 16-bit hex word") from None
        values[i] = v - 65536 if v >= 32768 else v
    return values


def load_rom_ints(directory: Path) -> dict[str, np.ndarray]:
    """The int16 Q4.12 values of every tensor, from a directory of *_q12.hex ROMs."""
    out = {}
    for name, fname in ROM_NAMES.items():
        path = directory / fname
        if not path.exists():
            raise WeightsError(f"{directory}: missing ROM {fname} (tensor {name})")
        r, c = TENSOR_SHAPES[name]
        out[name] = read_rom_hex(path, r * c).reshape(r, c)
    return out


def _load_rom_dir(directory: Path) -> Params:
    ints = load_rom_ints(directory)
    return validate({n: v.astype(np.float64) / 4096.0 for n, v in ints.items()}, str(directory))


def _load_npz(path: Path) -> tuple[Params, dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile and numpy raise many kinds for corrupt archives
        raise WeightsError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from exc
    manifest = {}
    if MANIFEST_KEY in arrays:
        try:
            manifest = json.loads(arrays.pop(MANIFEST_KEY).tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(f"{path}: {MANIFEST_KEY} is not JSON ({exc})") from exc
        version = manifest.get("format_version")
        if version != NPZ_FORMAT_VERSION:
            raise WeightsError(f"{path}: format_version {version!r}, this tool reads {NPZ_FORMAT_VERSION}")
        if manifest.get("vocabulary", CHARS) != CHARS:
            raise WeightsError(f"{path}: vocabulary {manifest.get('vocabulary')!r} differs from {CHARS!r}")
    return validate(arrays, str(path)), manifest


def rom_hex_text(words: np.ndarray) -> str:
    """TALOS-V2's ROM image format: one 4-digit lowercase hex word (int16, two's complement) a line."""
    return "".join(f"{int(w) & 0xFFFF:04x}\n" for w in np.asarray(words, np.int16).ravel())


def save_rom_dir(params: Params, directory: str | os.PathLike) -> list[Path]:
    """Write the Q4.12 ROM images of params (rint(w * 4096), clipped to int16), one file a tensor.

    This is how the project derives TALOS-V2's ROMs (which it may not ship) from its own weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TENSOR_SHAPES:
        q12 = np.clip(np.rint(params[name] * 4096), -32768, 32767).astype(np.int16)
        written.append(_write_text_atomic(directory / ROM_NAMES[name], rom_hex_text(q12)))
    return written


def _write_text_atomic(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def shipped_data_path(name: str) -> Path:
    """A data file shipped in the package (names.txt, talos-rtl-vectors.jsonl; see data/README.md)."""
    return Path(str(resources.files("microgpt_bench") / "data" / name))


def shipped_weights_path() -> Path:
    return Path(str(resources.files("microgpt_bench") / "data" / "microgpt-names.npz"))


def load_weights(path: str | os.PathLike | None = None, order: str = "c") -> Params:
    """Load weights from any supported format; None means the shipped default weights."""
    return load_weights_with_manifest(path, order)[0]


def load_weights_with_manifest(path=None, order: str = "c") -> tuple[Params, dict]:
    path = Path(path) if path is not None else shipped_weights_path()
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    if path.is_dir():
        return _load_rom_dir(path), {"source": "Q4.12 ROM images"}
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".npy":
        return _load_npy(path, order), {}
    if suffix == ".bin":
        return _load_bin(path, order), {}
    raise WeightsError(f"{path}: unknown weight format (expected .npz, .npy, .bin or a ROM directory)")


def save_npz(params: Params, path: str | os.PathLike, manifest: dict) -> None:
    """Write the project's format atomically: 9 float32 tensors + manifest.json."""
    manifest = {"format_version": NPZ_FORMAT_VERSION, "vocabulary": CHARS, **manifest}
    arrays = {n: params[n].astype(np.float32) for n in TENSOR_SHAPES}
    arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
