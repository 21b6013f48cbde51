"""Child processes that cannot outlive or overwhelm the tool.

Every worker and native probe runs through run_isolated():
  - in its own session (so its own process group): a timeout, Ctrl-C, SIGTERM
    or SIGHUP ends the whole group, children of the child included;
  - with stdout and stderr sent to files, of which only the last TAIL_BYTES are
    read back: a child that prints 200 MB costs disk, never the tool's memory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TAIL_BYTES = 64 * 1024


@dataclass
class Finished:
    returncode: int | None  # None: killed on timeout
    stdout_tail: str
    stderr_tail: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def how(self) -> str:
        if self.returncode is None:
            return "timed out"
        return f"signal {-self.returncode}" if self.returncode < 0 else f"exit code {self.returncode}"

    def last_lines(self, n: int = 3, limit: int = 500) -> str:
        text = (self.stderr_tail.strip() or self.stdout_tail.strip())
        return " | ".join(text.splitlines()[-n:])[-limit:]


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - limit))
        return fh.read(limit).decode("utf-8", "replace")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_isolated(cmd: list[str], timeout: float, env: dict | None = None,
                 workdir: str | os.PathLike | None = None) -> Finished:
    """Run cmd in its own session; the group is killed on timeout, on any exception
    (KeyboardInterrupt and the CLI's termination signals included) and after it exits,
    so no grandchild survives. Output goes to files in workdir (else a temporary dir)."""
    with tempfile.TemporaryDirectory(prefix="microgpt-bench-out-", dir=workdir) as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    start_new_session=True)
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:  # also on KeyboardInterrupt / termination: nothing of the child survives
                kill_group(proc)
                proc.wait()
        return Finished(returncode, read_tail(out_path), read_tail(err_path))
