"""Rich progress bars for long steps, silenced by ``--quiet`` (or when nobody watches a terminal)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

_quiet = False
console = Console(stderr=True)
log = logging.getLogger("geochange")


def set_quiet(quiet: bool) -> None:
    """Switch every progress bar and status line off (``--quiet``)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def say(message: str) -> None:
    """A status line (logged at INFO on ``geochange``), unless quiet."""
    if not _quiet:
        log.info(message)


def warn(message: str) -> None:
    """A warning (logged at WARNING on ``geochange``); shown even when quiet, since it is about the result."""
    log.warning(message)


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Show a progress bar for one step; yields ``advance(n)``. Nothing when stderr is no terminal (a
    log file, a pipe, a scheduler): a bar there is only blank lines."""
    if _quiet or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as prog:
        tid = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(tid, n)
