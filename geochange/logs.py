"""Messages of the library through ``logging`` (logger ``geochange``), and the one handler the CLI uses.

The library logs status lines at INFO (``progress.say``), warnings about the result at WARNING
(``progress.warn``) and details at DEBUG; it installs no handler, so a program that imports it decides.
The CLI installs :class:`PlainHandler` on ``geochange``, on rasterio's GDAL messages and on Python
warnings: each message is one plain line on stderr (``warning: ...``), never a source line or a
traceback; ``-v`` adds the debug lines. Known GDAL notices that say nothing about the result are
kept for ``-v``.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

#: GDAL notices that are no news to a user (internal optimisations, a COG layout detail): debug only
QUIET_GDAL = ("invalidates the BLOCK_ORDER optimization", "TIFFReadDirectory", "Non-standard tag",
              "ASCII value for tag")
_CPLE = re.compile(r"^CPLE_\w+ in (.*?): ")


class PlainHandler(logging.Handler):
    """``warning: message`` (or the bare message at INFO and DEBUG) on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            if record.levelno >= logging.ERROR:
                text = f"error: {text}"
            elif record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class GdalFilter(logging.Filter):
    """rasterio's log records of GDAL's messages: ``CPLE_AppDefined in file: text`` -> ``GDAL: text
    (file)``; known notices become DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(q in message for q in QUIET_GDAL):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        m = _CPLE.match(message)
        if m:
            message = f"GDAL: {message[m.end():]} ({m.group(1)})"
        record.msg, record.args = message, None
        return record.levelno >= record_threshold()


_level = logging.INFO
_shown: set[tuple[str, str]] = set()   # warnings already shown in this run


def record_threshold() -> int:
    return _level


def configure_cli_logging(verbose: bool = False) -> None:
    """One handler for the library, GDAL (through rasterio) and Python warnings; DEBUG with ``verbose``."""
    global _level
    _level = logging.DEBUG if verbose else logging.INFO
    _shown.clear()
    handler = PlainHandler()
    ours = logging.getLogger("geochange")
    ours.handlers[:] = [handler]
    ours.setLevel(_level)
    ours.propagate = False
    gdal = logging.getLogger("rasterio")
    gdal_handler = PlainHandler()
    gdal_handler.addFilter(GdalFilter())
    gdal.handlers[:] = [gdal_handler]
    gdal.setLevel(logging.DEBUG if verbose else logging.WARNING)
    gdal.propagate = False
    warnings.showwarning = _show_warning
    _silence_libtiff_stderr()


def _silence_libtiff_stderr() -> None:
    """Take libtiff's default error handler away: it prints straight to stderr (``_tiffWriteProc: No
    space left on device.``) past GDAL and rasterio, while GDAL reports the same failure through its
    own handler, which becomes the CLI's one-line error. The bundled copies of libtiff (rasterio's and
    pyogrio's wheels) or the system's one; nothing happens where none can be found."""
    import ctypes
    import ctypes.util
    import glob
    import os
    import site

    import rasterio  # noqa: F401  (GDAL and its libtiff first, then their handlers can be changed)

    roots = [*site.getsitepackages(), site.getusersitepackages()]
    paths = [p for r in roots for lib in ("rasterio.libs", "pyogrio.libs")
             for p in glob.glob(os.path.join(r, lib, "libtiff*.so*"))]
    system = ctypes.util.find_library("tiff")
    for path in paths or ([system] if system else []):
        try:
            lib = ctypes.CDLL(path)
            lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
            lib.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
            lib.TIFFSetErrorHandler(None)
        except (OSError, AttributeError):
            continue


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (rasterio's NodataShadowWarning, ...) as one plain line, without its source
    line, once per run."""
    text = " ".join(str(message).split())
    if (category.__name__, text) in _shown:
        return
    _shown.add((category.__name__, text))
    # deprecations are for developers (Python hides them outside __main__ too): -v shows them
    level = logging.DEBUG if issubclass(category, (DeprecationWarning, PendingDeprecationWarning)) else logging.WARNING
    logging.getLogger("geochange").log(level, f"{text} ({category.__name__})")
