"""Building footprints of two years -> newly built and demolished buildings (WDC appendix A.1).

For each building of one year, its largest IoU with any footprint of the other year; a building of
the earlier year whose best IoU is below 0.01 was demolished (``destroyed``), one of the later year
below 0.01 is ``new`` (Hamaguchi et al. 2019, appendix A.1: "annotated the buildings as newly
constructed or destructed if the IoU < 0.01"; strictly below, so an IoU of exactly 0.01 is no
change). A building moved or redrawn a little keeps a large IoU and is not a change.

Everything is vectorised with shapely 2: one STRtree bulk query gives every intersecting pair of
buildings, their intersection areas come from one vectorised ``intersection``, and the best IoU per
building (both ways) is a sort of those pairs; no Python loop runs over buildings. Footprints are read with
pyogrio, reprojected to the imagery's CRS, and invalid polygons repaired (geochange.geometry.repair)
before any area is measured. Output: ``changes_<y0>_<y1>.gpkg`` (and .shp) through the project's
vector writer, one feature per changed building with ``kind``, ``iou``, ``year``, ``src_id``,
``match_id`` (the best-matching building of the other year, blank when none touches it), ``area_m2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from geochange.errors import GeochangeError
from geochange.geometry import polygonal_part, repair
from geochange.io.align import first_line

THRESHOLD = 0.01   # appendix A.1: IoU < 0.01 -> new or destroyed
_POLYGON, _MULTIPOLYGON, _COLLECTION = 3, 6, 7


@dataclass
class Footprints:
    """The buildings of one year: ids (text) and valid polygons in ``crs``."""

    year: int
    ids: np.ndarray
    geoms: np.ndarray
    crs: str
    source: str = ""
    repaired: int = 0       # invalid polygons made valid
    dropped: int = 0        # features without a polygonal part (or captured after ``year``)

    def __len__(self) -> int:
        return len(self.geoms)


@dataclass
class Changes:
    """The annotation of one pair of years: every building's best IoU, and the changed ones."""

    year0: int
    year1: int
    crs: str
    iou0: np.ndarray        # best IoU of each year0 building with any year1 footprint
    match0: np.ndarray      # index of that footprint in year1 (-1: none touches it)
    iou1: np.ndarray
    match1: np.ndarray
    destroyed: np.ndarray   # indices into year0's buildings
    new: np.ndarray         # indices into year1's buildings
    geoms: np.ndarray       # changed buildings: destroyed (year0 shapes) then new (year1 shapes)
    kind: np.ndarray        # "destroyed" / "new"
    iou: np.ndarray
    year: np.ndarray
    src_id: np.ndarray
    match_id: np.ndarray

    @property
    def pair(self) -> str:
        return f"{self.year0}-{self.year1}"

    def counts(self) -> dict:
        return {"new": int(len(self.new)), "destroyed": int(len(self.destroyed)),
                "buildings": {str(self.year0): int(len(self.iou0)), str(self.year1): int(len(self.iou1))}}


def read_footprints(path: str, year: int, crs, *, layer: str | None = None, id_field: str | None = None,
                    year_field: str | None = None, source_crs=None, label: str | None = None) -> Footprints:
    """Read one year's footprints from any OGR source, reprojected to ``crs`` and repaired.

    ``id_field`` gives the ids (default: the feature's position). With ``year_field`` (a year, a
    date, or text starting with the year, e.g. D.C.'s ``CAPTUREYEAR``) features captured after
    ``year`` are left out, so a layer that accumulates captures reads as the state of ``year``.
    ``source_crs`` is used when the file has no CRS (and must agree with it when it has one).
    """
    import pyogrio
    import pyproj

    label = label or f"footprints.{year}"
    columns = [c for c in (id_field, year_field) if c]
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, columns=columns)
    except Exception as exc:
        raise GeochangeError(f"{label}: cannot read {one_line(path)} ({first_line(exc)})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise GeochangeError(f"{label}: {one_line(path)} has no field {missing[0]!r} "
                             f"(fields: {', '.join(c for c in frame.columns if c != 'geometry') or 'none'})")
    if frame.crs is None:
        if source_crs is None:
            raise GeochangeError(f"{label}: {one_line(path)} has no CRS; give one with 'crs:' in the manifest")
        frame = frame.set_crs(source_crs)
    elif source_crs is not None and not pyproj.CRS(frame.crs).equals(pyproj.CRS(source_crs), ignore_axis_order=True):
        raise GeochangeError(f"{label}: the file's CRS ({frame.crs.to_string()}) is not the manifest's ({source_crs})")
    n_read = len(frame)
    if year_field:
        captured = capture_years(frame[year_field])
        frame = frame[~(captured > year)]        # unknown years (NaN) are kept
    ids = (frame[id_field].astype(str).to_numpy(object) if id_field
           else np.asarray([str(i) for i in frame.index], dtype=object))
    geoms = np.asarray(frame.geometry.to_crs(crs).array, dtype=object) if len(frame) else np.array([], object)
    geoms, keep, repaired = clean_polygons(geoms)
    crs_text = pyproj.CRS(crs).to_string()
    return Footprints(year=year, ids=ids[keep], geoms=geoms[keep], crs=crs_text, source=str(path),
                      repaired=repaired, dropped=n_read - int(keep.sum()))


def capture_years(values) -> np.ndarray:
    """Years (float, NaN when unknown) of a column of years, dates or texts starting with a year."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.year.to_numpy(float, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(float, na_value=np.nan)
    text = values.astype("string").str.extract(r"^\s*(\d{4})", expand=False)
    return pd.to_numeric(text, errors="coerce").to_numpy(float, na_value=np.nan)


def clean_polygons(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Repair invalid geometries and keep polygonal ones with an area; returns (geoms, keep, n_repaired).

    Vectorised: only the few repaired geometries that came out as collections are looked at one by one.
    """
    geoms = np.array(geoms, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    invalid = present & ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = repair(geoms[invalid])
    types = shapely.get_type_id(geoms)
    for i in np.flatnonzero(present & (types == _COLLECTION)):
        geoms[i] = polygonal_part(geoms[i])
    types = shapely.get_type_id(geoms)
    keep = present & ((types == _POLYGON) | (types == _MULTIPOLYGON))
    keep[keep] = shapely.area(geoms[keep]) > 0
    return geoms, keep, int(invalid.sum())


def pair_ious(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every intersecting pair ``(ia, ib)`` of ``a`` and ``b`` and its IoU.

    One STRtree bulk query gives the pairs; intersection areas are one vectorised call;
    union = area(a) + area(b) - intersection.
    """
    if len(a) == 0 or len(b) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    union = shapely.area(a)[ia] + shapely.area(b)[ib] - inter
    return ia, ib, np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_per(group: np.ndarray, other: np.ndarray, iou: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` items, the largest ``iou`` of its pairs and the ``other`` item of it (-1: no pair).

    One lexsort of the pairs (by item, best IoU first); no loop over items.
    """
    best = np.zeros(n)
    match = np.full(n, -1, dtype=np.int64)
    if len(group):
        order = np.lexsort((-iou, group))
        first = np.r_[True, group[order][1:] != group[order][:-1]]
        sel = order[first]
        best[group[sel]] = iou[sel]
        match[group[sel]] = other[sel]
    return best, match


def best_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each geometry of ``a``, its largest IoU with any of ``b`` and the index of that one (-1: none)."""
    ia, ib, iou = pair_ious(a, b)
    return best_per(ia, ib, iou, len(a))


def annotate(fp0: Footprints, fp1: Footprints, threshold: float = THRESHOLD) -> Changes:
    """Compare the buildings of two years: best IoU both ways; below ``threshold`` is a change."""
    if fp0.crs != fp1.crs:
        raise ValueError(f"footprints in different CRSs ({fp0.crs}, {fp1.crs})")
    i0, i1, iou = pair_ious(fp0.geoms, fp1.geoms)     # one query and one intersection serve both ways
    iou0, match0 = best_per(i0, i1, iou, len(fp0))
    iou1, match1 = best_per(i1, i0, iou, len(fp1))
    destroyed = np.flatnonzero(iou0 < threshold)
    new = np.flatnonzero(iou1 < threshold)

    def other_ids(match: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = np.full(len(match), "", dtype=object)
        out[match >= 0] = ids[match[match >= 0]]
        return out

    return Changes(
        year0=fp0.year, year1=fp1.year, crs=fp0.crs, iou0=iou0, match0=match0, iou1=iou1, match1=match1,
        destroyed=destroyed, new=new,
        geoms=np.concatenate([fp0.geoms[destroyed], fp1.geoms[new]]),
        kind=np.array(["destroyed"] * len(destroyed) + ["new"] * len(new), dtype=object),
        iou=np.concatenate([iou0[destroyed], iou1[new]]),
        year=np.r_[np.full(len(destroyed), fp0.year), np.full(len(new), fp1.year)].astype(np.int64),
        src_id=np.concatenate([fp0.ids[destroyed], fp1.ids[new]]),
        match_id=np.concatenate([other_ids(match0[destroyed], fp1.ids), other_ids(match1[new], fp0.ids)]),
    )


def write_changes(changes: Changes, out_dir: str | Path) -> list[Path]:
    """Write ``changes_<y0>_<y1>.gpkg`` (layer ``changes``, and a Shapefile) into ``out_dir``, atomically."""
    import geopandas as gpd

    from geochange.geometry import areas_perimeters_m
    from geochange.io.vectors import VectorWriter

    area = areas_perimeters_m(changes.geoms, changes.crs)[0] if len(changes.geoms) else np.zeros(0)
    frame = gpd.GeoDataFrame({"kind": changes.kind.astype(str), "iou": np.round(changes.iou, 6),
                              "year": changes.year, "src_id": changes.src_id.astype(str),
                              "match_id": changes.match_id.astype(str), "area_m2": np.round(area, 2)},
                             geometry=gpd.GeoSeries(changes.geoms, crs=changes.crs), crs=changes.crs)
    writer = VectorWriter(out_dir, changes.crs, frame, name=f"changes_{changes.year0}_{changes.year1}")
    try:
        writer.write(frame)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def one_line(text: str, limit: int = 120) -> str:
    """A path or a long GDAL string (an inline XML description), cut to one readable line."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."
