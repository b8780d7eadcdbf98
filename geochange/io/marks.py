"""An analyst's marks: a few changed and unchanged areas drawn on the scene, as polygons or points.

The one format ``detect --labels``, ``train --labels`` and ``tile --labels`` share: any vector file OGR
reads (GeoPackage, Shapefile, GeoJSON, ...), in any CRS, with an integer field ``change`` (1 changed,
0 unchanged; another name with ``field``). Polygons mark every pixel whose centre they hold; points
mark the pixel they fall in. Everywhere else is unknown (255), never "unchanged": a model learns from
what was marked, and from the scene's own cheap negatives where it asks for them.
"""

from __future__ import annotations

import os

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.geometry import repair
from geochange.io.align import Grid, first_line
from geochange.io.labels import NON_DATA_LAYERS, vector_layers, window_bounds

UNKNOWN = 255
#: the default name of the marks' label field
FIELD = "change"


def has_field(path: str, field: str = FIELD, layer: str | None = None) -> bool:
    """Whether the vector layer at ``path`` has a field ``field`` (then it holds marks, not changed areas)."""
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception:  # not a vector source, or no such layer: the caller reports it
        return False
    return field in [str(f) for f in info["fields"]]


class Marks:
    """The marks of ``path`` on ``grid``: ``read(window)`` gives 1 changed, 0 unchanged, 255 unknown.

    Refuses, in one line each, what cannot be learned from: a file that is not a vector layer, an
    empty layer, no ``field``, values other than 0 and 1, geometries that are neither polygons nor
    points, marks outside the grid (the overlap of the two dates), and marks of one class only.
    Where a changed and an unchanged mark overlap, changed wins. ``outside="drop"`` keeps the marks on
    the grid and drops the others (one file of marks for several scenes; an error only when none is
    left); ``both_classes=False`` accepts marks of one class (``tile``).
    """

    def __init__(self, path: str, grid: Grid, field: str = FIELD, layer: str | None = None,
                 option: str = "--labels", outside: str = "error", both_classes: bool = True) -> None:
        self.path, self.field = str(path), field
        gdf = _read_layer(self.path, layer, field, option)
        if gdf.crs is None:
            raise GeochangeError(f"{path}: the marks have no CRS (assign one first, e.g. ogr2ogr -a_srs EPSG:XXXX)")
        values = _class_values(gdf[field], path, field)
        geoms = np.asarray(gdf.geometry.to_crs(grid.crs), dtype=object)
        keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        if not keep.any():
            raise GeochangeError(f"{path}: every mark has an empty geometry")
        geoms, values = repair(geoms[keep]), values[keep]
        lines = [g for g in geoms if g.geom_type in ("LineString", "MultiLineString", "LinearRing")]
        if lines:
            raise GeochangeError(f"{path}: {len(lines)} marks are lines; marks must be polygons or points")
        inside = shapely.intersects(geoms, shapely.box(*grid.bounds))
        if not inside.any():
            raise GeochangeError(f"{path}: none of the {len(geoms)} marks lies where the two dates overlap "
                                 "(check the marks' CRS and extent)")
        if not inside.all() and outside != "drop":
            n_out = int((~inside).sum())
            raise GeochangeError(f"{path}: {n_out} of {len(geoms)} marks lie outside the overlap of the two dates "
                                 "(check the marks' CRS and extent, or delete those marks)")
        geoms, values = geoms[inside], values[inside]
        self.geoms, self.values, self.grid = geoms, values.astype(np.uint8), grid
        counts = {v: int((self.values == v).sum()) for v in (0, 1)}
        if both_classes and (not counts[0] or not counts[1]):
            has, lacks = ("changed", "unchanged (change = 0)") if counts[1] else ("unchanged", "changed (change = 1)")
            raise GeochangeError(f"{path}: all {len(self.values)} marks are {has}; mark a few {lacks} areas too")
        self.n_changed, self.n_unchanged = counts[1], counts[0]
        self.tree = shapely.STRtree(self.geoms)

    def close(self) -> None:
        """Nothing to close: the layer was read whole (marks are few)."""

    def __len__(self) -> int:
        return len(self.geoms)

    def read(self, window: Window) -> np.ndarray:
        """uint8 (h, w): 1 in changed marks, 0 in unchanged ones, 255 elsewhere."""
        h, w = int(window.height), int(window.width)
        out = np.full((h, w), UNKNOWN, np.uint8)
        hits = self.tree.query(shapely.box(*window_bounds(window, self.grid.transform)))
        if len(hits) == 0:
            return out
        transform = self.grid.transform @ Affine.translation(window.col_off, window.row_off)
        hits = hits[np.argsort(self.values[hits], kind="stable")]  # unchanged first: changed is burnt last, wins
        return rasterio.features.rasterize(zip(self.geoms[hits], self.values[hits].tolist()), out=out,
                                           transform=transform, dtype="uint8")

    def pixel_boxes(self) -> np.ndarray:
        """(n, 4) int rows ``row0, col0, row1, col1`` (end exclusive) of each mark's pixels on the grid, clipped."""
        inv = ~self.grid.transform
        out = np.zeros((len(self.geoms), 4), np.int64)
        for i, (xmin, ymin, xmax, ymax) in enumerate(shapely.bounds(self.geoms)):
            cols, rows = zip(*(inv @ xy for xy in ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax))))
            r0, r1 = int(np.floor(min(rows))), int(np.floor(max(rows))) + 1
            c0, c1 = int(np.floor(min(cols))), int(np.floor(max(cols))) + 1
            out[i] = (max(r0, 0), max(c0, 0), min(r1, self.grid.height), min(c1, self.grid.width))
        return out

    def windows(self, size: int) -> list[Window]:
        """Windows of ``size`` px (at most the grid) that cover every mark: one centred on a small mark,
        a tiling of a large one; clipped to the grid by sliding them inside it."""
        h, w = min(size, self.grid.height), min(size, self.grid.width)
        found: list[Window] = []
        for r0, c0, r1, c1 in self.pixel_boxes():
            rows = _starts(r0, r1, h, self.grid.height)
            cols = _starts(c0, c1, w, self.grid.width)
            found += [Window(c, r, w, h) for r in rows for c in cols]
        unique = {(int(win.row_off), int(win.col_off)): win for win in found}
        return [unique[k] for k in sorted(unique)]

    def describe(self) -> dict:
        return {"path": self.path, "field": self.field, "changed": self.n_changed, "unchanged": self.n_unchanged}


def _read_layer(path: str, layer: str | None, field: str, option: str):
    """The marks' layer as a GeoDataFrame: one non-empty vector layer with the field ``field``."""
    import geopandas as gpd

    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise GeochangeError(f"{path}: no such file")
    layers = vector_layers(path)
    if not layers:
        raise GeochangeError(f"{path}: not a vector file OGR can read ({option} takes polygons or points "
                             f"with a {field!r} field)")
    data = [n for n in vector_layers(path, spatial_only=True) if n not in NON_DATA_LAYERS]
    if layer is None and len(data) > 1:
        raise GeochangeError(f"{path}: holds {len(data)} layers ({', '.join(data)}): name one with --label-layer")
    layer = layer if layer is not None else (data[0] if data else layers[0])
    if layer not in layers:
        raise GeochangeError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise GeochangeError(f"{path}: cannot read the marks ({first_line(exc)})") from None
    if len(gdf) == 0:
        raise GeochangeError(f"{path}: the layer holds no marks (draw a few changed and unchanged areas)")
    if field not in gdf.columns:
        fields = ", ".join(str(c) for c in gdf.columns if c != gdf.geometry.name) or "none"
        raise GeochangeError(f"{path}: no field {field!r} (fields: {fields}); give 1 for changed, 0 for "
                             f"unchanged in a field {field!r}, or name the field with --label-field")
    return gdf


def _starts(lo: int, hi: int, size: int, limit: int) -> list[int]:
    """Offsets of ``size``-long spans covering [lo, hi): centred on a short range, tiling a long one,
    each inside [0, limit)."""
    if hi - lo <= size:
        starts = [(lo + hi) // 2 - size // 2]
    else:
        n = -(-(hi - lo) // size)
        starts = [lo + round(i * (hi - lo - size) / (n - 1)) for i in range(n)] if n > 1 else [lo]
    return [min(max(s, 0), limit - size) for s in starts]


def _class_values(column, path: str, field: str) -> np.ndarray:
    """The field as 0/1 integers, or a one-line error naming what else it holds."""
    import pandas as pd

    numeric = pd.to_numeric(column, errors="coerce")
    bad = column[numeric.isna() | ~numeric.isin([0, 1])]
    if len(bad):
        shown = ", ".join(sorted({repr(v) if not pd.isna(v) else "empty" for v in bad.tolist()})[:5])
        raise GeochangeError(f"{path}: field {field!r} must be 1 (changed) or 0 (unchanged); "
                             f"{len(bad)} marks hold {shown}")
    return numeric.to_numpy().astype(np.int64)

