"""The region decisions burned into the mask: dropped regions cleared, small holes filled.

The engine writes the candidate mask (``prob >= low``) strip by strip, before any region is known.
The polygon sink records what it drops and fills (:class:`MaskFixups`, spilled to a temporary file
as it goes, so memory does not grow with their number); at the end :meth:`MaskFixups.apply` burns
them into the temporary mask (and type) GeoTIFF, band of rows by band of rows, drops first (an
island dropped inside a filled hole ends up filled), and returns how the changed pixels and area
moved, for the statistics.
"""

from __future__ import annotations

import struct
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geochange.engine.regions import Decision
from geochange.geometry import GroundScale
from geochange.io.atomic import discard

DROP, FILL = 0, 1
_HEADER = struct.Struct("<BBI")  # kind, value (change type), WKB length


@dataclass
class Correction:
    """How applying the fix-ups moved the changed pixels and area of the mask."""

    pixels: int = 0
    area_m2: float = 0.0


class MaskFixups:
    """Dropped regions and filled holes (grid pixel coordinates), spilled to ``path`` until applied."""

    def __init__(self, path: str | Path, scale: GroundScale, band_rows: int = 256, chunk: int = 20_000) -> None:
        self.path, self.scale, self.band_rows, self.chunk = Path(path), scale, band_rows, chunk
        self.dropped = 0
        self.filled = 0
        self._file = None

    def record(self, decision: Decision) -> None:
        """Note what a :func:`~geochange.engine.regions.decide` dropped and filled."""
        for kind, geoms, values in ((DROP, decision.dropped, [1] * len(decision.dropped)),
                                    (FILL, decision.filled, decision.filled_types)):
            if not geoms:
                continue
            if self._file is None:
                self._file = open(self.path, "wb")
            for wkb, value in zip(shapely.to_wkb(np.array(geoms, dtype=object)), values):
                self._file.write(_HEADER.pack(kind, value, len(wkb)) + wkb)
        self.dropped += len(decision.dropped)
        self.filled += len(decision.filled)

    def apply(self, mask: str | Path, types: str | Path | None = None, first_row: int = 0) -> Correction:
        """Burn the fix-ups into the GeoTIFFs ``mask`` (and ``types``), whose row 0 is grid row ``first_row``."""
        out = Correction()
        if self._file is None:
            return out
        self._file.close()
        with rasterio.open(mask, "r+") as m, (rasterio.open(types, "r+") if types else nullcontext()) as t:
            for kind in (DROP, FILL):
                for geoms, values in self._read(kind):
                    self._burn(m, t, kind, geoms, values, first_row, out)
        return out

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        discard(self.path)

    def _read(self, kind: int):
        """The records of ``kind``, ``chunk`` at a time: (geometries, values)."""
        geoms, values = [], []
        with open(self.path, "rb") as f:
            while head := f.read(_HEADER.size):
                k, value, n = _HEADER.unpack(head)
                wkb = f.read(n)
                if k != kind:
                    continue
                geoms.append(wkb)
                values.append(value)
                if len(geoms) >= self.chunk:
                    yield shapely.from_wkb(geoms), np.array(values, np.uint8)
                    geoms, values = [], []
        if geoms:
            yield shapely.from_wkb(geoms), np.array(values, np.uint8)

    def _burn(self, m, t, kind: int, geoms: np.ndarray, values: np.ndarray, first_row: int,
              out: Correction) -> None:
        """Burn one chunk, in bands of ``band_rows`` rows over the columns the chunk spans."""
        bounds = shapely.bounds(geoms)
        y0s, y1s = np.floor(bounds[:, 1]).astype(int), np.ceil(bounds[:, 3]).astype(int)
        top, bottom = first_row, first_row + m.height
        for r0 in range(max(int(y0s.min()), top), min(int(y1s.max()), bottom), self.band_rows):
            r1 = min(r0 + self.band_rows, bottom)
            sel = (y0s < r1) & (y1s > r0)
            if not sel.any():
                continue
            c0, c1 = max(int(np.floor(bounds[sel, 0].min())), 0), min(int(np.ceil(bounds[sel, 2].max())), m.width)
            window = Window(c0, r0 - first_row, c1 - c0, r1 - r0)
            burn = rasterio.features.rasterize(zip(geoms[sel], values[sel].tolist()), out_shape=(r1 - r0, c1 - c0),
                                               transform=Affine.translation(c0, r0), fill=0, dtype="uint8")
            mask = m.read(1, window=window)
            hit = (burn > 0) & (mask == (1 if kind == DROP else 0))
            if not hit.any():
                continue
            mask[hit] = 0 if kind == DROP else 1
            m.write(mask, 1, window=window)
            if t is not None:
                tv = t.read(1, window=window)
                tv[hit] = 0 if kind == DROP else burn[hit]
                t.write(tv, 1, window=window)
            per_row = hit.sum(axis=1)
            sign = -1 if kind == DROP else 1
            out.pixels += sign * int(per_row.sum())
            out.area_m2 += sign * float(per_row @ self.scale.row_areas(r0, r1 - r0))

