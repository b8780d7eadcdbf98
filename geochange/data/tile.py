"""Cut two dates of any two rasters into co-registered patch pairs (the ``geochange tile`` command).

The pair is opened with :meth:`RasterPair.open`, exactly as ``detect`` opens it: AFTER is warped
lazily onto BEFORE's grid and both are cut to their overlap, so chips of a pair in different CRSs
or resolutions line up pixel for pixel. Chips are read window by window, raw (not normalised), and
written with :class:`~geochange.data.patches.PatchWriter`.

Splits are spatial. The pair grid is cut into square blocks of ``block`` x ``block`` chips; each
block goes whole to train, val or test (a seeded permutation of the blocks, apportioned by the
``split`` fractions). Chips are laid out inside each block (stride ``size - overlap`` from the
block's corner, the last chip moved back so it ends at the block's edge), so no chip crosses a block
border: chips of different blocks never share a pixel, whatever the overlap, and no chip is dropped
for straddling. A remainder at the right or bottom edge narrower than one chip joins the block
before it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.windows import Window

from geochange.data.patches import SPLITS, UNKNOWN, PatchWriter, check_out_dir
from geochange.errors import GeochangeError
from geochange.io.align import Grid, open_raster, read_valid_mask, require_crs, warp_to_grid
from geochange.io.labels import VectorMask, open_raster_or_vector, window_bounds
from geochange.io.marks import FIELD, Marks, has_field
from geochange.io.pair import RasterPair
from geochange.progress import task

# pixel types kept as they are; others are stored as float32 (int8 as int16, to hold label 255)
KEPT_DTYPES = ("uint8", "uint16", "int16", "float32")


@dataclass(frozen=True)
class Chip:
    """One planned chip: its window on the pair grid, its split and the block it lies in."""

    row_off: int
    col_off: int
    split: str
    block: int


def tile(before: str, after: str, out: str | Path, *, labels: str | None = None,
         label_layer: str | None = None, size: int = 256, overlap: int = 0,
         bands: list[int] | None = None, split: Sequence[float] = (0.8, 0.1, 0.1), block: int = 8,
         seed: int = 0, min_valid: float = 0.99, pair_name: str | None = None,
         resampling: str = "bilinear", shard_size: int = 2048, overwrite: bool = False) -> dict:
    """Write the chip pairs of BEFORE and AFTER (and their labels) as a patch dataset in ``out``.

    ``labels`` is a raster (brought onto the pair grid with nearest-neighbour resampling; > 0 is
    changed, 0 unchanged, its nodata and pixels outside it unknown) or a polygon layer of changed
    areas (``label_layer`` names the layer; a pixel whose centre is inside a polygon is changed,
    any other unchanged). Pixels where either date has no data are unknown (255) in every case.

    ``size`` and ``overlap`` are in pixels of the pair grid; ``split`` holds the train, val and test
    fractions of the ``block`` x ``block``-chip blocks, drawn with ``seed``. Chips with less than
    ``min_valid`` of their pixels valid in both dates are skipped (an all-nodata chip always is).
    ``pair_name`` fills the index's ``pair`` column (default ``"<before stem>-><after stem>"``).

    Returns a summary (counts per split and label, skipped chips, timings); prints nothing.
    Raises :class:`GeochangeError` on bad input.
    """
    t0 = time.perf_counter()
    size, overlap, block = int(size), int(overlap), int(block)
    if size < 1:
        raise GeochangeError(f"--size must be a positive number of pixels, not {size}")
    if not 0 <= overlap < size:
        raise GeochangeError(f"--overlap must be at least 0 and less than --size ({size}), not {overlap}")
    if block < 1:
        raise GeochangeError(f"--block must be at least 1 chip, not {block}")
    if not 0.0 <= float(min_valid) <= 1.0:
        raise GeochangeError(f"--min-valid must be between 0 and 1, not {min_valid}")
    fractions = split_fractions(split)
    try:
        resampling_enum = Resampling[resampling] if isinstance(resampling, str) else Resampling(resampling)
    except (KeyError, ValueError):
        raise GeochangeError(f"unknown resampling {resampling!r} (e.g. nearest, bilinear, cubic)") from None
    out = Path(out)
    check_out_dir(out, overwrite)  # fail before any reading

    with contextlib.ExitStack() as stack:
        pair = stack.enter_context(RasterPair.open(before, after, bands=bands, resampling=resampling_enum))
        height, width = pair.shape
        if size > height or size > width:
            raise GeochangeError(f"--size {size} is larger than the overlap of the two dates "
                                 f"({width} x {height} pixels of BEFORE's grid); choose a smaller size")
        label_source = None
        if labels is not None:
            label_source = open_labels(str(labels), label_layer, pair.grid)
            stack.callback(label_source.close)
        chips, block_splits, block_px = plan_chips(height, width, size, overlap, block, fractions, seed)
        dtype = storage_dtype(before, after)
        name = pair_name or f"{Path(str(before)).stem}->{Path(str(after)).stem}"
        crs = pair.grid.crs.to_string()
        source = {"name": name, **pair.describe(), "labels": None if labels is None else str(labels),
                  "label_layer": label_layer, "crs": crs,
                  "grid": {"transform": list(pair.grid.transform)[:6], "width": width, "height": height}}
        params = {"size": size, "overlap": overlap, "stride": size - overlap, "block": block,
                  "block_px": block_px, "split": dict(zip(SPLITS, fractions)), "seed": seed,
                  "min_valid": float(min_valid), "resampling": resampling_enum.name,
                  "bands": bands, "labels": None if labels is None else str(labels), "label_layer": label_layer}
        writer = PatchWriter(out, size, pair.count, dtype, shard_size, overwrite=overwrite,
                             band_names=[str(b) for b in pair.bands_before], sources=[source], params=params)
        skipped = 0
        try:
            with task("tiling", total=len(chips), unit="chips") as advance:
                for chip in chips:
                    window = Window(chip.col_off, chip.row_off, size, size)
                    wp = pair.read_raw(window)
                    valid_fraction = float(wp.valid.mean())
                    if valid_fraction == 0.0 or valid_fraction < min_valid:
                        skipped += 1
                        advance(1)
                        continue
                    label = None
                    if label_source is not None:
                        label = label_source.read(window)
                        label[~wp.valid] = UNKNOWN
                    minx, miny, maxx, maxy = window_bounds(window, pair.grid.transform)
                    writer.add(wp.before, wp.after, label, {
                        "split": chip.split, "pair": name, "row_off": chip.row_off, "col_off": chip.col_off,
                        "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "crs": crs,
                        "valid_fraction": valid_fraction})
                    advance(1)
            if writer.count == 0:
                raise GeochangeError(f"no chip of {size} px has {100 * min_valid:g} % of its pixels valid "
                                     "in both dates; lower --min-valid or --size")
            info = writer.close()
        except BaseException:
            writer.abort()
            raise

    blocks = {s: int(np.count_nonzero(block_splits == s)) for s in SPLITS}
    notes = []
    empty = [s for s, f in zip(SPLITS, fractions) if f > 0 and info["counts"][s] == 0]
    if empty:
        notes.append(f"no patch in {' and '.join(empty)}: the pair holds {len(block_splits)} block(s) of "
                     f"{block_px} px; a smaller --block gives more blocks to share out")
    return {
        "out": str(out),
        "patches": info["counts"]["total"],
        "splits": {s: info["counts"][s] for s in SPLITS},
        "labels": info["labels"],
        "chips_planned": len(chips),
        "skipped_nodata": skipped,
        "blocks": blocks,
        "size": size, "overlap": overlap, "block_px": block_px,
        "dtype": info["dtype"], "bands": info["bands"], "shards": info["shards"],
        "crs": crs, "grid": {"width": width, "height": height},
        "seconds": round(time.perf_counter() - t0, 3),
        "notes": notes,
    }


# --- the chip plan ------------------------------------------------------------------------------

def split_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    """Train, val and test fractions, normalised to sum to 1."""
    values = [float(v) for v in split]
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise GeochangeError(f"--split needs three fractions >= 0 for train, val and test, e.g. 0.8,0.1,0.1 "
                             f"(got {','.join(map(str, split))})")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def plan_chips(height: int, width: int, size: int, overlap: int, block: int,
               fractions: Sequence[float], seed: int) -> tuple[list[Chip], np.ndarray, int]:
    """The chips of a ``height`` x ``width`` grid, each inside one block, with the blocks' splits.

    Returns the chips in row-major order of their windows, the split of each block (row-major)
    and the block side in pixels (``block`` chips at the stride, overlap included).
    """
    stride = size - overlap
    block_px = (block - 1) * stride + size
    row_edges = _block_edges(height, block_px, size)
    col_edges = _block_edges(width, block_px, size)
    n_cols = len(col_edges) - 1
    block_splits = assign_splits((len(row_edges) - 1) * n_cols, fractions, seed)
    chips = []
    for bi in range(len(row_edges) - 1):
        rows = _offsets(row_edges[bi], row_edges[bi + 1], size, stride)
        for bj in range(n_cols):
            b = bi * n_cols + bj
            for c in _offsets(col_edges[bj], col_edges[bj + 1], size, stride):
                chips.extend(Chip(r, c, str(block_splits[b]), b) for r in rows)
    chips.sort(key=lambda ch: (ch.row_off, ch.col_off))
    return chips, block_splits, block_px


def _block_edges(n: int, block_px: int, size: int) -> list[int]:
    """Block borders along one axis; a last block narrower than one chip joins the one before."""
    edges = list(range(0, n, block_px)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < size:
        del edges[-2]
    return edges


def _offsets(start: int, stop: int, size: int, stride: int) -> list[int]:
    """Chip offsets inside ``[start, stop)``: every ``stride``, the last moved back to end at ``stop``."""
    if stop - start < size:
        return []
    offsets = list(range(start, stop - size + 1, stride))
    if offsets[-1] + size < stop:
        offsets.append(stop - size)
    return offsets


def assign_splits(n_blocks: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """The split of each of ``n_blocks`` blocks: a seeded permutation cut by the fractions.

    Counts are apportioned by largest remainder; when there are enough blocks, every split with a
    fraction above zero gets at least one block (taken from the largest).
    """
    fractions = np.asarray(fractions, float)
    exact = fractions * n_blocks
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: n_blocks - counts.sum()]:
        counts[k] += 1
    wanted = np.flatnonzero(fractions > 0)
    if n_blocks >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] += 1
    order = np.random.default_rng(seed).permutation(n_blocks)
    out = np.empty(n_blocks, dtype=object)
    out[order] = np.repeat(np.array(SPLITS, dtype=object), counts)
    return out


def storage_dtype(before: str, after: str) -> str:
    """One pixel type holding both dates exactly (see :data:`KEPT_DTYPES`)."""
    types = []
    for path in (before, after):
        with open_raster(str(path)) as ds:
            types.extend(ds.dtypes)
    dtype = np.result_type(*[np.dtype(t) for t in types])
    if dtype.name in KEPT_DTYPES:
        return dtype.name
    return "int16" if dtype.name == "int8" else "float32"


# --- labels -------------------------------------------------------------------------------------

def open_labels(path: str, layer: str | None, grid: Grid):
    """The label source of ``path``: a raster unless it only opens as a vector (or ``layer`` is given).

    A vector layer with a ``change`` field holds marks (``detect --labels``' format: 1 changed, 0
    unchanged, unknown elsewhere); without one its polygons are the changed areas and the rest is unchanged.
    """
    ds = None if layer is not None else open_raster_or_vector(path)
    if ds is None:
        if has_field(path, FIELD, layer):
            return Marks(path, grid, FIELD, layer, outside="drop", both_classes=False)
        return VectorMask(path, layer, grid, what="label", allow_empty=True,
                          layer_hint="name the label layer with --label-layer")
    return RasterLabels(path, ds, grid)


class RasterLabels:
    """A label raster on the pair grid (nearest neighbour): > 0 changed, nodata and outside unknown."""

    def __init__(self, path: str, ds: rasterio.io.DatasetReader, grid: Grid) -> None:
        try:
            require_crs(ds, path)
            bounds = rasterio.warp.transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
            gb = grid.bounds
            if all(np.isfinite(bounds)) and not (bounds[0] < gb[2] and gb[0] < bounds[2]
                                                 and bounds[1] < gb[3] and gb[1] < bounds[3]):
                raise GeochangeError(f"{path}: the labels do not overlap the two dates (check its CRS and extent)")
            self.view = warp_to_grid(ds, grid, Resampling.nearest)
        except BaseException:
            ds.close()
            raise
        self.ds = ds

    def read(self, window: Window) -> np.ndarray:
        values = self.view.read(1, window=window)
        valid = read_valid_mask(self.view, window, [1])
        if values.dtype.kind == "f":
            valid &= np.isfinite(values)
        label = (values > 0).astype(np.uint8)
        label[~valid] = UNKNOWN
        return label

    def close(self) -> None:
        if self.view is not self.ds:
            self.view.close()
        self.ds.close()


