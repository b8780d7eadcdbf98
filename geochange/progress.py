"""Progress of long steps: a bar on a terminal, plain lines elsewhere; silenced by ``--quiet``.

``with task("detecting (cva, cpu)", len(plan), unit="windows") as advance: ... advance(n)`` shows

* on a terminal (stderr is a TTY): a rich bar ``detecting (cva, cpu) ━━━━ 120/480 windows 0:00:12
  0:00:36``; a step whose size is not known shows a spinner and its elapsed time, and ``done`` once
  finished (never ``0/?``). Steps started inside another (a model's training epochs inside the fit)
  are rows of the same display.
* elsewhere (a pipe, a log file, a scheduler): plain lines, logged at INFO on ``geochange.progress``
  (the CLI prints them as they are): ``detecting (cva, cpu): 120/480 windows (25 %, 12 s)`` when a
  further tenth is done but at most every :data:`LINE_EVERY_S` seconds (or after
  :data:`HEARTBEAT_S` seconds without one), then a final ``detecting (cva, cpu): 480/480 windows in
  48 s``. Never a blank line, never a control character. A ``transient`` step (one epoch's batches)
  writes no final line.

``advance(n=1, note=None)``: ``n`` more units done; ``note`` names what the step does now (e.g. the fit's
``normalisation``), shown after the description until the next ``advance``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

_quiet = False
log = logging.getLogger("geochange")
lines_log = logging.getLogger("geochange.progress")

#: line mode: at most one progress line per step this often (seconds), each for a further tenth done
LINE_EVERY_S = 5.0
#: line mode: a line after this long without one, whatever the progress (slow steps, unknown sizes)
HEARTBEAT_S = 60.0

Advance = Callable[..., None]


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
def task(description: str, total: int | None, unit: str = "", transient: bool = False) -> Iterator[Advance]:
    """Show the progress of one step (see the module's doc); yields ``advance(n=1, note=None)``.

    ``total``: the step's size in ``unit`` (``"bytes"`` are shown in kB/MB/GB), or None when it is
    not known. ``transient``: a sub-step (one epoch) that leaves nothing behind once finished."""
    if _quiet:
        yield _nothing
    elif _on_terminal():
        with _bar(description, total, unit, transient) as advance:
            yield advance
    else:
        with _lines(description, total, unit, transient) as advance:
            yield advance


def _nothing(n: int = 1, note: str | None = None) -> None:
    pass


@contextlib.contextmanager
def untold() -> Iterator[Advance]:
    """A step nobody is shown (e.g. on the other ranks of a distributed run); yields ``advance``."""
    yield _nothing


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


# --- a terminal: one rich display, shared by nested steps ---------------------------------------

_display: Progress | None = None


def count_text(done: float, total: float | None, unit: str) -> str:
    """``120/480 windows``; ``3.2/10.0 MB``; ``120 windows`` when the total is not known."""
    if unit == "bytes":
        scale, name = _byte_scale(total if total else done)
        counted = f"{done / scale:.1f}" if total is None else f"{done / scale:.1f}/{total / scale:.1f}"
        return f"{counted} {name}"
    counted = f"{int(done)}" if total is None else f"{int(done)}/{int(total)}"
    return f"{counted} {unit}".rstrip()


def _byte_scale(n: float) -> tuple[float, str]:
    for scale, name in ((2**30, "GB"), (2**20, "MB"), (2**10, "kB")):
        if n >= scale:
            return scale, name
    return 1, "bytes"


class _CountColumn(ProgressColumn):
    """``120/480 windows``; for a step of unknown size, what is counted so far, then ``done``."""

    def render(self, task) -> Text:
        if task.fields.get("unknown"):
            if task.finished:
                return Text("done", style="green")
            return Text(count_text(task.completed, None, task.fields["unit"]) if task.completed else "",
                        style="progress.download")
        return Text(count_text(task.completed, task.total, task.fields["unit"]), style="progress.download")


class _RemainingColumn(TimeRemainingColumn):
    """Time left, or nothing for a step of unknown size (no ``-:--:--``)."""

    def render(self, task) -> Text:
        return Text("") if task.fields.get("unknown") else super().render(task)


@contextlib.contextmanager
def _bar(description: str, total: int | None, unit: str, transient: bool) -> Iterator[Advance]:
    global _display
    own = _display is None
    if own:
        _display = Progress(SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), BarColumn(),
                            _CountColumn(), TimeElapsedColumn(), _RemainingColumn(),
                            console=Console(stderr=True))
        _display.start()
    display = _display
    tid: TaskID = display.add_task(description, total=total, unit=unit, unknown=total is None)
    ok = False

    def advance(n: int = 1, note: str | None = None) -> None:
        if note or n:   # a note names the sub-step now running; done units without one end it
            display.update(tid, advance=n, description=f"{description}: {note}" if note else description)

    try:
        yield advance
        ok = True
    finally:
        if ok and not transient:
            done = display.tasks[_index(display, tid)].completed
            if total is None:   # finished: a full bar and "done", not "0/?"
                display.update(tid, total=max(done, 1), completed=max(done, 1), description=description)
            else:
                display.update(tid, description=description)
        if transient or not ok:
            display.remove_task(tid)
        if own:
            display.stop()
            _display = None


def _index(display: Progress, tid: TaskID) -> int:
    return next(i for i, t in enumerate(display.tasks) if t.id == tid)


# --- elsewhere: plain lines ---------------------------------------------------------------------

def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


@contextlib.contextmanager
def _lines(description: str, total: int | None, unit: str, transient: bool) -> Iterator[Advance]:
    start = last = time.monotonic()
    state = {"done": 0, "tenth": 0, "note": None}

    def advance(n: int = 1, note: str | None = None) -> None:
        state["done"] += n
        if note or n:
            state["note"] = note
        now = time.monotonic()
        done, since = state["done"], now - last
        tenth = int(10 * done / total) if total else 0
        unfinished = not total or done < total   # the final line tells of the end
        if unfinished and ((total and tenth > state["tenth"] and since >= LINE_EVERY_S) or since >= HEARTBEAT_S):
            _line(now, tenth)

    def _line(now: float, tenth: int) -> None:
        nonlocal last
        done, elapsed = state["done"], now - start
        counted = count_text(done, total or None, unit)
        if total:
            left = elapsed * (total - done) / done if done else None
            more = f"{100 * done / total:.0f} %, {_seconds(elapsed)}" + (f", ~{_seconds(left)} left" if left and left >= 1 else "")
        else:
            more = _seconds(elapsed)
        note = f" ({state['note']})" if state["note"] else ""
        lines_log.info(f"{description}{note}: {counted} ({more})")
        last, state["tenth"] = now, tenth

    yield advance
    if not transient:
        counted = count_text(state["done"], total or None, unit) if (total or state["done"]) else "done"
        lines_log.info(f"{description}: {counted} in {_seconds(time.monotonic() - start)}")
