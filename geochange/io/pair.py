"""Open two dates, bring AFTER onto BEFORE's grid, restrict to their overlap, and read window pairs.

This is the one way in for imagery: the engine, ``tile`` and the quicklook all read through a
:class:`RasterPair`. AFTER is warped lazily (GDAL's warper via WarpedVRT), so another CRS,
resolution or extent is normal input. Reads are windowed; nothing reads a whole raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from geochange.checks import check_bands
from geochange.errors import GeochangeError
from geochange.io.align import Grid, open_raster, read_valid_mask, require_crs, unreadable, warp_to_grid
from geochange.io.coregister import N_WINDOWS, SIZE, TOLERANCE_PX, Coregistration, estimate_shift
from geochange.io.normalize import Normalizer, fit_normalizer
from geochange.progress import warn


#: fewer valid pixels than this in the scene sample cannot be fitted (a normalisation, a threshold)
MIN_FIT_PIXELS = 10
#: a scene sample with a smaller share of valid pixels is looked for again where the data is
SPARSE_SHARE = 0.01


@dataclass
class WindowPair:
    """Both dates of one window on the output grid: ``(C, h, w)`` float32 each, and a ``(h, w)`` validity mask."""

    window: Window
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray


@dataclass
class RasterPair:
    """Two dates on one grid: BEFORE's grid, cut to the overlap of both footprints.

    Use :meth:`open` rather than the constructor. ``grid`` is the output grid (BEFORE's CRS and
    pixel size, origin moved to the overlap); windows passed to :meth:`read` are in its pixels.
    AFTER may be read shifted by a sub-pixel residual (:meth:`coregister`, :meth:`shift_after`).
    """

    before_path: str
    after_path: str
    grid: Grid
    offset: Window
    bands_before: list[int]
    bands_after: list[int]
    _before: rasterio.io.DatasetReader = field(repr=False)
    _after: rasterio.io.DatasetReader = field(repr=False)
    _after_on_grid: rasterio.io.DatasetReaderBase = field(repr=False)
    normalizer: Normalizer | None = None
    resampling: Resampling = Resampling.bilinear
    after_shift: tuple[float, float] | None = None  # (dy, dx) px AFTER is read shifted by (io.coregister)
    coregistration: Coregistration | None = None    # what :meth:`coregister` found and did

    @classmethod
    def open(cls, before: str, after: str, *, bands: list[int] | None = None,
             resampling: Resampling = Resampling.bilinear,
             after_shift: tuple[float, float] | None = None) -> "RasterPair":
        """Open BEFORE and AFTER, check they can be compared, and set up the aligned view of AFTER.

        ``after_shift`` ``(dy, dx)``: read AFTER shifted back by this residual misregistration (in
        grid pixels, see :mod:`geochange.io.coregister`), e.g. the shift measured by :meth:`coregister`.
        """
        ds_b = open_raster(str(before))
        ds_a = open_raster(str(after))
        try:
            require_crs(ds_b, str(before))
            require_crs(ds_a, str(after))
            bands_b, bands_a = match_bands(ds_b.count, ds_a.count, bands)
            offset = overlap_window(ds_b, ds_a)
            full = Grid.of(ds_b)
            grid = full.window_grid(offset)
            after_on_grid = warp_to_grid(ds_a, grid.translated(*after_shift) if after_shift else grid, resampling)
        except Exception:
            ds_b.close()
            ds_a.close()
            raise
        return cls(str(before), str(after), grid, offset, bands_b, bands_a, ds_b, ds_a, after_on_grid,
                   resampling=resampling, after_shift=tuple(map(float, after_shift)) if after_shift else None)

    @property
    def count(self) -> int:
        """Number of bands compared."""
        return len(self.bands_before)

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.height, self.grid.width

    @property
    def block_height(self) -> int:
        """Rows per block (tile or strip) of BEFORE's file: reads that start and end on them decompress
        each block once."""
        return int(self._before.block_shapes[0][0])

    def coregister(self, mode: str = "auto", *, n_windows: int = N_WINDOWS, size: int = SIZE, seed: int = 0,
                   tolerance_px: float = TOLERANCE_PX) -> Coregistration:
        """Estimate AFTER's residual shift relative to BEFORE and, with ``mode="auto"``, correct it
        when it exceeds ``tolerance_px`` and the windows agree on it; ``"off"`` does nothing.

        Call it before :meth:`fit_normalization`, so that the normalisation is fitted on the
        corrected pair. Every later read of AFTER sees the correction.
        """
        if mode not in ("auto", "off"):
            raise GeochangeError(f"unknown co-registration mode {mode!r} (auto or off)")
        if mode == "off":
            self.coregistration = Coregistration("off", None, self.grid.res, note="co-registration is off")
            return self.coregistration
        est = estimate_shift(self, n_windows=n_windows, size=size, seed=seed)
        if est.reliable and est.magnitude_px > tolerance_px:
            self.shift_after(est.shift_px)
            est.applied = True
        elif est.reliable:
            est.note = f"below the tolerance of {tolerance_px} px: not corrected"
        self.coregistration = est
        return est

    def shift_after(self, shift: tuple[float, float] | None) -> None:
        """Read AFTER shifted back by ``shift`` ``(dy, dx)`` grid pixels from now on (None: unshifted).

        AFTER is warped onto the grid moved by the shift (one lazy WarpedVRT, as for any other grid),
        so output pixel ``(r, c)`` reads AFTER at ``(r + dy, c + dx)``: no extra pass, no resampling twice.
        """
        grid = self.grid.translated(*shift) if shift else self.grid
        view = warp_to_grid(self._after, grid, self.resampling)
        if self._after_on_grid is not self._after:
            self._after_on_grid.close()
        self._after_on_grid = view
        self.after_shift = tuple(map(float, shift)) if shift else None

    def read_raw(self, window: Window) -> WindowPair:
        """Read one window of both dates as float32, without radiometric normalisation."""
        return _as_float32(self._read(window))

    def read(self, window: Window) -> WindowPair:
        """Read one window of both dates, normalised when :meth:`fit_normalization` was called (float32)."""
        return self.normalize(self._read(window))

    def _read(self, window: Window) -> WindowPair:
        """Both dates of ``window`` in their files' dtypes (the normalisation converts them as it goes)."""
        src_win = Window(window.col_off + self.offset.col_off, window.row_off + self.offset.row_off,
                         window.width, window.height)
        try:
            before = self._before.read(self.bands_before, window=src_win)
            valid = _valid_mask(self._before, src_win, self.bands_before)
        except RasterioIOError as exc:
            raise unreadable(self.before_path, exc) from None
        try:
            after = self._after_on_grid.read(self.bands_after, window=window)
            valid_a = _valid_mask(self._after_on_grid, window, self.bands_after)
        except RasterioIOError as exc:
            raise unreadable(self.after_path, exc) from None
        valid = valid_a if valid is None else valid if valid_a is None else valid & valid_a
        if valid is None:
            valid = np.ones(before.shape[1:], bool)
        for arr in (before, after):
            if arr.dtype.kind in "fc":   # integers are always finite
                valid &= np.isfinite(arr).all(axis=0)
        return WindowPair(window, before, after, valid)

    def normalize(self, wp: WindowPair) -> WindowPair:
        """Apply the fitted radiometric normalisation to a window pair (in place, float32 out); zero invalid pixels."""
        if self.normalizer is None:
            return _as_float32(wp)
        wp.before, wp.after = self.normalizer.apply(wp.before, wp.after)
        if not wp.valid.all():
            wp.before[:, ~wp.valid] = 0.0
            wp.after[:, ~wp.valid] = 0.0
        return wp

    def sample_windows(self, n: int = 64, size: int = 256, seed: int = 0) -> list[Window]:
        """Up to ``n`` windows spread evenly over the whole scene (jittered by ``seed``); a scene no larger
        than ``n`` windows is covered whole.

        Scene-level estimates (normalisation, thresholds, clusters) are fitted on these, so a
        result means the same thing in every window and memory stays bounded.
        """
        h, w = self.shape
        size_h, size_w = min(size, h), min(size, w)
        if h * w <= n * size_h * size_w:  # a small scene: all of it, in windows that tile it
            return [Window(c, r, min(size_w, w - c), min(size_h, h - r))
                    for r in range(0, h, size_h) for c in range(0, w, size_w)]
        per_side = max(1, int(math.sqrt(n)))
        rows = min(per_side, max(1, h // size_h))
        cols = min(max(1, n // rows), max(1, w // size_w))
        rng = np.random.default_rng(seed)
        windows = []
        for i in range(rows):
            for j in range(cols):
                r0 = int(i * (h - size_h) / max(rows - 1, 1)) if rows > 1 else (h - size_h) // 2
                c0 = int(j * (w - size_w) / max(cols - 1, 1)) if cols > 1 else (w - size_w) // 2
                jitter_r = int(rng.integers(-size_h // 4, size_h // 4 + 1))
                jitter_c = int(rng.integers(-size_w // 4, size_w // 4 + 1))
                r0 = int(np.clip(r0 + jitter_r, 0, h - size_h))
                c0 = int(np.clip(c0 + jitter_c, 0, w - size_w))
                windows.append(Window(c0, r0, size_w, size_h))
        return windows

    def fit_normalization(self, method: str = "meanstd", *, n_windows: int = 64, size: int = 256,
                          seed: int = 0) -> list[WindowPair]:
        """Fit the radiometric normalisation of AFTER to BEFORE on windows sampled over the whole scene.

        Returns those windows, normalised, with at least one valid pixel each: the scene sample
        that models fit on (thresholds, clusters), read only once.
        """
        windows = self.sample_windows(n_windows, size, seed)
        samples = [self.read_raw(w) for w in windows]
        n_valid = sum(int(s.valid.sum()) for s in samples)
        sampled = sum(int(w.width * w.height) for w in windows)
        if n_valid < max(MIN_FIT_PIXELS, SPARSE_SHARE * sampled) and sampled < self.shape[0] * self.shape[1]:
            # sparse data the spread-out sample missed: sample where the data is instead
            located = []
            for w in self.windows_with_data(n_windows, size):
                wp = self.read_raw(w)
                if wp.valid.any():
                    located.append(wp)
                    if len(located) == n_windows:
                        break
            if sum(int(s.valid.sum()) for s in located) > n_valid:
                samples = located
                n_valid = sum(int(s.valid.sum()) for s in samples)
        if n_valid == 0:
            raise GeochangeError("no valid pixels where the two dates overlap (nodata or alpha everywhere)")
        if n_valid < MIN_FIT_PIXELS:
            raise GeochangeError(f"too few valid pixels to fit ({n_valid}) where the two dates overlap; "
                                 f"at least {MIN_FIT_PIXELS} are needed")
        self.normalizer = fit_normalizer(samples, method, seed=seed)
        return [self.normalize(s) for s in samples if s.valid.any()]

    def windows_with_data(self, n: int = 64, size: int = 256, max_reads: int = 8) -> list[Window]:
        """Windows of a ``size``-pixel lattice that hold valid pixels of BEFORE (and of AFTER when it lies
        on the same grid): ``n`` spread evenly over those found first, then others (at most ``max_reads``
        x ``n`` in all), for a caller that skips the ones with no pixel valid in both dates.

        BEFORE's validity mask is scanned once in strips (at an overview's resolution when the file has
        overviews), so memory stays bounded; only sparse scenes get here (see :meth:`fit_normalization`).
        """
        h, w = self.shape
        size_h, size_w = min(size, h), min(size, w)
        lattice = np.zeros(((h + size_h - 1) // size_h, (w + size_w - 1) // size_w), bool)
        sources = [(self._before, self.offset)]
        if self._after_on_grid is self._after and self.after_shift is None:
            sources.append((self._after, Window(0, 0, w, h)))
        found = None
        for ds, offset in sources:
            mask = _lattice_of_valid(ds, offset, (h, w), (size_h, size_w), lattice.shape)
            found = mask if found is None else found & mask
        rows, cols = np.nonzero(found)
        windows = []
        picks = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), max_reads * n)).round().astype(int)) \
            if len(rows) else []
        for i in picks:
            r0, c0 = min(rows[i] * size_h, h - size_h), min(cols[i] * size_w, w - size_w)
            windows.append(Window(int(c0), int(r0), size_w, size_h))
        if len(windows) <= n:
            return windows
        keep = set(np.unique(np.linspace(0, len(windows) - 1, n).round().astype(int)).tolist())
        return [windows[i] for i in sorted(keep)] + [wi for i, wi in enumerate(windows) if i not in keep]

    def band_labels(self) -> list[dict]:
        """For each compared band, what the files say it is: ``{"colorinterp": "red", "description": "B04"}``
        (BEFORE's, or AFTER's where BEFORE says nothing); for the quicklook's true colour."""
        def labels(ds, bands):
            return [{"colorinterp": ds.colorinterp[b - 1].name, "description": ds.descriptions[b - 1]} for b in bands]

        def says(value) -> bool:   # GDAL's defaults say nothing
            return bool(value) and value not in ("undefined", "gray")

        return [{k: b[k] if says(b[k]) else a[k] for k in b}
                for b, a in zip(labels(self._before, self.bands_before), labels(self._after, self.bands_after))]

    def tags(self) -> tuple[dict, dict]:
        """BEFORE's and AFTER's dataset tags (default and IMAGERY domains)."""
        def of(ds):
            merged = dict(ds.tags())
            try:
                merged.update(ds.tags(ns="IMAGERY"))
            except Exception:   # a driver without that domain
                pass
            return merged
        return of(self._before), of(self._after)

    def describe(self) -> dict:
        """What was compared, for summary.json."""
        return {
            "before": self.before_path,
            "after": self.after_path,
            "bands_before": self.bands_before,
            "bands_after": self.bands_after,
            "after_warped": self._after_on_grid is not self._after,
            "before_window": {"col_off": int(self.offset.col_off), "row_off": int(self.offset.row_off),
                              "width": int(self.offset.width), "height": int(self.offset.height)},
            "normalization": self.normalizer.as_dict() if self.normalizer else None,
            "after_shift_px": list(self.after_shift) if self.after_shift else None,
        }

    def close(self) -> None:
        if self._after_on_grid is not self._after:
            self._after_on_grid.close()
        self._after.close()
        self._before.close()

    def __enter__(self) -> "RasterPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lattice_of_valid(ds: rasterio.io.DatasetReaderBase, offset: Window, shape: tuple[int, int],
                      cell: tuple[int, int], lattice: tuple[int, int]) -> np.ndarray:
    """Which cells of a lattice over ``shape`` (cells of ``cell`` pixels, origin at ``offset`` in ``ds``)
    hold at least one valid pixel of ``ds``'s first band; read in strips of whole cell rows."""
    h, w = shape
    factor = 1
    overviews = ds.overviews(1) if hasattr(ds, "overviews") else []
    if overviews:  # the coarsest overview still finer than a cell
        factor = max([f for f in overviews if f <= min(cell)] or [1])
    out = np.zeros(lattice, bool)
    for i in range(lattice[0]):
        r0, r1 = i * cell[0], min(h, (i + 1) * cell[0])
        win = Window(offset.col_off, offset.row_off + r0, w, r1 - r0)
        shape_out = (max(1, (r1 - r0) // factor), max(1, w // factor))
        try:
            m = ds.read_masks(1, window=win, out_shape=shape_out) > 0
        except RasterioIOError as exc:
            raise unreadable(ds.name, exc) from None
        cols = np.nonzero(m.any(axis=0))[0]
        out[i, np.unique(cols * w // shape_out[1] // cell[1])] = True
    return out


def _as_float32(wp: WindowPair) -> WindowPair:
    wp.before = wp.before.astype(np.float32, copy=False)
    wp.after = wp.after.astype(np.float32, copy=False)
    return wp


def _valid_mask(ds: rasterio.io.DatasetReaderBase, window: Window, bands: list[int]) -> np.ndarray | None:
    """The pixels of ``window`` holding data in every band (:func:`read_valid_mask`), or None when the
    bands have no nodata, alpha or mask at all, so every pixel is valid without reading a mask."""
    flags = [ds.mask_flag_enums[b - 1] for b in bands]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return None
    return read_valid_mask(ds, window, bands)


def match_bands(count_before: int, count_after: int, bands: list[int] | None) -> tuple[list[int], list[int]]:
    """Choose the bands to compare: ``bands`` (1-based) if given, else the common first N, with a warning."""
    if bands:
        check_bands(bands)
        bad = [b for b in bands if b < 1 or b > min(count_before, count_after)]
        if bad:
            raise GeochangeError(f"--bands {','.join(map(str, bands))}: band {bad[0]} does not exist "
                                 f"(BEFORE has {count_before} bands, AFTER has {count_after})")
        return list(bands), list(bands)
    n = min(count_before, count_after)
    if count_before != count_after:
        warn(f"BEFORE has {count_before} bands and AFTER {count_after}: comparing the first {n} "
             f"(choose others with --bands)")
    return list(range(1, n + 1)), list(range(1, n + 1))


def overlap_window(ds_b: rasterio.io.DatasetReaderBase, ds_a: rasterio.io.DatasetReaderBase) -> Window:
    """BEFORE's pixel window covered by AFTER's footprint (whole pixels); error when they do not meet."""
    _check_transformable(ds_a, ds_b)
    a_bounds = transform_bounds(ds_a.crs, ds_b.crs, *ds_a.bounds, densify_pts=21)
    if not all(math.isfinite(v) for v in a_bounds):
        raise GeochangeError(f"{ds_a.name}: its footprint cannot be expressed in the CRS of {ds_b.name}")
    b = ds_b.bounds
    left, right = max(b.left, a_bounds[0]), min(b.right, a_bounds[2])
    bottom, top = max(b.bottom, a_bounds[1]), min(b.top, a_bounds[3])
    if not (left < right and bottom < top):
        raise GeochangeError(f"the two dates do not overlap ({ds_b.name} and {ds_a.name} cover different areas)")
    win = from_bounds(left, bottom, right, top, ds_b.transform)
    col0, row0 = max(0, math.floor(win.col_off + 1e-6)), max(0, math.floor(win.row_off + 1e-6))
    col1 = min(ds_b.width, math.ceil(win.col_off + win.width - 1e-6))
    row1 = min(ds_b.height, math.ceil(win.row_off + win.height - 1e-6))
    if col1 - col0 < 1 or row1 - row0 < 1:
        raise GeochangeError(f"the two dates overlap by less than one pixel ({ds_b.name}, {ds_a.name})")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _check_transformable(ds_a: rasterio.io.DatasetReaderBase, ds_b: rasterio.io.DatasetReaderBase) -> None:
    """Refuse, in one line, a pair whose CRSs PROJ cannot relate (e.g. a local engineering CRS)."""
    import pyproj

    if ds_a.crs == ds_b.crs:
        return
    crs_a, crs_b = pyproj.CRS.from_user_input(ds_a.crs), pyproj.CRS.from_user_input(ds_b.crs)
    try:
        ok = bool(pyproj.transformer.TransformerGroup(crs_a, crs_b).transformers)
    except pyproj.exceptions.ProjError:
        ok = False
    if not ok:
        raise GeochangeError(f"cannot relate the CRS of {ds_a.name} ({crs_a.name}) to that of "
                             f"{ds_b.name} ({crs_b.name}); reproject one of them first")
