"""Run the ``geochange`` command from QGIS: find it, run it in a subprocess, follow its lines, stop it.

QGIS's Python rarely has torch or rasterio, so the provider never imports geochange: it runs the
command of an environment where geochange is installed and reads what it prints. This module uses the
standard library only (it is tested without QGIS).

Progress: geochange writes plain progress lines on stderr when it is not attached to a terminal
(``detecting (cva, cpu): 120/480 windows (25 %, 12 s)``); any ``N/M`` in a line is taken as progress,
and the start and the end are always reported. Cancelling sends SIGTERM: geochange then removes what it had half-written and leaves
its output folder as it was (on Windows, TerminateProcess ends it at once: see docs/qgis.md).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

#: the file ``geochange qgis-install`` writes beside the plugin's code: the command that runs geochange
INSTALLED_COMMAND = "geochange_command.json"
ENV_VAR = "GEOCHANGE_EXECUTABLE"
#: N/M (``120/480 windows``, ``3.2/10.0 MB``), neither side part of a path or a word (``a/2020/10/b`` is no progress)
_FRACTION = re.compile(r"(?<![\w./\\-])(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)(?![\w/\\-]|\.\d)")


class GeochangeNotFound(Exception):
    """No geochange command could be found."""


@dataclass
class RunResult:
    returncode: int
    stdout: str
    error: str = ""          # the one-line error geochange printed (``error: ...``), or the last line of stderr
    canceled: bool = False
    lines: List[str] = field(default_factory=list)   # stderr, line by line

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.canceled


def find_geochange(setting: Optional[str] = None, plugin_dir: Optional[str] = None) -> List[str]:
    """The command that runs geochange, as an argument list: the provider's setting (a path), else
    ``$GEOCHANGE_EXECUTABLE``, else the command ``geochange qgis-install`` recorded beside the plugin,
    else ``geochange`` on PATH."""
    for origin, value in (("the geochange provider's setting", setting), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value and value.strip():
            path = value.strip()
            if not (os.path.isfile(path) or shutil.which(path)):
                raise GeochangeNotFound(f"{origin} names {path}, which does not exist")
            return [shutil.which(path) or path]
    recorded = Path(plugin_dir or Path(__file__).parent) / INSTALLED_COMMAND
    if recorded.is_file():
        command = json.loads(recorded.read_text(encoding="utf-8"))["command"]
        if command and os.path.isfile(command[0]):
            return list(command)
    found = shutil.which("geochange")
    if found:
        return [found]
    raise GeochangeNotFound(
        "the geochange command was not found: set its path in Settings > Options > Processing > Providers > "
        f"geochange (or {ENV_VAR}), or run `geochange qgis-install` in the environment where geochange is installed")


def progress_of(line: str) -> Optional[float]:
    """The progress (0..100) a line tells, from its last ``N/M`` with 0 <= N <= M; None if none."""
    for n, m in reversed(_FRACTION.findall(line)):
        n, m = float(n), float(m)
        if 0 < m and n <= m:
            return 100.0 * n / m
    return None


def error_of(lines: List[str]) -> str:
    """The error to show for a failed run: geochange's one ``error: ...`` line, else the last line."""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1].strip() if lines else ""


def run(command: List[str], on_line: Callable[[str, str], None], is_canceled: Callable[[], bool],
        poll_s: float = 0.2, grace_s: float = 30.0, env: Optional[dict] = None) -> RunResult:
    """Run ``command``; ``on_line(stream, text)`` for each line of stdout or stderr as it comes;
    ``is_canceled()`` polled every ``poll_s``: when true, terminate it (and kill it after ``grace_s``)."""
    environment = dict(os.environ if env is None else env)
    # plain lines: no colours, no wrapping at 80 columns, no buffering
    environment.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "400", "PYTHONUNBUFFERED": "1",
                        "PYTHONIOENCODING": "utf-8"})
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=environment, creationflags=flags, text=True, encoding="utf-8", errors="replace")
    lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()
    readers = [threading.Thread(target=_read, args=(name, stream, lines), daemon=True)
               for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in readers:
        t.start()
    out: List[str] = []
    err: List[str] = []
    open_streams, canceled, deadline = 2, False, None
    while open_streams:
        try:
            name, text = lines.get(timeout=poll_s)
        except queue.Empty:
            name, text = "", None
        if name and text is None:
            open_streams -= 1
        elif name:
            (out if name == "stdout" else err).append(text)
            on_line(name, text)
        if not canceled and is_canceled():
            canceled, deadline = True, time.monotonic() + grace_s
            proc.terminate()
        if deadline is not None and time.monotonic() > deadline and proc.poll() is None:
            proc.kill()
    returncode = proc.wait()
    return RunResult(returncode, "\n".join(out), error_of(err), canceled, err)


def _read(name: str, stream, lines: "queue.Queue") -> None:
    for text in iter(stream.readline, ""):
        lines.put((name, text.rstrip("\r\n")))
    stream.close()
    lines.put((name, None))
