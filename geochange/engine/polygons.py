"""Polygons of changed regions, built strip by strip and dissolved exactly across strip borders.

Each strip's mask is labelled into 4-connected components and polygonised (rasterio.features.shapes,
also 4-connected) in whole-grid pixel coordinates, so shared edges have identical integer vertices.
Components that meet across a strip border (same column, vertically adjacent pixels) are joined by
union-find; a region is finished, dissolved (shapely.union_all) and handed on as soon as no part of
it touches the newest strip's bottom row. Memory is bounded by the regions still open at the front.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from geochange.geometry import areas_perimeters_m, polygonal_part, repair


@dataclass
class Region:
    """A finished changed region in grid pixel coordinates, with its probability statistics."""

    geometry: shapely.Geometry
    n_pixels: int
    sum_prob: float
    max_prob: float
    type_counts: np.ndarray | None = None  # pixels per change type (index 0 unused), typed models only

    @property
    def majority_type(self) -> int:
        """The region's most frequent change type (0 when the model has none)."""
        if self.type_counts is None or self.type_counts[1:].sum() == 0:
            return 0
        return int(np.argmax(self.type_counts[1:]) + 1)


@dataclass
class _Piece:
    geometry: shapely.Geometry
    n: int
    s: float
    m: float
    t: np.ndarray | None = None


@dataclass
class StripPolygonizer:
    """Feed full-width strips top to bottom with :meth:`add`; collect finished :class:`Region` s."""

    _parent: dict[int, int] = field(default_factory=dict)
    _pieces: dict[int, _Piece] = field(default_factory=dict)
    _bottom: np.ndarray | None = None  # global piece ids along the last strip's bottom row (0 = none)
    _next_id: int = 1

    def add(self, row_off: int, mask: np.ndarray, prob: np.ndarray, types: np.ndarray | None = None,
            n_types: int = 0) -> list[Region]:
        """Add the strip whose first grid row is ``row_off``; return the regions it finished.

        With ``types`` (uint8, 1..n_types), each region also counts its pixels per change type.
        """
        labels, n = ndimage.label(mask)
        if n:
            inside = labels > 0
            lab, p = labels[inside], prob[inside]
            counts = np.bincount(lab, minlength=n + 1)[1:]
            sums = np.bincount(lab, weights=p, minlength=n + 1)[1:]
            maxs = np.full(n + 1, -np.inf)
            np.maximum.at(maxs, lab, p)
            maxs = maxs[1:]
            tcounts = None
            if types is not None:
                m = n_types + 1
                flat = lab.astype(np.int64) * m + np.minimum(types[inside], n_types)
                tcounts = np.bincount(flat, minlength=(n + 1) * m).reshape(n + 1, m)[1:]
            geoms: dict[int, list] = {}
            shapes = rasterio.features.shapes(labels.astype(np.int32), mask=inside, connectivity=4,
                                              transform=Affine.translation(0, row_off))
            for geom, value in shapes:
                geoms.setdefault(int(value), []).append(shapely.geometry.shape(geom))
            base = self._next_id - 1
            for lab, parts in geoms.items():
                gid = base + lab
                geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
                self._pieces[gid] = _Piece(geom, int(counts[lab - 1]), float(sums[lab - 1]), float(maxs[lab - 1]),
                                           None if tcounts is None else tcounts[lab - 1])
                self._parent[gid] = gid
            top = np.where(labels[0] > 0, labels[0] + base, 0)
            if self._bottom is not None:
                both = (self._bottom > 0) & (top > 0)
                for a, b in set(zip(self._bottom[both].tolist(), top[both].tolist())):
                    self._union(a, b)
            bottom = np.where(labels[-1] > 0, labels[-1] + base, 0)
            self._next_id += n
        else:
            bottom = np.zeros(mask.shape[1], dtype=np.int64)
        self._bottom = bottom
        open_roots = {self._find(int(g)) for g in np.unique(bottom[bottom > 0])}
        return self._finish(lambda root: root not in open_roots)

    def close(self) -> list[Region]:
        """Finish every region still open (after the last strip)."""
        self._bottom = None
        return self._finish(lambda root: True)

    def _finish(self, done) -> list[Region]:
        groups: dict[int, list[int]] = {}
        for gid in self._pieces:
            root = self._find(gid)
            if done(root):
                groups.setdefault(root, []).append(gid)
        regions = []
        for root, members in groups.items():
            pieces = [self._pieces.pop(g) for g in members]
            for g in members:
                del self._parent[g]
            geom = pieces[0].geometry if len(pieces) == 1 else shapely.union_all([p.geometry for p in pieces])
            tc = None if pieces[0].t is None else np.sum([p.t for p in pieces], axis=0)
            regions.append(Region(geom, sum(p.n for p in pieces), sum(p.s for p in pieces),
                                  max(p.m for p in pieces), tc))
        return regions

    def _find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)


def regions_to_frame(regions: list[Region], transform: Affine, crs, min_area_m2: float = 0.0,
                     simplify_px: float = 1.0):
    """Finished regions as a GeoDataFrame in ``crs``: simplified to pixel size, valid, measured in metres.

    Columns: ``area_m2``, ``perim_m``, ``mean_prob``, ``max_prob`` (ids are given by the caller,
    in output order), and ``type`` (the majority change type) when the regions carry types.
    Regions smaller than ``min_area_m2`` are dropped.
    """
    import geopandas as gpd


    if not regions:
        return gpd.GeoDataFrame({"area_m2": [], "perim_m": [], "mean_prob": [], "max_prob": []},
                                geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    geoms = np.array([r.geometry for r in regions], dtype=object)
    # drop the collinear vertices strip borders leave, and start every ring at a canonical vertex,
    # so the simplified outline is the same however the region was cut into strips
    geoms = shapely.normalize(shapely.simplify(geoms, 0.0))
    if simplify_px > 0:
        geoms = shapely.simplify(geoms, simplify_px, preserve_topology=True)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    geoms = shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = [polygonal_part(g) or shapely.Polygon() for g in repair(geoms[bad])]
    area, perim = areas_perimeters_m(geoms, crs)
    n = np.array([r.n_pixels for r in regions], dtype=np.float64)
    frame = gpd.GeoDataFrame({
        "area_m2": area.round(2),
        "perim_m": perim.round(2),
        "mean_prob": (np.array([r.sum_prob for r in regions]) / np.maximum(n, 1)).round(4),
        "max_prob": np.array([r.max_prob for r in regions]).round(4),
    }, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)
    if regions[0].type_counts is not None:
        frame["type"] = np.array([r.majority_type for r in regions], dtype=np.int32)
    keep = (frame["area_m2"] >= min_area_m2) & ~frame.geometry.is_empty
    return frame[keep.to_numpy()].reset_index(drop=True)

