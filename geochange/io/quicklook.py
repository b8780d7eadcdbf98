"""quicklook.png: BEFORE | AFTER | AFTER with the changes in red, downsampled, for a person to look at.

The canvas is filled as a by-product of detection: every k-th pixel of each window the engine reads
(``add_window``) and of each finished strip of the mask (``write``), so the rasters are read once;
``detect`` then takes the changes from the published mask (``load_mask``: after the region decision,
from its overviews), so the red areas are the regions that were kept.
The dates are shown as the model saw them (radiometrically normalised), with one contrast stretch
for both, so they compare at a glance, in true colour where the bands say which are red, green and
blue (:func:`true_colour`), and under a caption strip: each date's file (and acquisition date when its
tags give one, :func:`acquisition_date`), the model and the share changed (:func:`captions`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rasterio.windows import Window

from geochange.io.atomic import commit, discard, temp_path

GAP = 8
RED = np.array([228, 26, 28])
COLOURS = ("red", "green", "blue")
#: Sentinel-2's band names (zero-padded: Landsat's B2/B3/B4 mean other colours in other missions)
SENTINEL2 = {"b04": "red", "b03": "green", "b02": "blue"}


def true_colour(bands: Sequence[Mapping], chosen: Sequence[int] | None = None) -> tuple[list[int], str]:
    """Which of the compared bands to show as red, green and blue: ``(positions, why)``, positions
    0-based among ``bands`` (one per compared band: ``{"colorinterp": "red", "description": "B04"}``).

    ``chosen`` (``detect --rgb``, 1-based) wins; then band descriptions naming the three colours
    ("Red", "blue band", "B04"...); then the colour interpretation (GDAL gives any 3-band byte GeoTIFF
    red, green, blue by default, so it comes second); else the first three bands (one, grey, when
    there are fewer than three).
    """
    if chosen:
        return [int(b) - 1 for b in chosen], "--rgb"
    for key, why, colour_of in (("description", "band descriptions", _colour_in_description),
                                ("colorinterp", "colour interpretation", _colour_interp)):
        found = {}
        for i, band in enumerate(bands):
            colour = colour_of(band.get(key))
            if colour and colour not in found:
                found[colour] = i
        if len(found) == 3:
            return [found[c] for c in COLOURS], why
    return (list(range(3)) if len(bands) >= 3 else [0]), "first bands"


def _colour_interp(name) -> str | None:
    name = getattr(name, "name", name)
    return name if name in COLOURS else None


def _colour_in_description(text) -> str | None:
    if not text:
        return None
    words = re.findall(r"[a-z]+\d*|\d+", str(text).lower())
    if "edge" in words or "rededge" in words:   # Sentinel-2's red edge bands are not red
        return None
    for word in words:
        if word in COLOURS:
            return word
        if word in SENTINEL2:
            return SENTINEL2[word]
    return None


#: tags that hold when the image was taken (case-insensitive; TIFFTAG_DATETIME is when the file was made)
DATE_TAGS = ("acquisitiondatetime", "acquisition_date", "date_acquired", "acquired", "sensing_time",
             "datatake_sensing_start", "capture_date", "date")


def acquisition_date(tags: Mapping[str, str]) -> str | None:
    """The acquisition date ``YYYY-MM-DD`` found in a raster's tags (default and IMAGERY domains
    merged), or None: the tags of :data:`DATE_TAGS` first, then any other with "acqui" or "sensing" in its name."""
    lower = {k.lower(): v for k, v in tags.items()}
    keys = [k for k in DATE_TAGS if k in lower] + sorted(k for k in lower if ("acqui" in k or "sensing" in k)
                                                          and k not in DATE_TAGS)
    for key in keys:
        m = re.match(r"\s*(\d{4})[-:/]?(\d{2})[-:/]?(\d{2})", str(lower[key]))
        if m:
            try:
                return dt.date(*map(int, m.groups())).isoformat()
            except ValueError:
                continue
    return None


def captions(before: str, after: str, model: str, changed_fraction: float, *, dates: Sequence[str | None] = (None, None),
             rgb: Sequence[int] | None = None) -> list[str]:
    """The three panels' captions: each date's file name (and acquisition date), the model and the share
    of valid pixels changed; ``rgb`` (1-based band numbers) is named under BEFORE."""
    def label(what: str, path: str, date: str | None) -> str:
        name = Path(str(path).split("?")[0]).name
        return f"{what} {date}: {name}" if date else f"{what}: {name}"
    shown = f" (bands {','.join(map(str, rgb))})" if rgb else ""
    return [label("BEFORE", before, dates[0]) + shown, label("AFTER", after, dates[1]),
            f"changes ({model}): {100 * changed_fraction:.2f} % changed"]


class QuicklookCanvas:
    """Decimated BEFORE, AFTER and change mask of a ``height`` x ``width`` grid (longer side <= max_size)."""

    def __init__(self, height: int, width: int, bands: int, threshold: float = 0.5, max_size: int = 1024,
                 rgb: Sequence[int] | None = None) -> None:
        """``rgb``: the positions (0-based) of the bands shown as red, green and blue, or of one grey
        band (:func:`true_colour`); default: the first three."""
        self.k = max(1, math.ceil(max(height, width) / max_size))
        h, w = math.ceil(height / self.k), math.ceil(width / self.k)
        self.rgb = list(rgb) if rgb else list(range(min(bands, 3)))
        nb = len(self.rgb)
        self.before = np.zeros((nb, h, w), np.float32)
        self.after = np.zeros((nb, h, w), np.float32)
        self.valid = np.zeros((h, w), bool)
        self.changed = np.zeros((h, w), bool)
        self.threshold = threshold

    def _targets(self, row_off: int, col_off: int) -> tuple[int, int, int, int]:
        """First in-window row/col on the decimation grid, and where they land on the canvas."""
        r, c = (-row_off) % self.k, (-col_off) % self.k
        return r, c, (row_off + r) // self.k, (col_off + c) // self.k

    def add_window(self, window: Window, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> None:
        """Engine hook: copy the window's pixels that fall on the decimation grid."""
        r, c, i, j = self._targets(int(window.row_off), int(window.col_off))
        b = before[self.rgb, r::self.k, c::self.k]
        h, w = b.shape[1:]
        self.before[:, i:i + h, j:j + w] = b
        self.after[:, i:i + h, j:j + w] = after[self.rgb, r::self.k, c::self.k]
        self.valid[i:i + h, j:j + w] = valid[r::self.k, c::self.k]

    def write(self, strip) -> None:
        """Strip sink: keep the decimated change mask."""
        r, c, i, j = self._targets(strip.row_off, 0)
        sub = strip.candidates(self.threshold)[r::self.k, c::self.k]
        self.changed[i:i + sub.shape[0], j:j + sub.shape[1]] = sub

    def load_mask(self, path: str | Path) -> None:
        """Take the changes from the published mask (after the region decision), read at the canvas's
        size from its overviews (nearest), so the quicklook shows exactly the regions that were kept."""
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(path) as ds:
            mask = ds.read(1, out_shape=self.changed.shape, resampling=Resampling.nearest)
        self.changed = mask == 1

    def part(self, y0: int, y1: int) -> dict[str, np.ndarray]:
        """The canvas rows of grid rows ``[y0, y1)`` (a block's share), for :meth:`paste`."""
        i0, i1 = -(-y0 // self.k), -(-y1 // self.k)
        return {"rows": np.array([i0, i1]), "before": self.before[:, i0:i1], "after": self.after[:, i0:i1],
                "valid": self.valid[i0:i1], "changed": self.changed[i0:i1]}

    def paste(self, part) -> None:
        """Copy in a block's :meth:`part`."""
        i0, i1 = (int(v) for v in part["rows"])
        self.before[:, i0:i1], self.after[:, i0:i1] = part["before"], part["after"]
        self.valid[i0:i1] = part["valid"]
        self.changed[i0:i1] |= part["changed"]

    def save(self, path: str | Path, captions: Sequence[str] | None = None) -> Path:
        """Write the three panels side by side, atomically; ``captions`` (one per panel, see
        :func:`captions`) in a strip above them."""
        lo, hi = _stretch(self.before, self.valid)
        rgb_b, rgb_a = to_rgb(self.before, self.valid, lo, hi), to_rgb(self.after, self.valid, lo, hi)
        overlay = rgb_a.copy()
        sel = self.changed & self.valid
        overlay[sel] = (0.45 * overlay[sel] + 0.55 * RED).astype(np.uint8)
        h, w = self.valid.shape
        canvas = np.full((h, 3 * w + 2 * GAP, 3), 255, np.uint8)
        for n, panel in enumerate((rgb_b, rgb_a, overlay)):
            canvas[:, n * (w + GAP):n * (w + GAP) + w] = panel
        image = Image.fromarray(canvas)
        if captions:
            image = _with_captions(image, w, captions)
        path = Path(path)
        tmp = temp_path(path, ".png")
        try:
            image.save(tmp, format="PNG", compress_level=1)
            commit(tmp, path)
        finally:
            discard(tmp)
        return path


def caption_height(panel_width: int) -> int:
    """Height in pixels of the caption strip above panels ``panel_width`` wide."""
    return round(1.8 * _font_size(panel_width))


def _font_size(panel_width: int) -> int:
    return int(min(22, max(10, panel_width / 28)))


def _with_captions(image: Image.Image, panel_width: int, texts: Sequence[str]) -> Image.Image:
    """``image`` under a white strip with each panel's caption (PIL's default font, cut to fit)."""
    size = _font_size(panel_width)
    strip = caption_height(panel_width)
    out = Image.new("RGB", (image.width, image.height + strip), "white")
    out.paste(image, (0, strip))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=size)
    for n, text in enumerate(texts[:3]):
        text = _fit(draw, text, font, panel_width - 4)
        draw.text((n * (panel_width + GAP) + 2, (strip - size) // 2), text, fill=(0, 0, 0), font=font)
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut and ended with ``...`` when wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def _stretch(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 percentiles of the valid pixels."""
    if not valid.any():
        return np.zeros(image.shape[0]), np.ones(image.shape[0])
    vals = image[:, valid]
    return np.percentile(vals, 2, axis=1), np.percentile(vals, 98, axis=1)


def to_rgb(image: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w, 3)`` uint8: up to three bands (one band as grey), stretched to [lo, hi]."""
    bands = image if image.shape[0] == 3 else np.repeat(image[:1], 3, axis=0)
    lo3, hi3 = (lo, hi) if image.shape[0] == 3 else (np.repeat(lo[:1], 3), np.repeat(hi[:1], 3))
    scaled = (bands - lo3[:, None, None]) / np.maximum(hi3 - lo3, 1e-9)[:, None, None]
    out = (np.clip(scaled, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0).copy()
    out[~valid] = 0
    return out
