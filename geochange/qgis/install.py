"""``geochange qgis-install``: copy the plugin into a QGIS profile, with the command that runs this geochange.

The plugin folder (``geochange_qgis``) is a copy of this package's ``geochange/qgis`` files plus
``geochange_command.json``: the Python of the environment running the install, ``-m geochange``. The
plugin then runs that environment's geochange, whatever QGIS's PATH holds. It is replaced whole, and
atomically: a QGIS that is open keeps the old copy until it restarts. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

PLUGIN = "geochange_qgis"
#: the plugin's files (this module is geochange's, not the plugin's)
FILES = ("__init__.py", "algorithms.py", "plugin.py", "provider.py", "runner.py", "settings.py", "metadata.txt",
         "icon.svg")


def plugins_dir(profile: str = "default") -> Path:
    """QGIS 3's plugin folder of ``profile`` on this system."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "QGIS" / "QGIS3"
    return base / "profiles" / profile / "python" / "plugins"


def this_command() -> list[str]:
    """The command that runs the geochange of this environment."""
    return [sys.executable, "-m", "geochange"]


def install(folder: str | Path | None = None, profile: str = "default", command: list[str] | None = None) -> Path:
    """Copy the plugin into ``folder`` (default: ``profile``'s plugin folder) as ``geochange_qgis``; returns it."""
    from geochange import __version__
    from geochange.io.atomic import discard, temp_path

    target = Path(folder) if folder else plugins_dir(profile)
    target.mkdir(parents=True, exist_ok=True)
    final = target / PLUGIN
    staged, old = temp_path(final), temp_path(final, ".old")
    source = Path(__file__).resolve().parent
    try:
        staged.mkdir()
        for name in FILES:
            shutil.copy2(source / name, staged / name)
        (staged / "geochange_command.json").write_text(
            json.dumps({"command": command or this_command(), "geochange": __version__}, indent=1) + "\n",
            encoding="utf-8")
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            os.replace(final, old)
        os.replace(staged, final)
    finally:
        discard(staged, old)
    return final
