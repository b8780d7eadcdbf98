"""Polygons of changed regions, built strip by strip and dissolved exactly across strip borders.

Each strip's mask is labelled into 4-connected components and polygonised (rasterio.features.shapes,
also 4-connected) in whole-grid pixel coordinates, so shared edges have identical integer vertices.
Components that meet across a strip border (same column, vertically adjacent pixels) are joined by
union-find; a region is finished, dissolved (shapely.union_all) and handed on as soon as no part of
it touches the newest strip's bottom row. Memory is bounded by the regions still open at the front.

A block of a distributed run polygonises its own rows with ``hold_top=True`` and hands the regions
touching its first or last row to the assembly as :class:`BorderPieces`; the assembly feeds those
(:meth:`StripPolygonizer.attach`) and the seam strips between blocks through one polygonizer, which
joins them exactly as a single pass would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from geochange.geometry import GroundScale, polygonal_part, repair


@dataclass
class Region:
    """A finished changed region in grid pixel coordinates, with its probability statistics."""

    geometry: shapely.Geometry
    n_pixels: int
    sum_prob: float
    max_prob: float
    type_counts: np.ndarray | None = None  # pixels per change type (index 0 unused), typed models only
    area: float = 0.0  # ground area of its pixels (m², or pixels when the polygonizer had no row areas)

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
    a: float = 0.0


@dataclass
class BorderPieces:
    """A block's regions that touch its first or last row, for the assembly to join across the borders.

    ``top`` and ``bottom``: per column of the block's first and last row, 1 + the index of the piece
    there (0: none). Geometries are in grid pixel coordinates.
    """

    top: np.ndarray
    bottom: np.ndarray
    pieces: list[Region]

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (geometries as WKB), for ``np.savez``."""
        wkb = [shapely.to_wkb(p.geometry) for p in self.pieces]
        out = {"top": self.top, "bottom": self.bottom,
               "wkb": np.frombuffer(b"".join(wkb), np.uint8),
               "wkb_ends": np.cumsum([len(b) for b in wkb], dtype=np.int64),
               "n": np.array([p.n_pixels for p in self.pieces], np.int64),
               "sum": np.array([p.sum_prob for p in self.pieces], np.float64),
               "max": np.array([p.max_prob for p in self.pieces], np.float64),
               "area": np.array([p.area for p in self.pieces], np.float64)}
        if self.pieces and self.pieces[0].type_counts is not None:
            out["types"] = np.stack([p.type_counts for p in self.pieces])
        return out

    @classmethod
    def from_arrays(cls, a) -> "BorderPieces":
        ends = a["wkb_ends"].tolist()
        raw = a["wkb"].tobytes()
        geoms = [shapely.from_wkb(raw[s:e]) for s, e in zip([0] + ends[:-1], ends)]
        types = a["types"] if "types" in a else None
        pieces = [Region(g, int(n), float(s), float(m), None if types is None else types[i], float(area))
                  for i, (g, n, s, m, area) in enumerate(zip(geoms, a["n"], a["sum"], a["max"], a["area"]))]
        return cls(a["top"], a["bottom"], pieces)


#: up to this many components a strip is polygonised component by component, each in its bounding box
#: (GDAL's polygoniser scans every pixel it is given: a few regions in a wide strip cost the strip)
FEW_COMPONENTS = 64


def _shapes(labels: np.ndarray, inside: np.ndarray, n: int, row_off: int):
    """(GeoJSON-like geometry, label) of the ``n`` labelled components (4-connected), in grid pixel
    coordinates: only the pixels near them are scanned."""
    labels = labels.astype(np.int32, copy=False)
    if n <= FEW_COMPONENTS:
        for k, (rs, cs) in enumerate(ndimage.find_objects(labels), start=1):
            part = labels[rs, cs]
            yield from rasterio.features.shapes(part, mask=part == k, connectivity=4,
                                                transform=Affine.translation(cs.start, row_off + rs.start))
        return
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    yield from rasterio.features.shapes(labels[box], mask=inside[box], connectivity=4,
                                        transform=Affine.translation(int(cols[0]), row_off + int(rows[0])))


@dataclass
class StripPolygonizer:
    """Feed full-width strips top to bottom with :meth:`add`; collect finished :class:`Region` s.

    ``hold_top``: keep the regions touching the first strip's top row open until :meth:`export`
    (a block's regions that may continue into the seam above it).
    """

    hold_top: bool = False
    _held: set[int] = field(default_factory=set)
    _top: np.ndarray | None = None  # global piece ids along the first strip's top row (hold_top only)
    _parent: dict[int, int] = field(default_factory=dict)
    _pieces: dict[int, _Piece] = field(default_factory=dict)
    _bottom: np.ndarray | None = None  # global piece ids along the last strip's bottom row (0 = none)
    _next_id: int = 1

    def add(self, row_off: int, mask: np.ndarray, prob: np.ndarray, types: np.ndarray | None = None,
            n_types: int = 0, row_areas: np.ndarray | None = None) -> list[Region]:
        """Add the strip whose first grid row is ``row_off``; return the regions it finished.

        With ``types`` (uint8, 1..n_types), each region also counts its pixels per change type;
        with ``row_areas`` (the ground area of a pixel in each of the strip's rows), each region
        sums the areas of its pixels (else its area is its pixel count).
        """
        labels, n = ndimage.label(mask)
        pieces: list[_Piece] = []
        if n:
            inside = mask if mask.dtype == bool else labels > 0
            lab, p = labels[inside], prob[inside]
            counts = np.bincount(lab, minlength=n + 1)[1:]
            sums = np.bincount(lab, weights=p, minlength=n + 1)[1:]
            maxs = np.full(n + 1, -np.inf)
            np.maximum.at(maxs, lab, p)
            maxs = maxs[1:]
            if row_areas is None:
                areas = counts.astype(np.float64)
            else:
                # lab lists the pixels row by row: each carries its row's area
                per_pixel = np.repeat(np.asarray(row_areas, np.float64), np.count_nonzero(inside, axis=1))
                areas = np.bincount(lab, weights=per_pixel, minlength=n + 1)[1:]
            tcounts = None
            if types is not None:
                m = n_types + 1
                flat = lab.astype(np.int64) * m + np.minimum(types[inside], n_types)
                tcounts = np.bincount(flat, minlength=(n + 1) * m).reshape(n + 1, m)[1:]
            geoms: dict[int, list] = {}
            for geom, value in _shapes(labels, inside, n, row_off):
                geoms.setdefault(int(value), []).append(shapely.geometry.shape(geom))
            for k in range(1, n + 1):
                parts = geoms[k]
                geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
                pieces.append(_Piece(geom, int(counts[k - 1]), float(sums[k - 1]), float(maxs[k - 1]),
                                     None if tcounts is None else tcounts[k - 1], float(areas[k - 1])))
        return self._attach(pieces, labels[0], labels[-1])

    def attach(self, border: BorderPieces) -> list[Region]:
        """Add a block's border pieces, as if its rows were one strip; return the regions this finishes."""
        pieces = [_Piece(r.geometry, r.n_pixels, r.sum_prob, r.max_prob, r.type_counts, r.area)
                  for r in border.pieces]
        return self._attach(pieces, border.top, border.bottom)

    def _attach(self, pieces: list[_Piece], top: np.ndarray, bottom: np.ndarray) -> list[Region]:
        """Register pieces numbered 1..n by the ``top``/``bottom`` row labels, join them to the open ones."""
        base = self._next_id - 1
        for k, piece in enumerate(pieces, start=1):
            self._pieces[base + k] = piece
            self._parent[base + k] = base + k
        top = np.where(top > 0, top + base, 0)
        if self._bottom is not None:
            both = (self._bottom > 0) & (top > 0)
            for a, b in set(zip(self._bottom[both].tolist(), top[both].tolist())):
                self._union(a, b)
        elif self.hold_top and self._top is None:
            self._top = top
            self._held = {int(g) for g in np.unique(top[top > 0])}
        bottom = np.where(bottom > 0, bottom + base, 0)
        self._next_id += len(pieces)
        self._bottom = bottom
        open_roots = {self._find(int(g)) for g in np.unique(bottom[bottom > 0])}
        open_roots |= {self._find(g) for g in self._held}
        return self._finish(lambda root: root not in open_roots)

    def export(self) -> BorderPieces:
        """The regions still open (touching the first or the last row), with the two rows' labels."""
        root_of = {gid: self._find(gid) for gid in self._pieces}
        roots, regions = self._finish_roots(lambda root: True)
        index = {root: i + 1 for i, root in enumerate(roots)}

        def row_labels(ids: np.ndarray | None) -> np.ndarray:
            if ids is None:
                return np.zeros(0 if self._bottom is None else len(self._bottom), np.int64)
            return np.array([index[root_of[g]] if g > 0 else 0 for g in ids.tolist()], np.int64)

        return BorderPieces(row_labels(self._top), row_labels(self._bottom), regions)

    def close(self) -> list[Region]:
        """Finish every region still open (after the last strip)."""
        self._bottom = None
        return self._finish(lambda root: True)

    def _finish(self, done) -> list[Region]:
        return self._finish_roots(done)[1]

    def _finish_roots(self, done) -> tuple[list[int], list[Region]]:
        """Dissolve and remove the regions whose root ``done`` accepts; their roots and regions, in order."""
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
                                  max(p.m for p in pieces), tc, sum(p.a for p in pieces)))
        return list(groups), regions

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


def regions_to_frame(regions: list[Region], transform: Affine, crs, scale: GroundScale | None = None):
    """Finished regions as a GeoDataFrame in ``crs``: exact pixel outlines, valid, measured on the ground.

    Columns: ``area_m2`` (the regions' ``area``: the ground areas of their pixels), ``perim_m``
    (ground length of every ring, by ``scale``: by default that of the grid's origin), ``mean_prob``,
    ``max_prob`` (ids are given by the caller, in output order), and ``type`` (the majority change
    type) when the regions carry types.
    """
    import geopandas as gpd

    if not regions:
        return gpd.GeoDataFrame({"area_m2": [], "perim_m": [], "mean_prob": [], "max_prob": []},
                                geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    geoms = np.array([r.geometry for r in regions], dtype=object)
    # drop the collinear vertices strip borders leave, and start every ring at a canonical vertex,
    # so the outline is the same however the region was cut into strips; outlines stay exact
    geoms = shapely.normalize(shapely.simplify(geoms, 0.0))
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    geoms = shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = [polygonal_part(g) or shapely.Polygon() for g in repair(geoms[bad])]
    scale = scale or GroundScale(transform, crs)
    n = np.array([r.n_pixels for r in regions], dtype=np.float64)
    frame = gpd.GeoDataFrame({
        "area_m2": np.array([r.area for r in regions]).round(2),
        "perim_m": scale.perimeters(geoms).round(2),
        "mean_prob": (np.array([r.sum_prob for r in regions]) / np.maximum(n, 1)).round(4),
        "max_prob": np.array([r.max_prob for r in regions]).round(4),
    }, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)
    if regions[0].type_counts is not None:
        frame["type"] = np.array([r.majority_type for r in regions], dtype=np.int32)
    return frame[~frame.geometry.is_empty.to_numpy()].reset_index(drop=True)
