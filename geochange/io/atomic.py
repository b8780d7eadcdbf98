"""Atomic outputs: write under a hidden temporary name beside the final one, rename when complete.

A crash, an error or Ctrl-C therefore never leaves a half-written file under a final name, and an
existing output is only replaced by a complete one (``os.replace`` is atomic on one filesystem).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


_TOKEN: tuple[int, str] = (0, "")


def run_token() -> str:
    """``<pid>-<random>``: the same for every call in one process, another in any other process (a fork
    too), so that two runs writing beside each other never share a temporary name."""
    global _TOKEN
    pid = os.getpid()
    if _TOKEN[0] != pid:
        _TOKEN = (pid, f"{pid}-{secrets.token_hex(3)}")
    return _TOKEN[1]


def temp_path(final: str | Path, suffix: str = "") -> Path:
    """A hidden sibling of ``final`` to write into, of this process only: ``dir/.name.partial-<run><suffix>``."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial-{run_token()}{suffix}")


def commit(temp: str | Path, final: str | Path) -> None:
    """Move a finished temporary file onto its final name."""
    os.replace(temp, final)


def discard(*paths: str | Path) -> None:
    """Remove temporary files or folders, ignoring those that do not exist."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def write_text(final: str | Path, text: str) -> None:
    """Write a small text file atomically."""
    tmp = temp_path(final)
    try:
        tmp.write_text(text, encoding="utf-8")
        commit(tmp, final)
    except BaseException:
        discard(tmp)
        raise
