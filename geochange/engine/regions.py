"""Which candidate regions are change: the one decision the mask, the statistics and the polygons share.

A candidate region is a 4-connected component of valid pixels with ``prob >= low``. It is kept when
it reaches the model's threshold somewhere (``max_prob >= high``: hysteresis, as
``skimage.filters.apply_hysteresis_threshold`` region by region; ``low == high`` is none) and its
ground area is at least the minimum mapping unit (MMU). The holes of a kept region (the unchanged
areas it encloses) smaller than the MMU are filled. The polygon sink decides each region when it is
finished; what it drops or fills is burned into the mask at the end (``engine.fixups``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import shapely

from geochange.engine.polygons import Region
from geochange.geometry import GroundScale

#: the default MMU: this many pixels (a 3x3 block: 9 beat 4 on mean kappa over the real scenes of
#: benchmarks/bench_accuracy.py, docs/models.md), and at least this many m² (a garden shed: on
#: sub-metre imagery a few pixels are no object an analyst maps)
MMU_PIXELS = 9
MMU_M2 = 10.0


def default_min_area_m2(pixel_area_m2: float) -> float:
    """The MMU when none is given: ``MMU_PIXELS`` pixels of ``pixel_area_m2``, at least ``MMU_M2``."""
    return max(MMU_PIXELS * pixel_area_m2, MMU_M2)


@dataclass(frozen=True)
class RegionRule:
    """Candidates are pixels with ``prob >= low``; a region is kept if ``max_prob >= high`` and its area
    is >= ``min_area_m2``; its holes under ``min_area_m2`` are filled."""

    low: float
    high: float
    min_area_m2: float = 0.0

    @classmethod
    def at(cls, threshold: float) -> "RegionRule":
        """Pixels over ``threshold``, every region kept: no hysteresis, no MMU."""
        return cls(threshold, threshold, 0.0)

    def as_dict(self) -> dict:
        return {"min_area_m2": round(self.min_area_m2, 4), "hysteresis_low": self.low}


@dataclass
class Decision:
    """A batch of finished regions decided: those kept (small holes filled, ``area`` grown by them),
    the outlines of those dropped, and the holes filled with the change type to give them."""

    kept: list[Region] = field(default_factory=list)
    dropped: list[shapely.Geometry] = field(default_factory=list)
    filled: list[shapely.Geometry] = field(default_factory=list)
    filled_types: list[int] = field(default_factory=list)


def decide(regions: list[Region], rule: RegionRule, scale: GroundScale) -> Decision:
    """Apply ``rule`` to finished regions (grid pixel coordinates, ``area`` in m²)."""
    out = Decision()
    if not regions:
        return out
    geoms = np.array([r.geometry for r in regions], dtype=object)
    keep = (np.array([r.max_prob for r in regions]) >= rule.high) & \
        (np.array([r.area for r in regions]) >= rule.min_area_m2)
    holed = keep & (rule.min_area_m2 > 0) & ((shapely.get_num_interior_rings(geoms) > 0)
                                              | (shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON))
    out.dropped = list(geoms[~keep])
    for region, k, h in zip(regions, keep, holed):
        if h:
            geom, holes, hole_area = _fill_small_holes(region.geometry, rule.min_area_m2, scale)
            if holes:
                region = replace(region, geometry=geom, area=region.area + hole_area)
                out.filled += holes
                out.filled_types += [max(region.majority_type, 1)] * len(holes)
        if k:
            out.kept.append(region)
    return out


def _fill_small_holes(geom: shapely.Geometry, min_area_m2: float,
                      scale: GroundScale) -> tuple[shapely.Geometry, list[shapely.Geometry], float]:
    """``geom`` without its holes under ``min_area_m2``; those holes (as polygons) and their area."""
    parts, filled, area = [], [], 0.0
    for part in shapely.get_parts(geom):
        holes = np.array([shapely.Polygon(r) for r in part.interiors], dtype=object)
        if not len(holes):
            parts.append(part)
            continue
        areas = scale.areas_px(holes)
        small = areas < min_area_m2
        filled += list(holes[small])
        area += float(areas[small].sum())
        parts.append(shapely.Polygon(part.exterior, [h.exterior for h in holes[~small]]))
    return (parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)), filled, area
