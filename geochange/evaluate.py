"""Score a change mask against ground truth (a raster or polygons), window by window.

``evaluate(pred, truth)`` walks the PRED mask in square windows and accumulates a
:class:`~geochange.metrics.ConfusionMatrix`, so rasters of any size work in bounded memory.

* PRED is a change mask as geochange writes it: 1 changed, 0 unchanged, 255 nodata. Pixels
  masked by the file itself (its nodata value, mask band or alpha) are left out too. Any other
  value stops the evaluation: the file is not a change mask.
* A TRUTH raster is brought onto PRED's grid with nearest-neighbour resampling; PRED pixels
  outside its footprint or on its nodata are left out. A truth pixel is "changed" when its value
  is in ``change_values`` when given, else when it is > 0 (so 0 = unchanged, and any positive
  class or 255-as-changed counts as change).
* A TRUTH vector (any OGR-readable file: GeoPackage, Shapefile, GeoJSON...; ``truth_layer`` picks
  the layer) holds the changed areas as polygons: a PRED pixel whose centre falls inside a
  polygon is changed, every other pixel is unchanged and valid. Geometries are reprojected to
  PRED's CRS and repaired (``shapely.make_valid``); only their polygonal parts count.
* When neither PRED nor a TRUTH raster has a CRS and both have the same size, they are compared
  pixel to pixel (benchmark masks such as OSCD's are not georeferenced).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.io.align import Grid, open_raster, read_valid_mask, require_crs, warp_to_grid
from geochange.io.labels import VectorMask, open_raster_or_vector
from geochange.metrics import ConfusionMatrix
from geochange.progress import task, warn

PRED_NODATA = 255


def evaluate(pred_path: str, truth_path: str, *, truth_layer: str | None = None,
             change_values: Sequence[int] | None = None, window_size: int = 1024) -> dict:
    """Compare the change mask ``pred_path`` with the ground truth ``truth_path``.

    ``truth_layer`` names the layer of a vector truth (and forces the truth to be read as a
    vector); ``change_values`` lists the truth raster values that mean "changed" (default: any
    value > 0); ``window_size`` is the side in pixels of the windows PRED is read in.

    Returns ``{"pred": pred_path, "truth": truth_path, "scores": ConfusionMatrix.scores()}``.
    Raises :class:`GeochangeError` on bad input.
    """
    if int(window_size) < 1:
        raise GeochangeError(f"window size must be a positive number of pixels, not {window_size}")
    window_size = int(window_size)
    change_values = None if change_values is None else list(change_values)
    with contextlib.ExitStack() as stack:
        pred = stack.enter_context(open_raster(pred_path))
        grid = Grid.of(pred)
        truth_ds = open_raster_or_vector(truth_path) if truth_layer is None else None
        if truth_ds is not None:
            stack.enter_context(truth_ds)
            truth = _RasterTruth(pred, pred_path, truth_ds, truth_path, change_values)
            if truth.ds is not truth_ds:
                stack.enter_context(truth.ds)  # the WarpedVRT
        else:
            if change_values is not None:
                raise GeochangeError(f"{truth_path}: change values apply to a truth raster, "
                                     "not to polygons (every polygon is change)")
            require_crs(pred, pred_path)
            truth = _VectorTruth(truth_path, truth_layer, grid)

        pred_declares_nodata = pred.nodata is not None
        cm = ConfusionMatrix()
        n_255 = 0
        windows = list(_windows(grid.width, grid.height, window_size))
        with task("evaluating", total=len(windows), unit="windows") as advance:
            for window in windows:
                values = pred.read(1, window=window)
                valid = read_valid_mask(pred, window, [1])
                is_255 = values == PRED_NODATA
                n_255 += int(np.count_nonzero(is_255 & valid))
                valid &= ~is_255
                _check_mask_values(values, valid, pred_path)
                changed, truth_valid = truth.read(window)
                valid &= truth_valid
                cm.update(values == 1, changed, valid)
                advance(1)

    scores = cm.scores()
    if scores["n_pixels"] == 0:
        raise GeochangeError(f"no valid pixels to compare between {pred_path} and {truth_path} "
                             "(all nodata in the prediction or outside/nodata in the truth)")
    if scores["tp"] + scores["fp"] == 0 and n_255 and not pred_declares_nodata:
        warn(f"{pred_path}: no pixel is 1 but {n_255} are 255, which count as nodata; "
             "if 255 means changed in this mask, rewrite it as 0/1 first")
    return {"pred": pred_path, "truth": truth_path, "scores": scores}


# --- windows and PRED checks -------------------------------------------------------------------

def _windows(width: int, height: int, size: int) -> Iterator[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def _check_mask_values(values: np.ndarray, valid: np.ndarray, path: str) -> None:
    """Refuse PRED when a valid pixel holds something else than 0 or 1."""
    bad = valid & (values != 0) & (values != 1)
    if bad.any():
        value = values[bad][0]
        value = value.item() if hasattr(value, "item") else value
        raise GeochangeError(f"{path}: not a change mask: found value {value} "
                             f"(expected 0 unchanged, 1 changed, {PRED_NODATA} nodata)")


# --- raster truth -----------------------------------------------------------------------------

def _georeferenced(ds: rasterio.io.DatasetReaderBase) -> bool:
    return ds.crs is not None


class _RasterTruth:
    """Truth raster read on PRED's grid (warped lazily when its grid differs)."""

    def __init__(self, pred: rasterio.io.DatasetReaderBase, pred_path: str,
                 ds: rasterio.io.DatasetReaderBase, path: str, change_values: list | None):
        self.change_values = change_values
        if not _georeferenced(pred) and not _georeferenced(ds):
            if (pred.width, pred.height) != (ds.width, ds.height):
                raise GeochangeError(
                    f"neither {pred_path} nor {path} is georeferenced and their sizes differ "
                    f"({pred.width}x{pred.height} vs {ds.width}x{ds.height}): cannot match pixels")
            self.ds = ds  # pixel to pixel
            return
        require_crs(pred, pred_path)
        require_crs(ds, path)
        grid = Grid.of(pred)
        _check_overlap(grid, ds, pred_path, path)
        self.ds = warp_to_grid(ds, grid, Resampling.nearest)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self.ds.read(1, window=window)
        valid = read_valid_mask(self.ds, window, [1])
        if self.change_values is not None:
            changed = np.isin(values, self.change_values)
        else:
            changed = values > 0
        return changed, valid


def _check_overlap(grid: Grid, ds: rasterio.io.DatasetReaderBase, pred_path: str, path: str) -> None:
    try:
        bounds = rasterio.warp.transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
    except Exception:  # an odd CRS pair: let the pixel count decide
        return
    if not _intersects(bounds, grid.bounds):
        raise GeochangeError(f"{pred_path} and {path} do not overlap (check their CRSs and extents)")


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    if not all(np.isfinite(v) for v in (*a, *b)):
        return True  # cannot tell: let the pixel count decide
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- vector truth -----------------------------------------------------------------------------

class _VectorTruth(VectorMask):
    """Changed-area polygons as truth: every pixel is valid, the burnt ones are changed."""

    def __init__(self, path: str, layer: str | None, grid: Grid) -> None:
        super().__init__(path, layer, grid, what="truth", layer_hint="name the truth layer to use")

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        burned = super().read(window)
        return burned.astype(bool), np.ones(burned.shape, dtype=bool)
