"""An output folder owned by one run: locked, and left as it was when the run fails.

A lock file (``.geochange.lock``, the owner's host and pid) keeps a second run out of a folder that one
is writing; a lock whose process has died (SIGKILL, a crash) is taken over. Outputs of an earlier run
that this one replaces (``--overwrite``) are moved aside first and put back if the run fails (an error,
a full disk, Ctrl-C, SIGTERM), after the failed run's own outputs are removed: the folder is then as
it was before. An I/O error (no space left, a failing disk) becomes one line naming the folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from geochange.errors import GeochangeError
from geochange.io.atomic import discard, run_token

LOCK = ".geochange.lock"
#: errno values that mean the disk or the filesystem, not the program: no space, quota, I/O, read-only
IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)
IO_MESSAGES = ("No space left on device", "Disk quota exceeded", "Input/output error", "Read-only file system", "IO error",
               "Write error", "Write failed",
               "File too large")


class OutputFolder:
    """``with OutputFolder(path, outputs): ...``: lock ``path``, set aside the earlier ``outputs``, and
    on failure remove what the run published and put them back; on success drop them."""

    def __init__(self, path: Path, outputs: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.outputs = outputs
        self.lock = self.path / LOCK
        self.backup = self.path / f".geochange-earlier-{run_token()}"
        self._moved: list[str] = []

    def __enter__(self) -> "OutputFolder":
        take_lock(self.lock)
        try:
            earlier = [n for n in self.outputs if (self.path / n).exists()]
            if earlier:
                self.backup.mkdir()
                for name in earlier:
                    os.replace(self.path / name, self.backup / name)
                    self._moved.append(name)
        except BaseException:
            self._restore()
            self.lock.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, kind, exc, tb) -> None:
        failure = _write_failure(exc, self.path) if exc is not None else None
        try:
            if kind is None:
                discard(self.backup)
            else:
                for name in self.outputs:
                    discard(self.path / name)
                self._restore()
        finally:
            self.lock.unlink(missing_ok=True)
        if failure:
            raise GeochangeError(f"{self.path}: cannot write the outputs, is the disk full or failing? "
                                 f"({failure}); the folder is left as it was") from None

    def _restore(self) -> None:
        for name in self._moved:
            os.replace(self.backup / name, self.path / name)
        self._moved = []
        discard(self.backup)


def take_lock(lock: Path) -> None:
    """Create ``lock`` for this process, or refuse in one line while a live process holds it; a lock left
    by a process that is gone is taken over."""
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            host, pid = _owner(lock)
            if pid is not None and _alive(host, pid):
                raise GeochangeError(f"{lock.parent}: another geochange run (pid {pid}"
                                     f"{'' if host == socket.gethostname() else ' on ' + host}) is writing there; "
                                     "wait for it to finish or choose another --out") from None
            lock.unlink(missing_ok=True)   # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return
    raise GeochangeError(f"{lock.parent}: cannot take the lock {lock.name} (other runs keep taking it)")


def _owner(lock: Path) -> tuple[str, int | None]:
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return "", None


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True   # another machine's process: cannot tell, so assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: less free space than this (or than 1 % of the filesystem) when a write fails: the disk is full
NEARLY_FULL_BYTES = 16 * 2**20


def _write_failure(exc: BaseException, path: Path) -> str | None:
    """What went wrong with the disk when ``exc`` ended a run, or None for anything else (a bug keeps
    its traceback). GDAL does not always say "no space" (a COG copy may fail with "IO error" or an
    internal follow-up error), so an error of GDAL, OGR or the OS on a nearly full disk counts too."""
    said = io_failure(exc)
    if said:
        return said
    if isinstance(exc, GeochangeError) or not _from_io_library(exc):
        return None
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    if usage.free < NEARLY_FULL_BYTES or usage.free < usage.total // 100:
        return f"{usage.free // 1024} KiB free on the disk; {' '.join(str(exc).split())[:120]}"
    return None


def _from_io_library(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return isinstance(exc, OSError) or module.startswith(("rasterio", "pyogrio", "fiona"))


def io_failure(exc: BaseException) -> str | None:
    """What an exception says about the disk ("No space left on device", ...), or None when it is not
    an I/O failure. Looks through its causes: GDAL and OGR report them as their own exceptions."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in IO_ERRNOS:
            return os.strerror(exc.errno)
        text = " ".join(str(exc).split())
        for message in IO_MESSAGES:
            if message in text:
                return text if len(text) <= 120 else message
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
