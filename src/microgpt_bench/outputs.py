"""Writing output files so that a finished result is never lost or misplaced.

  - check_writable_target() runs before the work: a directory, a device node, a
    FIFO, a read-only or virtual (/proc) filesystem or a name too long is refused
    while nothing has been computed yet;
  - atomic_write() writes a temporary file beside the target and renames it into
    place, never replacing anything but a regular file, with the mode the umask
    gives (mkstemp alone would leave 0600);
  - fallback_path() is where a result goes when the target fails at the end anyway
    (a full disk): the system's temporary directory.
"""
from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, IO


class OutputError(ValueError):
    """An output path that cannot be written; the message says why, in one line."""


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _refuse_non_regular(path: Path) -> None:
    try:
        st = os.stat(path)  # follows a symlink: a link to /dev/null is a device too
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: exists and is not a regular file (a device, FIFO or socket); "
                          "refusing to replace it")


def _probe_write(directory: Path, path: Path) -> None:
    """Create directory if needed and prove a file can be made in it (a read-only or
    virtual filesystem, or missing permission, fails here rather than after the work)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".microgpt-bench-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror or exc})") from exc


def check_writable_target(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a target that atomic_write() could not fill."""
    path = Path(os.path.realpath(path))
    _refuse_non_regular(path)
    _probe_write(path.parent, path)
    name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    if len(os.fsencode(path.name)) > name_max:
        raise OutputError(f"{str(path)[:80]}...: the file name is too long (over {name_max} bytes)")
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output directory that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory")
    _probe_write(path, path)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write via write(fh) into a temporary file beside path, then rename it into place."""
    path = Path(os.path.realpath(path))
    _refuse_non_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def fallback_path(stem: str, suffix: str = ".json") -> Path:
    """A fresh file name in the system's temporary directory, for a result that could not
    be written where it was asked to go."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"{stem}-{stamp}-", suffix=suffix)
    os.close(fd)
    return Path(name)
