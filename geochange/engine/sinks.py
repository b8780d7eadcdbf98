"""Consumers of the engine's strips: the output rasters, the polygons, the change statistics."""

from __future__ import annotations

import numpy as np

from geochange.engine.fixups import Correction, MaskFixups
from geochange.engine.polygons import BorderPieces, StripPolygonizer, regions_to_frame
from geochange.engine.regions import RegionRule, decide
from geochange.engine.sliding import Strip
from geochange.geometry import GroundScale
from geochange.io.align import Grid
from geochange.io.rasters import RasterWriter
from geochange.io.vectors import VectorWriter

PROB_NODATA = -1.0
MASK_NODATA = 255


def change_mask(strip: Strip, threshold: float) -> np.ndarray:
    """uint8 mask of a strip: 1 changed (a candidate: ``prob >= threshold``), 0 unchanged, 255 nodata."""
    mask = strip.candidates(threshold).view(np.uint8).copy()
    if not strip.all_valid:
        mask[~strip.valid] = MASK_NODATA
    return mask


def change_type(strip: Strip, threshold: float) -> np.ndarray:
    """uint8 change types of a strip: 1..K where changed, 0 unchanged, 255 nodata."""
    types = np.where(strip.candidates(threshold), strip.types, 0).astype(np.uint8, copy=False)
    if not strip.all_valid:
        types[~strip.valid] = MASK_NODATA
    return types


class RasterSink:
    """Writes ``change_probability.tif`` (float32, nodata -1), ``change_mask.tif`` (uint8, nodata 255)
    and, for models that tell change types apart, ``change_type.tif`` (uint8, nodata 255).

    The mask and types are the candidates (``threshold`` is the rule's ``low``); the region decisions
    are burned into them at the end (``engine.fixups``).
    """

    def __init__(self, prob: RasterWriter, mask: RasterWriter, threshold: float,
                 types: RasterWriter | None = None) -> None:
        self.prob, self.mask, self.threshold, self.types = prob, mask, threshold, types

    def write(self, strip: Strip) -> None:
        prob = strip.prob if strip.all_valid else np.where(strip.valid, strip.prob, np.float32(PROB_NODATA))
        self.prob.write_rows(strip.row_off, prob.astype(np.float32, copy=False))
        self.mask.write_rows(strip.row_off, change_mask(strip, self.threshold))
        if self.types is not None and strip.types is not None:
            self.types.write_rows(strip.row_off, change_type(strip, self.threshold))


class PolygonSink:
    """Polygonises candidate pixels strip by strip, decides each finished region by ``rule``, streams
    those kept to a VectorWriter and records what it drops or fills in ``fixups``."""

    def __init__(self, writer: VectorWriter, grid: Grid, rule: RegionRule, fixups: MaskFixups,
                 n_types: int = 0, hold_top: bool = False) -> None:
        self.writer, self.grid, self.rule, self.fixups = writer, grid, rule, fixups
        self.scale = fixups.scale
        self.n_types = n_types
        self.polygonizer = StripPolygonizer(hold_top=hold_top)

    def write(self, strip: Strip) -> None:
        mask = strip.candidates(self.rule.low)
        types = strip.types if self.n_types else None
        areas = self.scale.row_areas(strip.row_off, strip.prob.shape[0])
        self._publish(self.polygonizer.add(strip.row_off, mask, strip.prob, types, self.n_types, areas))

    def close(self) -> int:
        """Finish the regions still open; returns the number of polygons written."""
        self._publish(self.polygonizer.close())
        return self.writer.count

    def export(self) -> BorderPieces:
        """A block's end: its regions touching its first or last row, left for the assembly to join
        (and decide)."""
        return self.polygonizer.export()

    def attach(self, border: BorderPieces) -> None:
        """Assembly: join a block's border pieces to the regions open above them."""
        if len(border.top):
            self._publish(self.polygonizer.attach(border))

    def _publish(self, regions) -> None:
        if not regions:   # most strips finish none: no decision, no frame to build
            return
        decision = decide(regions, self.rule, self.scale)
        self.fixups.record(decision)
        if not decision.kept:
            return
        frame = regions_to_frame(decision.kept, self.grid.transform, self.grid.crs, self.scale)
        if len(frame):
            frame.insert(0, "id", np.arange(self.writer.count + 1, self.writer.count + 1 + len(frame)))
            self.writer.write(frame)


class StatsSink:
    """Counts valid and changed pixels and the changed area in m² (per-row ground pixel areas):
    the candidates (``prob >= threshold``, the rule's ``low``), then :meth:`correct` ed by the
    region decisions burned into the mask."""

    def __init__(self, scale: GroundScale, threshold: float) -> None:
        self.scale, self.threshold = scale, threshold
        self.valid_pixels = 0
        self.changed_pixels = 0
        self.changed_area_m2 = 0.0
        self.regions_dropped = 0
        self.holes_filled = 0

    def write(self, strip: Strip) -> None:
        per_row = np.count_nonzero(strip.candidates(self.threshold), axis=1)
        self.valid_pixels += strip.valid.size if strip.all_valid else int(np.count_nonzero(strip.valid))
        self.changed_pixels += int(per_row.sum())
        areas = self.scale.row_areas(strip.row_off, strip.prob.shape[0])
        self.changed_area_m2 += float((per_row * areas).sum())

    def correct(self, correction: Correction, fixups: MaskFixups) -> None:
        """Account for the fix-ups ``fixups`` burned into the mask (``correction``: what they moved)."""
        self.changed_pixels += correction.pixels
        self.changed_area_m2 += correction.area_m2
        self.regions_dropped += fixups.dropped
        self.holes_filled += fixups.filled

    def counts(self) -> dict:
        """The unrounded counts, for a block to hand to the assembly (:meth:`merge`)."""
        return {"valid_pixels": self.valid_pixels, "changed_pixels": self.changed_pixels,
                "changed_area_m2": self.changed_area_m2, "regions_dropped": self.regions_dropped,
                "holes_filled": self.holes_filled}

    def merge(self, counts: dict) -> None:
        """Add a block's :meth:`counts`."""
        self.valid_pixels += counts["valid_pixels"]
        self.changed_pixels += counts["changed_pixels"]
        self.changed_area_m2 += counts["changed_area_m2"]
        self.regions_dropped += counts["regions_dropped"]
        self.holes_filled += counts["holes_filled"]

    def as_dict(self) -> dict:
        return {"valid_pixels": self.valid_pixels, "changed_pixels": self.changed_pixels,
                "changed_fraction": round(self.changed_pixels / max(self.valid_pixels, 1), 6),
                "changed_area_m2": round(self.changed_area_m2, 2), "regions_dropped": self.regions_dropped,
                "holes_filled": self.holes_filled}
