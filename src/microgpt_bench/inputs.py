"""Reading input files without letting a special or huge file take the tool down.

read_regular_file() is the one way the tool reads a weights file, a corpus or a
ROM image: it must be a regular file (a symlink to /dev/zero is a device, a FIFO
would block), no bigger than a cap fitted to what the file can sensibly hold,
and it is opened non-blocking and checked again through the open descriptor, so
the file read is the file checked. quote() keeps what a message cites short.
"""
from __future__ import annotations

import os
import reprlib
import stat

QUOTE_LIMIT = 60


class InputError(ValueError):
    """An input file that cannot be used; the message says why, in one line."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = QUOTE_LIMIT
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 1, 4, 4, 4


def quote(value) -> str:
    """A repr of value cut short, whatever its size or nesting (a 20 MB tensor name, a
    list of a billion shared lists): what an error message cites stays one short line."""
    return _SHORT.repr(value).replace("\n", " ")


def _check_stat(st: os.stat_result, path, max_bytes: int, what: str, error: type[Exception]) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise error(f"{path}: is {kind}, not a regular file; give a {what}")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size:,} bytes; a {what} is at most {max_bytes:,}")


def read_regular_file(path, max_bytes: int, what: str = "file", error: type[Exception] = InputError) -> bytes:
    """The bytes of a regular file of at most max_bytes; anything else raises `error`."""
    try:
        _check_stat(os.stat(path), path, max_bytes, what, error)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        _check_stat(os.fstat(fd), path, max_bytes, what, error)  # the file opened is the file checked
        chunks, size = [], 0
        while size <= max_bytes:  # /proc files report size 0: the cap still holds
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if size > max_bytes:
        raise error(f"{path}: more than {max_bytes:,} bytes; a {what} is at most {max_bytes:,}")
    return b"".join(chunks)
