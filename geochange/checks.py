"""Checks of numeric options shared by every command: finite, in range, one line naming the option."""

from __future__ import annotations

import math

from geochange.errors import GeochangeError


def check_number(value: float | int | None, option: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False, what: str = "") -> None:
    """Refuse ``value`` (None passes) unless it is a finite number in [``low``, ``high``]
    (``low_open``: above ``low``); ``integer``: a whole number. ``what`` says what it counts."""
    if value is None:
        return
    unit = f" {what}" if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GeochangeError(f"{option} must be a finite number{unit}, not {value}")
    if integer and value != int(value):
        raise GeochangeError(f"{option} must be a whole number{unit}, not {value}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"above {low:g}" if low_open else f">= {low:g}"
        raise GeochangeError(f"{option} must be {bound}{unit}, not {value:g}")
    if high is not None and value > high:
        raise GeochangeError(f"{option} must be <= {high:g}{unit}, not {value:g}")


def check_bands(bands: list[int] | None, option: str = "--bands") -> None:
    """Band numbers are 1-based and each appears once (a band compared with itself is no comparison)."""
    if not bands:
        return
    text = ",".join(map(str, bands))
    low = [b for b in bands if b < 1]
    if low:
        raise GeochangeError(f"{option} {text}: band numbers start at 1, not {low[0]}")
    seen: set[int] = set()
    for b in bands:
        if b in seen:
            raise GeochangeError(f"{option} {text}: band {b} is given twice; give each band once")
        seen.add(b)


def check_local_folder(path, option: str = "--out") -> None:
    """Outputs go to a local (or mounted) folder: a URL such as ``s3://bucket/run`` is refused in one line
    rather than created as a folder named ``s3:``. (``Path`` turns ``s3://b`` into ``s3:/b``: both match.)"""
    text = str(path)
    scheme, sep, _ = text.partition(":/")
    if (sep and len(scheme) > 1 and scheme.replace("+", "").replace(".", "").replace("-", "").isalnum()) \
            or text.startswith("/vsi"):
        shown = text if "://" in text or text.startswith("/vsi") else text.replace(":/", "://", 1)
        raise GeochangeError(f"{option} {shown}: remote outputs are not supported; write to a local folder and "
                             "copy it there afterwards (e.g. aws s3 cp --recursive)")
