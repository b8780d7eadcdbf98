"""Score a change mask against ground truth (a raster or polygons), window by window.

``evaluate(pred, truth)`` walks the PRED mask in square windows and accumulates a
:class:`~geochange.metrics.ConfusionMatrix`, so rasters of any size work in bounded memory.

* PRED is a change mask as geochange writes it: 1 changed, 0 unchanged, 255 nodata. Pixels
  masked by the file itself (its nodata value, mask band or alpha) are left out too. Any other
  value stops the evaluation: the file is not a change mask.
* A TRUTH raster is brought onto PRED's grid with nearest-neighbour resampling; PRED pixels
  outside its footprint or on its nodata (its nodata value, mask band or alpha) are left out, and so
  are the pixels whose truth value is one of ``ignore_values`` (sparse truth: e.g. 255 where nobody
  labelled). A truth pixel is "changed" when its value is in ``change_values`` when given, else when
  it is > 0 (so 0 = unchanged, and any positive class or 255-as-changed counts as change).
  When more than :data:`SPARSE_SHARE` of the scored truth is one value and the truth also holds a
  value that looks like "unlabelled" (255, the type's largest value, a negative one), a warning
  suggests ``--ignore-value``: such a value counted as change (or no change) would make the scores
  meaningless.
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
#: the share of the scored truth one value must exceed for the "is it unlabelled?" hint
SPARSE_SHARE = 0.95
#: the truth values are tallied (for that hint) while there are at most this many distinct ones
MAX_TALLIED = 64


def evaluate(pred_path: str, truth_path: str, *, truth_layer: str | None = None,
             change_values: Sequence[int] | None = None, ignore_values: Sequence[float] | None = None,
             window_size: int = 1024) -> dict:
    """Compare the change mask ``pred_path`` with the ground truth ``truth_path``.

    ``truth_layer`` names the layer of a vector truth (and forces the truth to be read as a
    vector); ``change_values`` lists the truth raster values that mean "changed" (default: any
    value > 0); ``ignore_values`` the truth raster values that are not scored (unlabelled pixels of
    a sparse truth), besides the truth's nodata; ``window_size`` is the side in pixels of the
    windows PRED is read in.

    Returns ``{"pred": pred_path, "truth": truth_path, "scores": ConfusionMatrix.scores()}``, with
    ``"ignored": {"values": [...], "pixels": n}`` when ``ignore_values`` are given.
    Raises :class:`GeochangeError` on bad input.
    """
    if int(window_size) < 1:
        raise GeochangeError(f"window size must be a positive number of pixels, not {window_size}")
    window_size = int(window_size)
    change_values = None if change_values is None else list(change_values)
    ignore_values = sorted(set(ignore_values)) if ignore_values else []
    both = set(ignore_values) & set(change_values or [])
    if both:
        raise GeochangeError(f"truth value {_fmt(min(both))} is given both as a change value and as one to ignore")
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
            if ignore_values:
                raise GeochangeError(f"{truth_path}: values to ignore apply to a truth raster, not to "
                                     "polygons (pixels outside the polygons are unchanged)")
            require_crs(pred, pred_path)
            truth = _VectorTruth(truth_path, truth_layer, grid)

        pred_declares_nodata = pred.nodata is not None
        cm = ConfusionMatrix()
        n_255 = n_ignored = 0
        tally = _Tally()
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
                if truth.values is not None:
                    if ignore_values:
                        ignored = valid & np.isin(truth.values, ignore_values)
                        n_ignored += int(np.count_nonzero(ignored))
                        valid &= ~ignored
                    tally.add(truth.values[valid])
                cm.update(values == 1, changed, valid)
                advance(1)
        truth_dtype = truth.ds.dtypes[0] if truth.values is not None else None

    scores = cm.scores()
    if scores["n_pixels"] == 0:
        ignoring = f" or one of the values ignored ({', '.join(map(_fmt, ignore_values))})" if ignore_values else ""
        raise GeochangeError(f"no valid pixels to compare between {pred_path} and {truth_path} "
                             f"(all nodata in the prediction or outside/nodata in the truth{ignoring})")
    if scores["tp"] + scores["fp"] == 0 and n_255 and not pred_declares_nodata:
        warn(f"{pred_path}: no pixel is 1 but {n_255} are 255, which count as nodata; "
             "if 255 means changed in this mask, rewrite it as 0/1 first")
    hint = sparse_truth_hint(tally.counts, truth_dtype, change_values)
    if hint:
        warn(f"{truth_path}: {hint}")
    result = {"pred": pred_path, "truth": truth_path, "scores": scores}
    if ignore_values:
        result["ignored"] = {"values": ignore_values, "pixels": n_ignored}
    return result


def sparse_truth_hint(counts: dict | None, dtype: str | None, change_values: list | None) -> str | None:
    """The warning for a truth that seems to be sparse but is scored whole: more than
    :data:`SPARSE_SHARE` of the scored pixels hold one value and another value looks like "unlabelled"
    (255, the type's largest value, a negative one) and is no change value. None when all is well."""
    if not counts or len(counts) < 3:
        return None
    total = sum(counts.values())
    top, n_top = max(counts.items(), key=lambda kv: kv[1])
    if n_top <= SPARSE_SHARE * total:
        return None
    largest = np.iinfo(dtype).max if dtype and np.issubdtype(np.dtype(dtype), np.integer) else None
    suspects = [v for v in sorted(counts) if (v < 0 or v >= 255 or v == largest) and v not in (change_values or [])]
    if not suspects:
        return None
    others = ", ".join(_fmt(v) for v in sorted(counts) if v != top)
    values = ",".join(_fmt(v) for v in suspects)
    return (f"{100 * n_top / total:.1f} % of the scored truth pixels are {_fmt(top)}, and the truth also holds "
            f"{others}: if {' or '.join(_fmt(v) for v in suspects)} marks unlabelled pixels, pass "
            f"--ignore-value {values} (they are scored as {_as_what(suspects, change_values)} now)")


def _as_what(values: list, change_values: list | None) -> str:
    changed = [np.isin(v, change_values).item() if change_values is not None else v > 0 for v in values]
    return "changed" if all(changed) else "unchanged" if not any(changed) else "changed or unchanged"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class _Tally:
    """How many scored pixels hold each truth value (up to :data:`MAX_TALLIED` distinct ones)."""

    def __init__(self) -> None:
        self.counts: dict | None = {}

    def add(self, values: np.ndarray) -> None:
        if self.counts is None or values.size == 0:
            return
        for v, n in zip(*np.unique(values, return_counts=True)):
            key = v.item()
            self.counts[key] = self.counts.get(key, 0) + int(n)
        if len(self.counts) > MAX_TALLIED:
            self.counts = None   # a continuous truth: not a labelled one


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

    values: np.ndarray | None = None   # the truth values of the window last read

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self.values = self.ds.read(1, window=window)
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

    values = None   # polygons: no values to ignore or tally

    def __init__(self, path: str, layer: str | None, grid: Grid) -> None:
        super().__init__(path, layer, grid, what="truth", layer_hint="name the truth layer to use")

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        burned = super().read(window)
        return burned.astype(bool), np.ones(burned.shape, dtype=bool)
