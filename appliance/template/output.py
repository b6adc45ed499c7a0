"""Writing a rendered template to disk and running its command (the I/O after a render).

`write_atomic` follows consul-template's renderer: when the file already holds exactly the new
bytes nothing is written and the command does not run; otherwise the bytes go to a temporary file
in the destination's directory (so the rename cannot cross file systems), are flushed and fsynced,
get their mode (the configured `perms`, else the existing file's mode, else 0644) and the existing
file's owner when we may set it, then `rename` replaces the destination in one step: a reader sees
the old file or the new one, never half of one. With `backup`, the previous file is kept as
`<destination>.bak`. A failure removes the temporary file.

`run_command` runs the command with a shell when it is a string, directly when it is a list, with
a timeout after which the command's process group is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile

DEFAULT_PERMS = 0o644


class OutputError(Exception):
    """A destination that cannot be written, or a command that failed."""


def write_atomic(dest: str, data: bytes, *, perms: int | None = None, create_dirs: bool = True,
                 backup: bool = False) -> bool:
    """Replace `dest` with `data`; return False (and write nothing) when it already holds it."""
    try:
        with open(dest, "rb") as fh:
            if fh.read() == data:
                return False
        st: os.stat_result | None = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"reading {dest}: {exc.strerror or exc}") from None
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        if not create_dirs:
            raise OutputError(f"no parent directory for {dest}")
        try:
            os.makedirs(parent, 0o755, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"creating {parent}: {exc.strerror or exc}") from None
    mode = perms if perms is not None else (st.st_mode & 0o7777 if st is not None else DEFAULT_PERMS)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"creating a temporary file in {parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if st is not None:
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        if backup and st is not None:
            _backup(dest)
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"writing {dest}: {exc.strerror or exc}") from None
    return True


def _backup(dest: str) -> None:
    """`<dest>.bak` becomes a hard link to the current file (one backup is kept)."""
    bak = dest + ".bak"
    old = dest + ".old.bak"
    with contextlib.suppress(FileNotFoundError):
        os.replace(bak, old)
    try:
        os.link(dest, bak)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)


def run_command(command: str | list[str], timeout_s: float) -> None:
    """Run the template's command; raise OutputError on a non-zero exit or a timeout."""
    shell = isinstance(command, str)
    try:
        proc = subprocess.Popen(command, shell=shell, start_new_session=True)
    except OSError as exc:
        raise OutputError(f"command {command!r}: {exc.strerror or exc}") from None
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise OutputError(f"command {command!r} did not finish within {timeout_s:g}s") from None
    if code != 0:
        raise OutputError(f"command {command!r} exited with code {code}")
