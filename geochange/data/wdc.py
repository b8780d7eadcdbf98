"""Build a building-change patch dataset from a city's multi-year imagery and footprints (``build-wdc``).

Hamaguchi et al. 2019, appendix A (the WDC dataset), as a general tool driven by a manifest
(:mod:`geochange.data.manifest`):

1. **Annotation** (A.1): for each pair of footprint years in ``pairs``, every building's best IoU with
   the other year; IoU < 0.01 is ``new`` or ``destroyed`` (:mod:`geochange.data.footprints`). Written
   as ``changes_<y0>_<y1>.gpkg`` in the output folder.
2. **Patches** (A.2, A.3), ``patch`` px square (128 by default: the input of Enc-VGG, Table 6), cut
   from the image pairs on the earlier image's grid (the later one warped onto it, as ``detect`` does):
   - ``noisy_negative``: random crops from every image pair in ``noisy_pairs`` (consecutive years by
     default: "image pairs close to each other in their acquisition year"), with the ratio of patches
     containing and not containing a building of ``filter_year`` held at 9:1 (A.3). Label unknown
     (255): they are unlabelled training data for representation learning (Table 1: 250,000).
   - ``positive``: one patch per annotated change (new or destroyed building) that holds the whole
     building when it fits in a patch (centred on it, moved inside its block where it can, and
     only as far over the block's border as the building itself reaches); label 1 on the changed
     buildings' pixels, 0 elsewhere. A building larger than the patch gets a patch centred on it.
   - ``negative``: patches centred on buildings that did not change, with no change within
     ``margin`` pixels of the patch; label 0 everywhere. As many as the positives by default (the
     paper's test set is balanced, 1,934 + 1,934).
3. **Splits** are spatial and deterministic, by building first, then by block: the working CRS is
   cut into square blocks of ``block`` patches (at the coarsest pixel size of the pairs), and a
   seeded permutation of the blocks is cut by the ``split`` fractions (the rule of ``geochange
   tile``). A changed building belongs to the split of the block holding its centre, in every
   pair, and so does its positive patch, which may reach over the block's border to hold it. No
   patch of another split touches a changed building or a positive's ground: a positive that would
   is moved (to where it still holds its building) or dropped; a negative or noisy patch that would
   is dropped. Negatives and noisy negatives lie inside one block. So patches of different splits
   never share a square metre, and no changed building is seen in two splits. Noisy negatives
   come from train blocks only, so nothing seen in representation learning lies in val or test.

The raster work (windowed reads through :class:`~geochange.io.pair.RasterPair`, label rasterising)
runs in worker processes of a Dask distributed cluster: a local one by default (``workers``), or the
scheduler at ``scheduler``; ``workers=0`` runs it in this process. The client plans every window
(from the seed alone), workers return the patch arrays of one chunk of windows, and the client writes
them, in plan order, with the one :class:`~geochange.data.patches.PatchWriter`: the dataset is the
same, row for row, whatever the number of workers, and it is published atomically.

Deviations from appendix A: the paper resamples every year to 16 cm; here the patch grid is the
earlier image's own grid (point the manifest at a resampling VRT or a WMS description at the wanted
resolution, as data_manifests/wdc.yaml does). The paper does not say how positives and negatives
are placed or split; here they are placed on buildings and split by building, then spatial block. Patches whose
pixels are not valid in both dates (``min_valid``) are skipped and replaced by further candidates.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from geochange.data.footprints import (THRESHOLD, Changes, Footprints, annotate, one_line, read_footprints,
                                      write_changes)
from geochange.data.manifest import Manifest, load_manifest, verify_local_checksums
from geochange.data.patches import SPLITS, UNKNOWN, PatchWriter, check_out_dir
from geochange.data.tile import KEPT_DTYPES, assign_splits, split_fractions, storage_dtype
from geochange.errors import GeochangeError
from geochange.io.atomic import temp_path, write_text
from geochange.io.labels import window_bounds
from geochange.io.pair import RasterPair
from geochange.progress import say, task

KINDS = ("noisy_negative", "positive", "negative")
EXTRA_COLUMNS = ("kind", "block", "change_id", "has_building")


@dataclass
class WdcOptions:
    """What ``build-wdc`` cuts, and how; defaults follow Hamaguchi et al. 2019 where it says."""

    patch: int = 128                      # px; Enc-VGG input, Table 6
    noisy: int = 250_000                  # noisy negatives in all; Table 1 (WDC, training)
    building_share: float = 0.9           # noisy patches containing buildings : not = 9 : 1; A.3
    positives: int | None = None          # None: one per annotated change
    negatives: int | None = None          # None: as many as the positives written (Table 1 test: 1934 + 1934)
    split: Sequence[float] = (0.7, 0.1, 0.2)   # train, val, test fractions of the spatial blocks (ours)
    block: int = 8                        # split block side, in patches (ours)
    seed: int = 0
    margin: int | None = None             # px around a negative free of change; None: patch // 2 (ours)
    threshold: float = THRESHOLD          # IoU below it is a change; A.1
    min_valid: float = 0.99               # share of pixels valid in both dates for a patch to be kept
    bands: list[int] | None = None
    resampling: str = "bilinear"          # of the later image onto the earlier one's grid
    shard_size: int = 2048
    chunk: int = 64                       # patches per unit of work sent to a worker
    workers: int | None = None            # local cluster processes; None: min(4, CPUs); 0: this process
    scheduler: str | None = None          # address of a running Dask scheduler (workers must see the files)
    attempts: int = 50                    # noisy candidates drawn per wanted patch before giving up
    overwrite: bool = False


@dataclass(frozen=True)
class PairSpec:
    """What a worker needs to open one image pair (hashable: the key of its per-process cache)."""

    before: str
    after: str
    bands: tuple[int, ...] | None
    resampling: str


@dataclass
class PairPlan:
    """One image pair on the client: its grid, the blocks' windows on it, and its annotation."""

    name: str                   # "1999-2005"
    years: tuple[int, int]
    spec: PairSpec
    transform: Affine
    shape: tuple[int, int]
    crs: str
    describe: dict
    blocks: np.ndarray | None = None      # (n_blocks, 4): r0, r1, c0, c1, each block's inner pixel window
    block_side: float = 0.0               # the split blocks (shared by all pairs): side in CRS units,
    block_origin: tuple[float, float] = (0.0, 0.0)   # top-left corner,
    block_cols: int = 1                   # blocks per row
    changes: Changes | None = None
    later: Footprints | None = None       # the later year's footprints (negatives centre on them)


@dataclass
class Candidates:
    """Planned patches of one kind: windows on a pair's grid, their block and index fields."""

    pair: np.ndarray
    row: np.ndarray
    col: np.ndarray
    block: np.ndarray
    change_id: np.ndarray
    has_building: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def take(self, idx) -> "Candidates":
        return Candidates(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @classmethod
    def concat(cls, parts: list["Candidates"]) -> "Candidates":
        if not parts:
            return cls(*(np.zeros(0, t) for t in (np.int64, np.int64, np.int64, np.int64, object, np.int8)))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


def build_wdc(manifest: str | Path | Manifest, out: str | Path, *, cache: str | Path | None = None,
              download: bool = False, options: WdcOptions | Mapping | None = None) -> dict:
    """Annotate the manifest's footprint pairs and write the patch dataset into ``out``; return the summary.

    ``options``: a :class:`WdcOptions` is used as it is; a mapping (or None) names the options to
    set on top of the manifest's ``options`` (its defaults for this city), which are on top of
    :class:`WdcOptions`' defaults (what the command line does with the flags given). ``cache`` holds
    downloaded files (``download`` fetches missing ones first). Returns (and writes as
    ``summary.json`` in ``out``) buildings per year, changes per pair, patches per split and kind.
    Raises :class:`GeochangeError` on bad input.
    """
    t0 = time.perf_counter()
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    opts = resolve_options(m, options)
    _check_options(opts)
    out = Path(out)
    check_out_dir(out, opts.overwrite)
    cache_dir = Path(cache) if cache is not None else default_cache()
    if m.remote_entries():
        if download:
            from geochange.data.download import download_manifest

            download_manifest(m, cache_dir)
        missing = [e for e in m.remote_entries() if not Path(e.path(cache_dir)).is_file()]
        if missing:
            raise GeochangeError(f"{missing[0].label}: {missing[0].url} is not in the cache {cache_dir}; "
                                 "run with --download")
    verify_local_checksums(m)
    if not m.pairs and not m.noisy_pairs:
        raise GeochangeError(f"{m.path.name}: no pairs and no noisy_pairs: nothing to build")

    # -- pairs, working CRS, footprints, annotation ------------------------------------------
    plans = _open_pairs(m, cache_dir, opts)
    crs = next(iter(plans.values())).crs
    say(f"{len(plans)} image pair(s) in {crs}")
    years = sorted({y for p in m.pairs for y in p} | ({m.filter_year} if m.filter_year else set()))
    footprints: dict[int, Footprints] = {}
    for y in years:
        e = m.footprints[y]
        footprints[y] = read_footprints(e.path(cache_dir), y, crs, layer=e.layer, id_field=e.id_field,
                                        year_field=e.year_field, source_crs=e.crs, label=e.label)
    for y0, y1 in m.pairs:
        plans[(y0, y1)].changes = annotate(footprints[y0], footprints[y1], opts.threshold)

    # -- blocks and splits ---------------------------------------------------------------------
    fractions = split_fractions(opts.split)
    block_m, origin, n_rows, n_cols = _block_grid(plans.values(), opts.patch, opts.block)
    block_splits = assign_splits(n_rows * n_cols, fractions, opts.seed)
    for (y0, y1), p in plans.items():
        p.blocks = _block_windows(p, origin, block_m, n_rows, n_cols)
        p.block_side, p.block_origin, p.block_cols = block_m, origin, n_cols
        p.later = footprints.get(y1) if p.changes is not None else None

    # -- the dataset ---------------------------------------------------------------------------
    pair_list = list(plans.values())
    bands = {len(p.describe["bands_before"]) for p in pair_list}
    if len(bands) > 1:
        raise GeochangeError(f"the image pairs compare different numbers of bands ({sorted(bands)}); "
                             "give bands: in the manifest or --bands")
    dtype = _common_dtype([storage_dtype(p.spec.before, p.spec.after) for p in pair_list])
    rng = np.random.default_rng(opts.seed)
    margin = opts.patch // 2 if opts.margin is None else int(opts.margin)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()}
    params.update(margin=margin, block_m=block_m, block_origin=list(origin), blocks=[n_rows, n_cols],
                  split=dict(zip(SPLITS, fractions)), manifest=m.describe())
    sources = [{"name": p.name, **p.describe, "crs": p.crs,
                "grid": {"transform": list(p.transform)[:6], "width": p.shape[1], "height": p.shape[0]}}
               for p in pair_list]
    writer = PatchWriter(out, opts.patch, bands.pop(), dtype, opts.shard_size, overwrite=opts.overwrite,
                         band_names=[str(b) for b in pair_list[0].describe["bands_before"]], sources=sources,
                         params=params, extra_columns=EXTRA_COLUMNS)
    staging = temp_path(writer.out_dir)   # PatchWriter's folder: published with the patches, atomically
    try:
        for y0, y1 in m.pairs:
            write_changes(plans[(y0, y1)].changes, staging)
        filter_fp = footprints[m.filter_year] if m.filter_year else None
        stats = {}
        with _executor(opts.workers, opts.scheduler) as ex:
            sink = _Sink(writer, pair_list, block_splits, dtype, opts)
            pos, barriers, placed = _positive_candidates(pair_list, block_splits, opts, rng,
                                                         _changed_buildings(pair_list, block_splits))
            stats["positive"] = {**_fill_list(ex, sink, pos, opts.positives, "positive", "Positive patches"), **placed}
            neg = _negative_candidates(pair_list, block_splits, opts, margin, rng, barriers)
            n_neg = stats["positive"]["written"] if opts.negatives is None else opts.negatives
            stats["negative"] = _fill_list(ex, sink, neg, n_neg, "negative", "Negative patches")
            noisy_pairs = [pair_list.index(plans[p]) for p in m.noisy_pairs]
            stats["noisy_negative"] = _fill_noisy(ex, sink, noisy_pairs, block_splits, filter_fp, opts, rng,
                                                  barriers)
            stats["kinds"] = sink.kind_counts
        if writer.count == 0:
            raise GeochangeError(f"no patch of {opts.patch} px could be cut: the pairs hold no valid window "
                                 "inside a split block (lower --patch or --block, or check the imagery)")
        summary = _summary(m, out, footprints, plans, writer, stats, opts, dtype, crs, block_m,
                           block_splits, time.perf_counter() - t0)
        write_text(staging / "summary.json", _json(summary))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        _close_cached_pairs()
    return summary


def resolve_options(m: Manifest, options: WdcOptions | Mapping | None = None) -> WdcOptions:
    """``options`` as they are, or the given ones over the manifest's ``options`` over the defaults."""
    if isinstance(options, WdcOptions):
        return options
    given = {**m.options, **dict(options or {})}
    unknown = sorted(set(given) - set(WdcOptions.__dataclass_fields__))
    if unknown:
        raise GeochangeError(f"unknown build-wdc option {unknown[0]!r} (known: {', '.join(WdcOptions.__dataclass_fields__)})")
    if given.get("split") is not None:
        given["split"] = tuple(given["split"])
    return WdcOptions(**given)


def default_cache() -> Path:
    """``$GEOCHANGE_CACHE``, else ``$XDG_CACHE_HOME/geochange``, else ``~/.cache/geochange``."""
    if os.environ.get("GEOCHANGE_CACHE"):
        return Path(os.environ["GEOCHANGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geochange"


# --- pairs and blocks ---------------------------------------------------------------------------

def _open_pairs(m: Manifest, cache: Path, opts: WdcOptions) -> dict[tuple[int, int], PairPlan]:
    """Open every image pair once on the client: grids, descriptions, CRS checks."""
    import pyproj

    plans: dict[tuple[int, int], PairPlan] = {}
    working = pyproj.CRS(m.crs) if m.crs else None
    for y0, y1 in dict.fromkeys([*m.pairs, *m.noisy_pairs]):
        e0, e1 = m.imagery[y0], m.imagery[y1]
        bands = tuple(opts.bands or e0.bands or ()) or None
        spec = PairSpec(e0.path(cache), e1.path(cache), bands, opts.resampling)
        with RasterPair.open(spec.before, spec.after, bands=list(bands) if bands else None,
                             resampling=Resampling[opts.resampling]) as pair:
            grid, describe = pair.grid, pair.describe()
            for e, ds in ((e0, pair._before), (e1, pair._after)):
                if e.crs and not pyproj.CRS(ds.crs).equals(pyproj.CRS(e.crs)):
                    raise GeochangeError(f"{e.label}: the image is in {ds.crs.to_string()}, the manifest says {e.crs}")
        t = grid.transform
        if t.b != 0 or t.d != 0 or t.e >= 0:
            raise GeochangeError(f"imagery.{y0}: a rotated or south-up grid; warp it north-up first (gdalwarp)")
        gcrs = pyproj.CRS(grid.crs)
        if working is None:
            working = gcrs
        elif not gcrs.equals(working):
            raise GeochangeError(f"imagery.{y0} is in {grid.crs.to_string()}, not the working CRS "
                                 f"{working.to_string()}: every pair's earlier image must share it (the split "
                                 "blocks are drawn in it); reproject it, e.g. with a gdalwarp VRT")
        describe["before"], describe["after"] = one_line(spec.before, 200), one_line(spec.after, 200)
        epsg = gcrs.to_epsg()
        plans[(y0, y1)] = PairPlan(f"{y0}-{y1}", (y0, y1), spec, t, (grid.height, grid.width),
                                   f"EPSG:{epsg}" if epsg else gcrs.to_wkt(), describe)
    return plans


def _block_grid(plans, patch: int, block: int) -> tuple[float, tuple[float, float], int, int]:
    """Side (CRS units), origin (left, top) and rows x cols of the split blocks over all pairs."""
    plans = list(plans)
    side = block * patch * max(max(abs(p.transform.a), abs(p.transform.e)) for p in plans)
    lefts, rights, bottoms, tops = [], [], [], []
    for p in plans:
        t, (h, w) = p.transform, p.shape
        lefts.append(t.c)
        rights.append(t.c + w * t.a)
        tops.append(t.f)
        bottoms.append(t.f + h * t.e)
    left, top = min(lefts), max(tops)
    n_cols = max(1, math.ceil((max(rights) - left) / side - 1e-9))
    n_rows = max(1, math.ceil((top - min(bottoms)) / side - 1e-9))
    return float(side), (float(left), float(top)), n_rows, n_cols


def _block_windows(p: PairPlan, origin: tuple[float, float], side: float, n_rows: int, n_cols: int) -> np.ndarray:
    """Each block's inner pixel window on a pair's grid (whole pixels inside the block): r0, r1, c0, c1."""
    t, (h, w) = p.transform, p.shape
    bi, bj = np.divmod(np.arange(n_rows * n_cols), n_cols)
    bx0, bx1 = origin[0] + bj * side, origin[0] + (bj + 1) * side
    by1, by0 = origin[1] - bi * side, origin[1] - (bi + 1) * side
    c0 = np.clip(np.ceil((bx0 - t.c) / t.a - 1e-6), 0, w)
    c1 = np.clip(np.floor((bx1 - t.c) / t.a + 1e-6), 0, w)
    r0 = np.clip(np.ceil((t.f - by1) / -t.e - 1e-6), 0, h)
    r1 = np.clip(np.floor((t.f - by0) / -t.e + 1e-6), 0, h)
    return np.stack([r0, r1, c0, c1], axis=1).astype(np.int64)


def _blocks_of(x: np.ndarray, y: np.ndarray, p: PairPlan) -> np.ndarray:
    """The block holding each point (-1 outside the block grid)."""
    bj = np.floor((x - p.block_origin[0]) / p.block_side).astype(np.int64)
    bi = np.floor((p.block_origin[1] - y) / p.block_side).astype(np.int64)
    inside = (bj >= 0) & (bj < p.block_cols) & (bi >= 0) & (bi * p.block_cols < len(p.blocks))
    return np.where(inside, bi * p.block_cols + bj, -1)


def _boxes(p: PairPlan, row: np.ndarray, col: np.ndarray, size: int, pad: int = 0) -> np.ndarray:
    """The ground boxes (CRS units) of windows of ``size`` px at ``row``, ``col`` on a pair's grid, ``pad`` px wider."""
    t = p.transform
    return shapely.box(t.c + (col - pad) * t.a, t.f + (row + size + pad) * t.e,
                       t.c + (col + size + pad) * t.a, t.f + (row - pad) * t.e)


def _centred_windows(p: PairPlan, geoms: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``size`` px centred on each geometry's bounds, moved inside the block of its centre.

    Returns (row, col, block); block -1 where the geometry's centre has no block that holds a patch.
    """
    t = p.transform
    b = shapely.bounds(geoms)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    blk = _blocks_of(cx, cy, p)
    row = np.floor((t.f - cy) / -t.e).astype(np.int64) - size // 2
    col = np.floor((cx - t.c) / t.a).astype(np.int64) - size // 2
    r0, r1, c0, c1 = (p.blocks[np.maximum(blk, 0), k] for k in range(4))
    ok = (blk >= 0) & (r1 - r0 >= size) & (c1 - c0 >= size)
    row = np.clip(row, r0, np.maximum(r1 - size, r0))
    col = np.clip(col, c0, np.maximum(c1 - size, c0))
    return row, col, np.where(ok, blk, -1)


@dataclass
class Placement:
    """Where a changed building's positive patch may go on a pair's grid (pixel units)."""

    blk: np.ndarray          # the block of the building's centre (-1: none): the building's split
    extent: np.ndarray       # (n, 4) r_lo, r_hi, c_lo, c_hi: the pixels the building's bounds touch
    preferred: np.ndarray    # (n, 2) row, col: holds the building, inside its block where it can
    fits: np.ndarray         # the building's bounds fit in a patch
    ok: np.ndarray           # a window can be cut (a block, and an image at least a patch wide)


def _placements(p: PairPlan, geoms: np.ndarray, size: int) -> Placement:
    """Windows that hold each building whole (when its bounds fit in ``size`` px), in its block if possible.

    Rows (and columns alike): the window centred on the building's bounds is moved inside the
    block of the building's centre, then as little as needed to hold the building's pixels
    ``[r_lo, r_hi)`` (so it leaves the block only when the building crosses the block's border),
    then inside the image. A building larger than the patch gets the centred window, inside its block.
    """
    t, (h, w) = p.transform, p.shape
    b = shapely.bounds(geoms)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    blk = _blocks_of(cx, cy, p)
    c_lo = np.floor((b[:, 0] - t.c) / t.a + 1e-6).astype(np.int64)
    c_hi = np.ceil((b[:, 2] - t.c) / t.a - 1e-6).astype(np.int64)
    r_lo = np.floor((t.f - b[:, 3]) / -t.e + 1e-6).astype(np.int64)
    r_hi = np.ceil((t.f - b[:, 1]) / -t.e - 1e-6).astype(np.int64)
    r0, r1, c0, c1 = (p.blocks[np.maximum(blk, 0), k] for k in range(4))
    fits = (r_hi - r_lo <= size) & (c_hi - c_lo <= size)

    def place(lo, hi, b0, b1, n):
        x = (lo + hi - size) // 2                                # centred on the building
        x = np.clip(x, b0, np.maximum(b1 - size, b0))            # inside its block
        x = np.where(fits, np.clip(x, hi - size, lo), x)         # holding the building
        return np.clip(x, 0, max(n - size, 0))                   # inside the image

    preferred = np.stack([place(r_lo, r_hi, r0, r1, h), place(c_lo, c_hi, c0, c1, w)], axis=1)
    ok = (blk >= 0) & (h >= size) & (w >= size)
    return Placement(blk, np.stack([r_lo, r_hi, c_lo, c_hi], axis=1), preferred, fits, ok)


class _Barriers:
    """Ground that patches of other splits must not touch: changed buildings and positive windows, with their split.

    A changed building belongs to the split of the block holding its centre (in every pair: the
    blocks are shared), and so does its positive patch, which may reach over the block's border to
    hold the building whole. Any other patch of another split that overlaps one of them by more than
    an edge is moved or dropped, so no changed building, and no ground of a positive, is in two splits.
    """

    def __init__(self, geoms: np.ndarray, splits: np.ndarray) -> None:
        self.geoms = np.asarray(geoms, dtype=object)
        self.splits = np.asarray(splits, dtype=object)
        self.tree = shapely.STRtree(self.geoms) if len(self.geoms) else None

    def add(self, geoms: np.ndarray, splits: np.ndarray) -> "_Barriers":
        return _Barriers(np.concatenate([self.geoms, np.asarray(geoms, dtype=object)]),
                         np.concatenate([self.splits, np.asarray(splits, dtype=object)]))

    def conflicts(self, boxes: np.ndarray, splits: np.ndarray) -> np.ndarray:
        """True for each box that overlaps (with an area) a barrier of a split other than its own."""
        bad = np.zeros(len(boxes), bool)
        if self.tree is None or len(boxes) == 0:
            return bad
        a, b = self.tree.query(boxes, predicate="intersects")
        other = np.asarray(splits, dtype=object)[a] != self.splits[b]
        a, b = a[other], b[other]
        if len(a):
            area = shapely.area(shapely.intersection(boxes[a], self.geoms[b]))
            bad[np.unique(a[area > 0])] = True
        return bad


def _changed_buildings(pairs: list[PairPlan], block_splits) -> _Barriers:
    """Every pair's changed buildings with the split of the block holding their centre ("none", which no
    patch may touch, for a centre outside the block grid)."""
    geoms, splits = [], []
    for p in pairs:
        if p.changes is None or len(p.changes.geoms) == 0:
            continue
        b = shapely.bounds(p.changes.geoms)
        blk = _blocks_of((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, p)
        geoms.append(p.changes.geoms)
        splits.append(np.where(blk >= 0, block_splits[np.maximum(blk, 0)].astype(object), "none"))
    if not geoms:
        return _Barriers(np.zeros(0, object), np.zeros(0, object))
    return _Barriers(np.concatenate(geoms), np.concatenate(splits))


# --- candidates ---------------------------------------------------------------------------------

def _positive_candidates(pairs: list[PairPlan], block_splits, opts: WdcOptions, rng,
                         changed: _Barriers) -> tuple[Candidates, _Barriers, dict]:
    """One window per annotated change that holds the building whole and stays in the building's split.

    All pairs pooled, in a seeded order. A window is first placed by :func:`_placements` and takes
    the split of the block holding the building's centre. One that touches a changed building of
    another split, or overlaps a window of another split placed before it, is moved to the nearest
    position (among the extremes of where it still holds its building) free of both, else dropped.
    Returns the candidates, the barriers (changed buildings and kept windows, for the other kinds)
    and counts for the summary: ``moved``, ``dropped_other_split``, ``not_whole`` (buildings
    larger than a patch, or cut by the image's edge).
    """
    size = opts.patch
    parts, extra = [], []
    for k, p in enumerate(pairs):
        if p.changes is None or len(p.changes.geoms) == 0:
            continue
        pl = _placements(p, p.changes.geoms, size)
        ids = np.array([f"{kind}:{i}" for kind, i in zip(p.changes.kind, p.changes.src_id)], dtype=object)
        keep = pl.ok
        parts.append(Candidates(np.full(keep.sum(), k), pl.preferred[keep, 0], pl.preferred[keep, 1],
                                pl.blk[keep], ids[keep], np.ones(keep.sum(), np.int8)))
        extra.append((pl.extent[keep], pl.fits[keep], pl.blk[keep]))
    c = Candidates.concat(parts)
    if len(c) == 0:
        return c, changed, {"not_whole": 0, "moved": 0, "dropped_other_split": 0}
    extent = np.concatenate([e[0] for e in extra])
    fits = np.concatenate([e[1] for e in extra])
    order = rng.permutation(len(c))
    c, extent, fits = c.take(order), extent[order], fits[order]
    split = block_splits[c.block].astype(object)
    boxes = np.empty(len(c), dtype=object)
    for k in np.unique(c.pair):
        sel = c.pair == k
        boxes[sel] = _boxes(pairs[int(k)], c.row[sel], c.col[sel], size)

    # Windows that touch a changed building of another split, or overlap a window of another split
    # earlier in the seeded order, are placed again, one by one in that order: at the nearest
    # position that holds the building and is free of both (changed buildings, and the windows
    # placed so far of other splits), else dropped. The others stay where they are.
    overlap_a, overlap_b = _overlaps(boxes, split)
    troubled = changed.conflicts(boxes, split)
    troubled[overlap_b[overlap_a < overlap_b]] = True
    fixed = _Barriers(boxes[~troubled], split[~troubled])
    keep = np.ones(len(c), bool)
    placed: list[int] = []
    moved = 0
    for i in np.flatnonzero(troubled):
        p = pairs[int(c.pair[i])]
        r_lo, r_hi, c_lo, c_hi = extent[i]
        h, w = p.shape
        rows = _positions(int(c.row[i]), r_lo, r_hi, size, h, bool(fits[i]))
        cols = _positions(int(c.col[i]), c_lo, c_hi, size, w, bool(fits[i]))
        tries = sorted(((r, q) for r in rows for q in cols), key=lambda rq: abs(rq[0] - c.row[i]) + abs(rq[1] - c.col[i]))
        rr, cc = np.array([t[0] for t in tries]), np.array([t[1] for t in tries])
        alt = _boxes(p, rr, cc, size)
        mine = np.full(len(alt), split[i], dtype=object)
        bad = changed.conflicts(alt, mine) | fixed.conflicts(alt, mine)
        if placed:
            bad |= _Barriers(boxes[placed], split[placed]).conflicts(alt, mine)
        free = np.flatnonzero(~bad)
        if len(free) == 0:
            keep[i] = False
            continue
        f = free[0]
        if (rr[f], cc[f]) != (c.row[i], c.col[i]):
            c.row[i], c.col[i], boxes[i] = rr[f], cc[f], alt[f]
            moved += 1
        placed.append(int(i))
    whole = fits.copy()
    for k in np.unique(c.pair):          # held whole: the window covers the building's pixels
        sel = c.pair == k
        r_lo, r_hi, c_lo, c_hi = extent[sel].T
        whole[sel] &= (c.row[sel] <= r_lo) & (c.row[sel] + size >= r_hi) & (c.col[sel] <= c_lo) & (c.col[sel] + size >= c_hi)
    stats = {"not_whole": int((keep & ~whole).sum()), "moved": moved, "dropped_other_split": int((~keep).sum())}
    return c.take(keep), changed.add(boxes[keep], split[keep]), stats


def _overlaps(boxes: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` of boxes of different splits that share an area (each pair both ways)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    a, b = a[split[a] != split[b]], b[split[a] != split[b]]
    if len(a):
        area = shapely.area(shapely.intersection(boxes[a], boxes[b]))
        a, b = a[area > 0], b[area > 0]
    return a, b


def _positions(x: int, lo: int, hi: int, size: int, n: int, fits: bool) -> list[int]:
    """Window offsets to try along one axis: the current one and the extremes that still hold ``[lo, hi)``."""
    if not fits:
        return [x]
    first, last = max(hi - size, 0), min(lo, max(n - size, 0))
    if first > last:
        return [x]
    return sorted({x, first, last, min(max(x, first), last)})


def _negative_candidates(pairs: list[PairPlan], block_splits, opts: WdcOptions, margin: int, rng,
                         barriers: _Barriers) -> Candidates:
    """Windows centred on unchanged buildings of the later year, with no change within ``margin`` px,
    inside their block, touching no changed building or positive window of another split."""
    parts = []
    for k, p in enumerate(pairs):
        ch = p.changes
        if ch is None:
            continue
        unchanged = np.flatnonzero(ch.iou1 >= opts.threshold)
        if len(unchanged) == 0:
            continue
        geoms = p.later.geoms[unchanged]
        row, col, blk = _centred_windows(p, geoms, opts.patch)
        keep = blk >= 0
        if len(ch.geoms):
            near, _ = shapely.STRtree(ch.geoms).query(_boxes(p, row, col, opts.patch, margin), predicate="intersects")
            keep[near] = False
        keep[keep] = ~barriers.conflicts(_boxes(p, row[keep], col[keep], opts.patch),
                                         block_splits[blk[keep]].astype(object))
        ids = p.later.ids[unchanged]
        parts.append(Candidates(np.full(keep.sum(), k), row[keep], col[keep], blk[keep],
                                np.array([f"kept:{i}" for i in ids[keep]], dtype=object),
                                np.ones(keep.sum(), np.int8)))
    c = Candidates.concat(parts)
    return c.take(rng.permutation(len(c)))


def _noisy_draw(p: PairPlan, k: int, train_blocks: np.ndarray, n: int, size: int, tree, rng) -> Candidates:
    """``n`` random windows inside the train blocks of pair ``k`` (uniform over their area)."""
    r0, r1, c0, c1 = p.blocks[train_blocks].T
    room_r, room_c = r1 - r0 - size + 1, c1 - c0 - size + 1
    weights = room_r * room_c / (room_r * room_c).sum()
    pick = rng.choice(len(train_blocks), size=n, p=weights)
    row = r0[pick] + rng.integers(0, room_r[pick])
    col = c0[pick] + rng.integers(0, room_c[pick])
    has = np.zeros(n, np.int8)
    if tree is not None:
        hit, _ = tree.query(_boxes(p, row, col, size), predicate="intersects")
        has[np.unique(hit)] = 1
    return Candidates(np.full(n, k), row, col, train_blocks[pick], np.full(n, "", dtype=object), has)


# --- running the work ---------------------------------------------------------------------------

class _Sink:
    """Turns worker results into PatchWriter rows (the client side of every unit of work)."""

    def __init__(self, writer: PatchWriter, pairs: list[PairPlan], block_splits, dtype: str, opts: WdcOptions):
        self.writer, self.pairs, self.block_splits, self.dtype, self.opts = writer, pairs, block_splits, dtype, opts
        self.kind_counts = {k: {s: 0 for s in SPLITS} for k in KINDS}

    def units(self, c: Candidates, kind: str) -> Iterator[tuple]:
        """Units of work: (function args) for chunks of ``c`` that share a pair."""
        size = self.opts.patch
        for start in range(0, len(c), self.opts.chunk):
            part = c.take(slice(start, start + self.opts.chunk))
            for k in np.unique(part.pair):
                sel = part.take(part.pair == k)
                p = self.pairs[int(k)]
                changes = None
                if kind != "noisy_negative" and p.changes is not None:
                    boxes = _boxes(p, sel.row, sel.col, size)
                    _, hit = shapely.STRtree(p.changes.geoms).query(boxes, predicate="intersects") \
                        if len(p.changes.geoms) else (None, np.zeros(0, np.int64))
                    changes = shapely.to_wkb(p.changes.geoms[np.unique(hit)])
                yield sel, (p.spec, np.stack([sel.row, sel.col], 1), size, self.dtype, changes, p.transform,
                            self.opts.min_valid)

    def write(self, sel: Candidates, result: list, kind: str, want: dict) -> dict:
        """Write the valid patches of one unit while ``want[key]`` allows; return what was written per key."""
        got: dict = {}
        size = self.opts.patch
        for i, item in enumerate(result):
            if item is None:
                continue
            key = int(sel.has_building[i]) if kind == "noisy_negative" else kind
            if want.get(key, 0) <= 0:
                continue
            before, after, label, valid_fraction = item
            p = self.pairs[int(sel.pair[i])]
            row, col, blk = int(sel.row[i]), int(sel.col[i]), int(sel.block[i])
            minx, miny, maxx, maxy = window_bounds(Window(col, row, size, size), p.transform)
            self.writer.add(before, after, label, {
                "split": str(self.block_splits[blk]), "pair": p.name, "row_off": row, "col_off": col,
                "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "crs": p.crs,
                "valid_fraction": valid_fraction, "kind": kind, "block": blk,
                "change_id": sel.change_id[i], "has_building": int(sel.has_building[i])})
            want[key] -= 1
            got[key] = got.get(key, 0) + 1
            self.kind_counts[kind][str(self.block_splits[blk])] += 1
        return got


def _run(ex, sink: _Sink, c: Candidates, kind: str, want: dict, advance: Callable[[int], None]) -> dict:
    """Read the candidates ``c`` on the workers and write them in order while ``want`` lasts."""
    written: dict = {}
    for sel, result in ex.map_ordered(read_patches, sink.units(c, kind)):
        got = sink.write(sel, result, kind, want)
        for key, n in got.items():
            written[key] = written.get(key, 0) + n
        advance(sum(got.values()))
        if all(v <= 0 for v in want.values()):
            break
    return written


def _fill_list(ex, sink: _Sink, c: Candidates, quota: int | None, kind: str, title: str) -> dict:
    """Write up to ``quota`` patches (None: all) from a finite list of candidates, in its order."""
    quota = len(c) if quota is None else int(quota)
    want = {kind: quota}
    written = 0
    start = 0
    with task(title, total=min(quota, len(c)), unit="patches") as advance:
        while want[kind] > 0 and start < len(c):
            n = max(want[kind], 1)
            part = c.take(slice(start, start + n))
            start += n
            written += _run(ex, sink, part, kind, want, advance).get(kind, 0)
    return {"wanted": quota, "candidates": len(c), "written": written, "short": max(0, quota - written)}


def _fill_noisy(ex, sink: _Sink, pairs: list[int], block_splits, filter_fp: Footprints | None,
                opts: WdcOptions, rng, barriers: _Barriers) -> dict:
    """Noisy negatives from each pair: random windows in train blocks, 9:1 with and without buildings."""
    n_pairs = len(pairs)
    if n_pairs == 0 or opts.noisy <= 0:
        return {"wanted": 0, "written": 0, "with_buildings": 0, "without_buildings": 0, "short": 0}
    tree = shapely.STRtree(filter_fp.geoms) if filter_fp is not None and len(filter_fp) else None
    quotas = np.full(n_pairs, opts.noisy // n_pairs) + (np.arange(n_pairs) < opts.noisy % n_pairs)
    totals = {1: 0, 0: 0}
    notes = []
    with task("noisy negatives", total=int(opts.noisy), unit="patches") as advance:
        for k, q in zip(pairs, quotas):
            p = sink.pairs[k]
            with_b = int(round(q * opts.building_share)) if tree is not None else 0
            want = {1: with_b, 0: int(q) - with_b}
            room = (p.blocks[:, 1] - p.blocks[:, 0] >= opts.patch) & (p.blocks[:, 3] - p.blocks[:, 2] >= opts.patch)
            train = np.flatnonzero(room & (block_splits == "train"))
            if len(train) == 0:
                notes.append(f"{p.name}: no train block holds a {opts.patch} px patch")
                continue
            drawn, budget = 0, opts.attempts * int(q)
            while any(v > 0 for v in want.values()) and drawn < budget:
                n = min(max(4 * sum(want.values()), 256), budget - drawn)
                cand = _noisy_draw(p, k, train, n, opts.patch, tree, rng)
                drawn += n
                # off other splits' changed buildings and positives; then, in draw order, only as
                # many of each kind as are still wanted
                free = ~barriers.conflicts(_boxes(p, cand.row, cand.col, opts.patch), np.full(n, "train", dtype=object))
                keep = np.zeros(n, bool)
                for key, left in want.items():
                    idx = np.flatnonzero(free & (cand.has_building == key))[:max(left, 0)]
                    keep[idx] = True
                got = _run(ex, sink, cand.take(keep), "noisy_negative", want, advance)
                for key, v in got.items():
                    totals[key] += v
            if any(v > 0 for v in want.values()):
                notes.append(f"{p.name}: {want[1]} noisy patches with and {want[0]} without buildings short "
                             f"after {drawn} random windows")
    written = totals[0] + totals[1]
    return {"wanted": int(opts.noisy), "written": written, "with_buildings": totals[1],
            "without_buildings": totals[0], "share_with_buildings": round(totals[1] / written, 4) if written else None,
            "short": int(opts.noisy) - written, "notes": notes}


# --- the worker side ----------------------------------------------------------------------------

_PAIRS: dict[PairSpec, RasterPair] = {}


def _pair(spec: PairSpec) -> RasterPair:
    """This process's open RasterPair of ``spec`` (workers keep a few open between units of work)."""
    pair = _PAIRS.get(spec)
    if pair is None:
        if len(_PAIRS) >= 8:
            _PAIRS.pop(next(iter(_PAIRS))).close()
        pair = RasterPair.open(spec.before, spec.after, bands=list(spec.bands) if spec.bands else None,
                               resampling=Resampling[spec.resampling])
        _PAIRS[spec] = pair
    return pair


def _close_cached_pairs() -> None:
    while _PAIRS:
        _PAIRS.popitem()[1].close()


def read_patches(spec: PairSpec, windows: np.ndarray, size: int, dtype: str, changes_wkb, transform: Affine,
                 min_valid: float) -> list:
    """Read ``windows`` (row, col) of one pair: ``(before, after, label, valid_fraction)`` or None per window.

    None marks a window with less than ``min_valid`` of its pixels valid in both dates. ``label`` is
    None (unknown) when ``changes_wkb`` is None, else the changes rasterised: 1 inside, 0 outside,
    255 where either date has no data. Runs on a Dask worker (or in the client with ``workers=0``).
    """
    import rasterio.features

    pair = _pair(spec)
    changes = shapely.from_wkb(changes_wkb) if changes_wkb is not None else None
    tree = shapely.STRtree(changes) if changes is not None and len(changes) else None
    out = []
    for row, col in windows:
        window = Window(int(col), int(row), size, size)
        wp = pair.read_raw(window)
        valid_fraction = float(wp.valid.mean())
        if valid_fraction == 0.0 or valid_fraction < min_valid:
            out.append(None)
            continue
        label = None
        if changes is not None:
            label = np.zeros((size, size), np.uint8)
            if tree is not None:
                hits = tree.query(shapely.box(*window_bounds(window, transform)), predicate="intersects")
                if len(hits):
                    t = transform @ Affine.translation(int(col), int(row))
                    label = rasterio.features.rasterize(((g, 1) for g in changes[hits]), out_shape=(size, size),
                                                        transform=t, fill=0, dtype="uint8")
            label[~wp.valid] = UNKNOWN
        out.append((wp.before.astype(dtype), wp.after.astype(dtype), label, valid_fraction))
    return out


class _Serial:
    """Runs units of work in this process (``workers=0``)."""

    workers = 0

    def map_ordered(self, fn, units) -> Iterator[tuple]:
        for sel, args in units:
            yield sel, fn(*args)


class _Dask:
    """Runs units of work on a Dask distributed cluster, a bounded number in flight, results in order."""

    def __init__(self, client) -> None:
        self.client = client
        self.workers = max(1, sum(client.nthreads().values()))

    def map_ordered(self, fn, units) -> Iterator[tuple]:
        pending: deque = deque()
        units = iter(units)
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    try:
                        sel, args = next(units)
                    except StopIteration:
                        break
                    pending.append((sel, self.client.submit(fn, *args, pure=False)))
                if not pending:
                    return
                sel, future = pending.popleft()
                yield sel, future.result()
        finally:
            for _, future in pending:
                future.cancel()


@contextlib.contextmanager
def _executor(workers: int | None, scheduler: str | None):
    """A Dask client on ``scheduler``, or on a local cluster of ``workers`` processes, or serial (0)."""
    if scheduler is None and workers == 0:
        yield _Serial()
        return
    from geochange.scheduler import dask_client

    with dask_client(scheduler, workers) as client:
        yield _Dask(client)


# --- summary ------------------------------------------------------------------------------------

def _summary(m: Manifest, out: Path, footprints, plans, writer: PatchWriter, stats, opts, dtype, crs,
             block_m, block_splits, seconds) -> dict:
    notes = list(stats["noisy_negative"].get("notes", []))
    for kind in ("positive", "negative"):
        if stats[kind]["short"]:
            notes.append(f"{stats[kind]['short']} {kind} patches short of {stats[kind]['wanted']} "
                         f"({stats[kind]['candidates']} candidates)")
    empty = [s for s, f in zip(SPLITS, split_fractions(opts.split)) if f > 0 and writer.counts[s] == 0]
    if empty:
        held = " and ".join(f"{sp} ({int(np.count_nonzero(block_splits == sp))} blocks)" for sp in empty)
        notes.append(f"no patch in {held} of {len(block_splits)} blocks of {block_m:g} m: positives and negatives "
                     "sit on buildings, and noisy negatives come from train blocks only; a smaller --block shares "
                     "the buildings out between more blocks")
    return {
        "manifest": str(m.path), "name": m.name, "out": str(out), "crs": crs,
        "buildings": {str(y): len(f) for y, f in sorted(footprints.items())},
        "footprints_repaired": {str(y): f.repaired for y, f in sorted(footprints.items())},
        "changes": {f"{a}-{b}": {"new": len(plans[(a, b)].changes.new),
                                 "destroyed": len(plans[(a, b)].changes.destroyed)} for a, b in m.pairs},
        "patches": {"total": writer.count, **writer.counts},
        "kinds": stats["kinds"],
        "labels": dict(writer.labels),
        "noisy": {k: v for k, v in stats["noisy_negative"].items() if k != "notes"},
        "positive": stats["positive"], "negative": stats["negative"],
        "patch": opts.patch, "dtype": dtype, "block_m": block_m,
        "blocks": {s: int(np.count_nonzero(block_splits == s)) for s in SPLITS},
        "seed": opts.seed, "workers": opts.workers, "scheduler": opts.scheduler,
        "seconds": round(seconds, 3), "notes": notes,
    }


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2, default=str) + "\n"


def _common_dtype(types: list[str]) -> str:
    dtype = np.result_type(*[np.dtype(t) for t in types])
    return dtype.name if dtype.name in KEPT_DTYPES else "float32"


def _check_options(o: WdcOptions) -> None:
    if o.patch < 8:
        raise GeochangeError(f"--patch must be at least 8 px, not {o.patch}")
    if o.block < 1:
        raise GeochangeError(f"--block must be at least 1 patch, not {o.block}")
    if not 0.0 <= o.building_share <= 1.0:
        raise GeochangeError(f"the building share must be between 0 and 1, not {o.building_share}")
    for name in ("noisy", "positives", "negatives"):
        v = getattr(o, name)
        if v is not None and v < 0:
            raise GeochangeError(f"--{name} must be 0 or more, not {v}")
    if o.workers is not None and o.workers < 0:
        raise GeochangeError(f"--workers must be 0 (this process) or more, not {o.workers}")
    if o.resampling not in Resampling.__members__:
        raise GeochangeError(f"unknown resampling {o.resampling!r} (e.g. nearest, bilinear, cubic)")
    if not 0.0 <= o.min_valid <= 1.0:
        raise GeochangeError(f"--min-valid must be between 0 and 1, not {o.min_valid}")
