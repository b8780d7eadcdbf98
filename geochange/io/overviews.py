"""Average overviews of a float raster, built from its rows as they are written.

A COG needs overviews. Left to GDAL, the COG copy reads the whole raster once more to build them into
a temporary file, compressing and decompressing them on the way: for a float probability that was
half the cost of publishing it (benchmarks/bench_detect.py). Built here from the strips the engine
streams anyway, each level is a 2x2 average of the level below (nodata left out, as GDAL's AVERAGE
does; sizes rounded down, as the COG driver's), kept in an uncompressed temporary GeoTIFF, and handed to the COG copy ready to use
(:func:`geochange.io.rasters.publish_cog`). Memory: one odd row per level.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geochange.io.align import Grid
from geochange.io.atomic import discard, temp_path

#: the COG's tile size: levels are added until one fits in a tile, as the COG driver's AUTO does
BLOCK = 512


def level_sizes(width: int, height: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """(width, height) of each overview level, halving (rounding down, as the COG driver does) until
    both fit in ``block``."""
    sizes = []
    while width > block or height > block:
        width, height = max(1, width // 2), max(1, height // 2)
        sizes.append((width, height))
    return sizes


def halve(rows: np.ndarray, nodata: float) -> np.ndarray:
    """2x2 means of ``rows`` (h, w), leaving ``nodata`` out (nodata where a block has no data); an odd
    last row or column is left out, as the level's size is rounded down."""
    h, w = rows.shape[0] // 2 * 2, rows.shape[1] // 2 * 2
    corners = [rows[i:h:2, j:w:2] for i in (0, 1) for j in (0, 1)]   # strided views: no reductions
    valid = [c != nodata for c in corners]
    if all(v.all() for v in valid):
        out = corners[0] + corners[1]
        out += corners[2]
        out += corners[3]
        out *= np.float32(0.25)
        return out.astype(np.float32, copy=False)
    total = np.zeros(corners[0].shape, np.float32)
    count = np.zeros(corners[0].shape, np.float32)
    for c, v in zip(corners, valid):
        np.add(total, c, out=total, where=v)
        count += v
    out = np.full(total.shape, nodata, np.float32)
    np.divide(total, count, out=out, where=count > 0)
    return out


class OverviewBuilder:
    """Feed a float raster's rows top to bottom (:meth:`add`); :meth:`finish` gives the overview files,
    finest first, for :func:`~geochange.io.rasters.publish_cog`; :meth:`discard` removes them."""

    def __init__(self, path: str | Path, grid: Grid, nodata: float, block: int = BLOCK) -> None:
        self.nodata = float(nodata)
        self.paths: list[Path] = []
        self._files = []
        sizes = level_sizes(grid.width, grid.height, block)
        try:
            for k, (w, h) in enumerate(sizes, start=1):
                self.paths.append(temp_path(Path(path), f".ovr{k}.tif"))
                transform = grid.transform * grid.transform.scale(grid.width / w, grid.height / h)
                self._files.append(rasterio.open(
                    self.paths[-1], "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                    crs=grid.crs, transform=transform, nodata=nodata, tiled=False, blockysize=16,
                    bigtiff="IF_SAFER"))
        except BaseException:
            self.discard()
            raise
        self._odd: list[np.ndarray | None] = [None] * len(sizes)  # a row waiting for its pair, per level
        self._row = [0] * len(sizes)                               # rows written, per level

    def add(self, rows: np.ndarray) -> None:
        """The raster's next rows (h, width), float32 with nodata."""
        self._feed(0, rows)

    def finish(self) -> list[Path]:
        """Close the files (an odd last row of a level is left out); their paths, finest level first."""
        for f in self._files:
            f.close()
        return self.paths

    def discard(self) -> None:
        for f in self._files:
            f.close()
        discard(*self.paths)

    def _feed(self, k: int, rows: np.ndarray) -> None:
        if k == len(self._files) or not len(rows):
            return
        if self._odd[k] is not None:
            rows = np.concatenate([self._odd[k], rows])
            self._odd[k] = None
        even = rows.shape[0] // 2 * 2
        if even < rows.shape[0]:
            self._odd[k] = rows[even:].copy()
        if even:
            self._write(k, halve(rows[:even], self.nodata))

    def _write(self, k: int, rows: np.ndarray) -> None:
        f = self._files[k]
        f.write(rows, 1, window=Window(0, self._row[k], f.width, rows.shape[0]))
        self._row[k] += rows.shape[0]
        self._feed(k + 1, rows)
