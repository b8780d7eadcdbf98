"""Consumers of the engine's strips: the output rasters, the polygons, the change statistics."""

from __future__ import annotations

import numpy as np

from geochange.engine.polygons import BorderPieces, StripPolygonizer, regions_to_frame
from geochange.engine.sliding import Strip
from geochange.geometry import pixel_areas_m2
from geochange.io.align import Grid
from geochange.io.rasters import RasterWriter
from geochange.io.vectors import VectorWriter

PROB_NODATA = -1.0
MASK_NODATA = 255


def change_mask(strip: Strip, threshold: float) -> np.ndarray:
    """uint8 mask of a strip: 1 changed, 0 unchanged, 255 nodata."""
    mask = (strip.prob >= threshold).astype(np.uint8)
    mask[~strip.valid] = MASK_NODATA
    return mask


def change_type(strip: Strip, threshold: float) -> np.ndarray:
    """uint8 change types of a strip: 1..K where changed, 0 unchanged, 255 nodata."""
    types = np.where(strip.prob >= threshold, strip.types, 0).astype(np.uint8)
    types[~strip.valid] = MASK_NODATA
    return types


class RasterSink:
    """Writes ``change_probability.tif`` (float32, nodata -1), ``change_mask.tif`` (uint8, nodata 255)
    and, for models that tell change types apart, ``change_type.tif`` (uint8, nodata 255)."""

    def __init__(self, prob: RasterWriter, mask: RasterWriter, threshold: float,
                 types: RasterWriter | None = None) -> None:
        self.prob, self.mask, self.threshold, self.types = prob, mask, threshold, types

    def write(self, strip: Strip) -> None:
        self.prob.write_rows(strip.row_off, np.where(strip.valid, strip.prob, PROB_NODATA).astype(np.float32))
        self.mask.write_rows(strip.row_off, change_mask(strip, self.threshold))
        if self.types is not None and strip.types is not None:
            self.types.write_rows(strip.row_off, change_type(strip, self.threshold))


class PolygonSink:
    """Polygonises changed pixels strip by strip and streams finished regions to a VectorWriter."""

    def __init__(self, writer: VectorWriter, grid: Grid, threshold: float, min_area_m2: float = 0.0,
                 n_types: int = 0, hold_top: bool = False) -> None:
        self.writer, self.grid, self.threshold, self.min_area = writer, grid, threshold, min_area_m2
        self.n_types = n_types
        self.polygonizer = StripPolygonizer(hold_top=hold_top)

    def write(self, strip: Strip) -> None:
        mask = strip.valid & (strip.prob >= self.threshold)
        types = strip.types if self.n_types else None
        self._publish(self.polygonizer.add(strip.row_off, mask, strip.prob, types, self.n_types))

    def close(self) -> int:
        """Finish the regions still open; returns the number of polygons written."""
        self._publish(self.polygonizer.close())
        return self.writer.count

    def export(self) -> BorderPieces:
        """A block's end: its regions touching its first or last row, left for the assembly to join."""
        return self.polygonizer.export()

    def attach(self, border: BorderPieces) -> None:
        """Assembly: join a block's border pieces to the regions open above them."""
        if len(border.top):
            self._publish(self.polygonizer.attach(border))

    def append(self, frame) -> None:
        """Assembly: polygons a block finished on its own (their ``id`` is given anew, in output order)."""
        if len(frame):
            frame = frame.drop(columns="id")
            frame.insert(0, "id", np.arange(self.writer.count + 1, self.writer.count + 1 + len(frame)))
            self.writer.write(frame)

    def _publish(self, regions) -> None:
        frame = regions_to_frame(regions, self.grid.transform, self.grid.crs, self.min_area)
        if len(frame):
            frame.insert(0, "id", np.arange(self.writer.count + 1, self.writer.count + 1 + len(frame)))
            self.writer.write(frame)


class StatsSink:
    """Counts valid and changed pixels and the changed area in m² (per-row pixel areas)."""

    def __init__(self, grid: Grid, threshold: float) -> None:
        self.grid, self.threshold = grid, threshold
        self.valid_pixels = 0
        self.changed_pixels = 0
        self.changed_area_m2 = 0.0

    def write(self, strip: Strip) -> None:
        changed = strip.valid & (strip.prob >= self.threshold)
        per_row = changed.sum(axis=1)
        self.valid_pixels += int(strip.valid.sum())
        self.changed_pixels += int(per_row.sum())
        areas = pixel_areas_m2(self.grid.transform, self.grid.crs, strip.row_off, strip.prob.shape[0])
        self.changed_area_m2 += float((per_row * areas).sum())

    def counts(self) -> dict:
        """The unrounded counts, for a block to hand to the assembly (:meth:`merge`)."""
        return {"valid_pixels": self.valid_pixels, "changed_pixels": self.changed_pixels,
                "changed_area_m2": self.changed_area_m2}

    def merge(self, counts: dict) -> None:
        """Add a block's :meth:`counts`."""
        self.valid_pixels += counts["valid_pixels"]
        self.changed_pixels += counts["changed_pixels"]
        self.changed_area_m2 += counts["changed_area_m2"]

    def as_dict(self) -> dict:
        return {"valid_pixels": self.valid_pixels, "changed_pixels": self.changed_pixels,
                "changed_fraction": round(self.changed_pixels / max(self.valid_pixels, 1), 6),
                "changed_area_m2": round(self.changed_area_m2, 2)}
