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
