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
import math
import os
import pickle
import re
import stat
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from .inputs import quote, read_regular_file
from .model import CHARS, FLAT_ORDERS, N_PARAMS, TENSOR_SHAPES, Params
from .outputs import atomic_write

NPZ_FORMAT_VERSION = 1
MANIFEST_KEY = "manifest.json"
ROM_NAMES = {name: name.replace(".", "_") + "_q12.hex" for name in TENSOR_SHAPES}


class WeightsError(ValueError):
    """A weight file that cannot be used; the message says which file and which tensor."""


# ------------------------------------------------------------------ validation

# A weight file holds 4,192 values (33 KB as float64) and a small manifest: the cap
# keeps a huge or endless file (a symlink to /dev/zero) from being read at all.
MAX_WEIGHTS_BYTES = 4 << 20
MAX_MANIFEST_BYTES = 1 << 20
MAX_NPZ_MEMBERS = 32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def validate(tensors: dict, source: str) -> Params:
    """Names, then for each tensor its type, dtype and shape *before* any conversion
    (np.asarray of a memo-shared nest of lists would expand it), then finiteness."""
    names = list(tensors)
    missing = [n for n in TENSOR_SHAPES if n not in tensors]
    extra = [n for n in names if n not in TENSOR_SHAPES]
    if missing or extra:
        raise WeightsError(f"{source}: tensor names do not match the model "
                           f"(missing: {quote(missing) if missing else 'none'}; "
                           f"unexpected: {quote(extra) if extra else 'none'})")
    clean = {}
    for name, shape in TENSOR_SHAPES.items():
        arr = tensors[name]
        if not isinstance(arr, np.ndarray):
            raise WeightsError(f"{source}: tensor {name} is a {type(arr).__name__}, expected an array")
        check_dtype_and_shape(arr.dtype, arr.shape, shape, f"{source}: tensor {name}")
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"{source}: tensor {name} holds NaN or infinite values")
        if arr.size and float(np.max(np.abs(arr))) > FLOAT32_MAX:  # every backend runs float32 or less
            raise WeightsError(f"{source}: tensor {name} holds values beyond float32's range "
                               f"(|w| up to {float(np.max(np.abs(arr))):.3g}, float32 ends at {FLOAT32_MAX:.3g})")
        clean[name] = arr.astype(np.float64)
    return Params(clean)


def check_dtype_and_shape(dtype: np.dtype, shape: tuple, expected: tuple, what: str) -> None:
    if dtype.kind != "f":
        raise WeightsError(f"{what} has dtype {str(dtype)[:40]}, expected a float type "
                           "(float16, float32 or float64)")
    if tuple(shape) != tuple(expected):
        raise WeightsError(f"{what} has shape {quote(tuple(shape))}, expected {expected}")


# ------------------------------------------------------- restricted unpickling


def _safe_reconstruct(subtype, shape, dtype):
    """numpy's array pickles start from an empty (0,) array; nothing else is built here
    (an array of 10**12 elements would be allocated before any check)."""
    if subtype is not np.ndarray or shape != (0,):
        raise WeightsError(f"refused to unpickle an array of shape {quote(shape)} (only numpy's own "
                           "empty start array is allowed)")
    return _RECONSTRUCT(subtype, shape, dtype)


def _safe_dtype(name, *flags):
    if not isinstance(name, str) or len(name) > 8 or any(not isinstance(f, bool) for f in flags):
        raise WeightsError(f"refused to unpickle dtype {quote(name)}")
    return np.dtype(name, *flags)


def _safe_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or (
            len(data) != dtype.itemsize):
        raise WeightsError("refused to unpickle a numpy scalar that is not plain numeric data")
    return _SCALAR(dtype, data)


def _numpy_global(name: str):
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


_RECONSTRUCT, _SCALAR = _numpy_global("_reconstruct"), _numpy_global("scalar")


def _check_array_state(state) -> None:
    """ndarray.__setstate__ trusts its state (an object array's with a short list crashes
    the interpreter): the state must be exactly what numpy itself writes, and small."""
    ok = isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple) and all(
        isinstance(d, int) and 0 <= d <= N_PARAMS for d in state[1]) and isinstance(state[2], np.dtype)
    if ok:
        count = int(np.prod(state[1], dtype=np.int64)) if state[1] else 1
        data = state[4]
        if state[2].hasobject:
            ok = count <= 1 and isinstance(data, list) and len(data) == count
        else:
            ok = count <= N_PARAMS and isinstance(data, bytes) and len(data) == count * state[2].itemsize
    if not ok:
        raise WeightsError("refused to unpickle an array whose state is not numpy's own form")


def _check_dtype_state(state) -> None:
    simple = isinstance(state, tuple) and len(state) in (8, 9) and all(
        v is None for v in state[2:5]) and all(isinstance(v, (int, str)) for v in state[:2] + state[5:])
    if not simple:
        raise WeightsError("refused to unpickle a structured or unusual dtype")


class RestrictedUnpickler(pickle._Unpickler):
    """Admits only the globals numpy uses to pickle arrays; everything else is refused.

    Built on the pure-Python unpickler so that each opcode can be checked: calls
    (REDUCE) go only to the guarded wrappers above, BUILD only to an array or a
    dtype with numpy's own state, object construction opcodes are refused, and
    the memo is a dict (the C unpickler's memo array grows to any index a file names)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("numpy.core.multiarray", "scalar"): _safe_scalar,
        ("numpy._core.multiarray", "scalar"): _safe_scalar,
    }
    CALLABLE = (_safe_reconstruct, _safe_dtype, _safe_scalar)
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise WeightsError(f"refused to unpickle {quote(module)}.{quote(name)}: only numpy arrays "
                               "and a dict are allowed")
        return found

    def load_reduce(self):
        if self.stack[-2] not in self.CALLABLE:
            raise WeightsError("refused to unpickle a call to anything but numpy's array rebuilders")
        super().load_reduce()

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray):
            _check_array_state(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(state)
        else:
            raise WeightsError(f"refused to unpickle state for a {type(inst).__name__}")
        super().load_build()

    def load_refused(self):
        raise WeightsError("refused to unpickle an object construction (only numpy arrays and a dict)")

    for _op in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.INST, pickle.OBJ, pickle.PERSID, pickle.BINPERSID,
                pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_refused
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    del _op


def _unpickle_dict(payload: bytes, source: str) -> dict:
    try:
        obj = RestrictedUnpickler(io.BytesIO(payload)).load()
    except WeightsError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many kinds
        raise WeightsError(f"{source}: corrupt pickle ({type(exc).__name__}: {quote(str(exc))})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape in ((), (1,)):
        obj = obj.reshape(())[()]
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: the pickle holds {type(obj).__name__}, expected a dict of arrays")
    return obj


# ------------------------------------------------------------- .npy, bounded


def _npy_parts(raw: bytes, source: str) -> tuple[tuple, bool, np.dtype, bytes]:
    """(shape, fortran_order, dtype, payload) from a .npy's bytes; nothing allocated yet."""
    fh = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fh)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(fh)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise WeightsError(f"{source}: not a valid .npy ({quote(str(exc))})") from exc
    return shape, fortran, dtype, raw[fh.tell():]


def _npy_array(shape, fortran: bool, dtype: np.dtype, payload: bytes, source: str) -> np.ndarray:
    """The array, once its shape has been checked by the caller (so its size is small)."""
    count = math.prod(shape)
    if len(payload) < count * dtype.itemsize:
        raise WeightsError(f"{source}: truncated .npy ({len(payload)} data bytes, "
                           f"{count * dtype.itemsize} expected)")
    arr = np.frombuffer(payload, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


# ----------------------------------------------------------------- the formats


def from_flat(values: np.ndarray, order: str, source: str) -> Params:
    if order not in FLAT_ORDERS:
        raise WeightsError(f"unknown flat order {quote(order)}; choose {' or '.join(FLAT_ORDERS)}")
    values = np.asarray(values).ravel()
    if values.size != N_PARAMS:
        raise WeightsError(f"{source}: {values.size} values, expected {N_PARAMS}")
    tensors, at = {}, 0
    for name in FLAT_ORDERS[order]:
        r, c = TENSOR_SHAPES[name]
        tensors[name] = values[at:at + r * c].reshape(r, c)
        at += r * c
    return validate(tensors, source)


def _load_npy(raw: bytes, source: str, order: str) -> Params:
    shape, fortran, dtype, payload = _npy_parts(raw, source)
    if dtype.hasobject:
        if shape not in ((), (1,)):
            raise WeightsError(f"{source}: expected a pickled dict in the .npy, found {dtype} {quote(shape)}")
        return validate(_unpickle_dict(payload, source), source)
    count = math.prod(shape)
    if count != N_PARAMS:
        raise WeightsError(f"{source}: shape {quote(shape)} holds {count:,} values, expected {N_PARAMS} "
                           "(a flat .npy of the model's parameters)")
    check_dtype_and_shape(dtype, (count,), (N_PARAMS,), f"{source}: the flat array")
    return from_flat(_npy_array(shape, fortran, dtype, payload, source), order, source)


def _load_bin(raw: bytes, source: str, order: str) -> Params:
    if len(raw) != 4 * N_PARAMS:
        raise WeightsError(f"{source}: {len(raw)} bytes, expected {4 * N_PARAMS} (4,192 float32 values)")
    return from_flat(np.frombuffer(raw, dtype="<f4"), order, source)


HEX_WORD = re.compile(r"[0-9A-Fa-f]{1,4}", re.ASCII)


def read_rom_hex(path: Path, count: int) -> np.ndarray:
    """A Q4.12 ROM image: one 16-bit two's-complement hex word a line -> int16 values.

    A word is exactly 1 to 4 ASCII hex digits (int(w, 16) would also take '0x7f',
    '-1', '1_2' or full-width digits); reading stops at the first word too many."""
    raw = read_regular_file(path, 64 + 16 * count, "ROM image", WeightsError)
    values, n = np.empty(count, dtype=np.int16), 0
    for number, line in enumerate(raw.split(b"\n"), start=1):
        word = line.strip()
        if not word:
            continue
        text = word.decode("ascii", "replace")
        if not HEX_WORD.fullmatch(text):
            raise WeightsError(f"{path}: line {number}: {quote(text)} is not a 16-bit hex word")
        if n == count:
            raise WeightsError(f"{path}: more than the {count} words expected")
        v = int(text, 16)
        values[n] = v - 65536 if v >= 32768 else v
        n += 1
    if n != count:
        raise WeightsError(f"{path}: {n} words, expected {count}")
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


def _npz_members(raw: bytes, source: str) -> dict[str, bytes]:
    """Each member's bytes, refused by its declared size before it is inflated, and read
    no further than the cap whatever it declares."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise WeightsError(f"{source}: {len(infos)} members, more than a weights .npz holds")
            members = {}
            for info in infos:
                if info.file_size > MAX_MANIFEST_BYTES:
                    raise WeightsError(f"{source}: member {quote(info.filename)} inflates to "
                                       f"{info.file_size:,} bytes, more than a weights .npz holds")
                with zf.open(info) as fh:
                    data = fh.read(MAX_MANIFEST_BYTES + 1)
                if len(data) > MAX_MANIFEST_BYTES:
                    raise WeightsError(f"{source}: member {quote(info.filename)} inflates beyond its size")
                members[info.filename.removesuffix(".npy")] = data
    except WeightsError:
        raise
    except Exception as exc:  # zipfile raises many kinds for corrupt archives
        raise WeightsError(f"{source}: not a readable .npz ({type(exc).__name__}: {quote(str(exc))})") from exc
    return members


def _read_manifest(raw: bytes, source: str) -> dict:
    shape, fortran, dtype, payload = _npy_parts(raw, source)
    if dtype != np.uint8 or len(shape) != 1:
        raise WeightsError(f"{source}: {MANIFEST_KEY} must be a 1-D uint8 array, found {dtype} {quote(shape)}")
    text = _npy_array(shape, fortran, dtype, payload, source).tobytes()
    try:
        manifest = json.loads(text.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{source}: {MANIFEST_KEY} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise WeightsError(f"{source}: {MANIFEST_KEY} holds a JSON {type(manifest).__name__}, expected an object")
    version = manifest.get("format_version")
    if version != NPZ_FORMAT_VERSION:
        raise WeightsError(f"{source}: format_version {quote(version)}, this tool reads {NPZ_FORMAT_VERSION}")
    if manifest.get("vocabulary", CHARS) != CHARS:
        raise WeightsError(f"{source}: vocabulary {quote(manifest.get('vocabulary'))} differs from {CHARS!r}")
    return manifest


def _load_npz(raw: bytes, source: str) -> tuple[Params, dict]:
    members = _npz_members(raw, source)
    manifest = _read_manifest(members.pop(MANIFEST_KEY), source) if MANIFEST_KEY in members else {}
    arrays = {}
    for name, data in members.items():
        shape, fortran, dtype, payload = _npy_parts(data, f"{source}: member {quote(name)}")
        if name in TENSOR_SHAPES:  # shape and dtype checked before the array is made
            check_dtype_and_shape(dtype, shape, TENSOR_SHAPES[name], f"{source}: tensor {name}")
            arrays[name] = _npy_array(shape, fortran, dtype, payload, source)
        else:
            arrays[name] = None  # validate() names it as unexpected
    return validate(arrays, source), manifest


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
        text = rom_hex_text(q12).encode()
        written.append(atomic_write(directory / ROM_NAMES[name], lambda fh, text=text: fh.write(text)))
    return written


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
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if is_dir:
        return _load_rom_dir(path), {"source": "Q4.12 ROM images"}
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".bin"):
        raise WeightsError(f"{path}: unknown weight format (expected .npz, .npy, .bin or a ROM directory)")
    raw = read_regular_file(path, MAX_WEIGHTS_BYTES, "weights file", WeightsError)
    if suffix == ".npz":
        return _load_npz(raw, str(path))
    if suffix == ".npy":
        return _load_npy(raw, str(path), order), {}
    return _load_bin(raw, str(path), order), {}


def save_npz(params: Params, path: str | os.PathLike, manifest: dict) -> None:
    """Write the project's format atomically: 9 float32 tensors + manifest.json."""
    manifest = {"format_version": NPZ_FORMAT_VERSION, "vocabulary": CHARS, **manifest}
    arrays = {n: params[n].astype(np.float32) for n in TENSOR_SHAPES}
    arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
