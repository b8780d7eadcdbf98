"""Polygons built strip by strip equal those of the whole mask; frames measured in metres."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from geochange.engine.polygons import Region, StripPolygonizer, regions_to_frame
from geochange.geometry import GroundScale, pixel_areas_m2

UTM33 = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)


# ---------------------------------------------------------------- masks

def shapes_mask() -> np.ndarray:
    """Hand-made regions: a U, a ring with a hole, a spiral, diagonal neighbours, bars on strip borders."""
    m = np.zeros((64, 40), bool)
    # U: two arms that only join at the bottom (rows 2..20)
    m[2:21, 3] = True
    m[2:21, 9] = True
    m[20, 3:10] = True
    # inverted U (arch): one top that splits into two arms that never rejoin
    m[2, 14:22] = True
    m[2:12, 14] = True
    m[2:15, 21] = True
    # square ring with a hole, 2 px thick
    m[24:36, 2:14] = True
    m[26:34, 4:12] = False
    # spiral
    sp = np.zeros((15, 15), bool)
    sp[0, :] = sp[:, 14] = sp[14, :] = sp[2:, 0] = True
    sp[2, 0:12] = sp[2:12, 12] = sp[12, 2:13] = sp[4:12, 2] = True
    sp[4, 2:10] = sp[4:10, 10] = sp[10, 4:11] = sp[6:10, 4] = True
    sp[6, 4:8] = sp[6:9, 8] = True
    m[22:37, 18:33] = sp
    # two pixels touching only diagonally, within a strip and across every strip height's border
    m[40, 2] = m[41, 3] = True
    m[41, 6] = m[42, 7] = True
    m[20, 35] = m[21, 36] = True    # row 20/21: a border for heights 1, 3 and 7
    m[6, 30] = m[7, 31] = True      # 6/7: a border for heights 1 and 7
    # horizontal bars lying exactly on strip borders (rows 20, 21, 27, 28 with h=7; 41/42 with h=3, 7)
    m[27:29, 34:39] = True
    m[44:46, 10:30] = True
    # a comb: one spine at the bottom joins many teeth coming from above
    m[48:60, 2:38:3] = True
    m[59, 2:36] = True
    # regions touching the last row and both side columns
    m[61:64, 0] = True
    m[63, 0:5] = True
    m[62:64, 39] = True
    # a checkerboard patch: every pixel its own region (only diagonal contacts)
    cb = (np.add.outer(np.arange(6), np.arange(6)) % 2 == 0)
    m[48:54, 0] = False
    m[38:44, 30:36] = cb
    return m


def random_mask(seed: int, shape=(90, 70)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return field > 0.05


def prob_for(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(mask, rng.uniform(0.5, 1.0, mask.shape), rng.uniform(0, 0.5, mask.shape)).astype(np.float32)


# ---------------------------------------------------------------- helpers

def whole_regions(mask: np.ndarray, prob: np.ndarray) -> list[Region]:
    """Reference: label and polygonise the whole mask at once (4-connectivity)."""
    labels, n = ndimage.label(mask)
    parts: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    regions = []
    for lab in range(1, n + 1):
        sel = labels == lab
        regions.append(Region(shapely.union_all(parts[lab]), int(sel.sum()), float(prob[sel].astype(np.float64).sum()),
                              float(prob[sel].max())))
    return regions


def strip_heights(spec, height: int) -> list[int]:
    if spec == "whole":
        return [height]
    cycle = [spec] if isinstance(spec, int) else list(spec)
    out, i = [], 0
    while sum(out) < height:
        out.append(min(cycle[i % len(cycle)], height - sum(out)))
        i += 1
    return out


def by_strips(mask: np.ndarray, prob: np.ndarray, spec, scale: GroundScale | None = None) -> tuple[list[Region], list[int]]:
    """Polygonise strip by strip; also return, per region, the index of the add() call that released it.
    With ``scale``, regions sum the ground areas of their pixels."""
    poly = StripPolygonizer()
    regions, released = [], []
    row = 0
    for k, h in enumerate(strip_heights(spec, mask.shape[0])):
        areas = None if scale is None else scale.row_areas(row, h)
        got = poly.add(row, mask[row:row + h], prob[row:row + h], row_areas=areas)
        regions += got
        released += [k] * len(got)
        row += h
    last = poly.close()
    regions += last
    released += [None] * len(last)
    assert not poly._pieces and not poly._parent   # nothing left open
    return regions, released


def assert_same_regions(got: list[Region], ref: list[Region]) -> None:
    assert len(got) == len(ref)
    unmatched = list(range(len(ref)))
    for g in got:
        assert g.geometry.is_valid
        assert g.geometry.area == g.n_pixels == g.area  # one unit square per pixel
        matches = [i for i in unmatched if g.geometry.equals(ref[i].geometry)]
        assert len(matches) == 1, f"no single whole-mask region equal to {g.geometry.wkt}"
        r = ref[matches[0]]
        unmatched.remove(matches[0])
        assert shapely.symmetric_difference(g.geometry, r.geometry).area == 0
        assert g.n_pixels == r.n_pixels
        assert g.sum_prob == pytest.approx(r.sum_prob, rel=1e-9, abs=1e-9)
        assert g.max_prob == r.max_prob
    assert not unmatched


HEIGHTS = [1, 2, 3, 7, "whole", (2, 5, 1, 4, 3, 11)]


# ---------------------------------------------------------------- StripPolygonizer

@pytest.mark.parametrize("spec", HEIGHTS)
def test_strips_match_whole_mask_on_hand_made_shapes(spec):
    mask = shapes_mask()
    prob = prob_for(mask)
    ref = whole_regions(mask, prob)
    got, _ = by_strips(mask, prob, spec)
    assert_same_regions(got, ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spec", HEIGHTS)
def test_strips_match_whole_mask_on_random_masks(seed, spec):
    mask = random_mask(seed)
    prob = prob_for(mask, seed)
    ref = whole_regions(mask, prob)
    assert len(ref) > 10
    got, _ = by_strips(mask, prob, spec)
    assert_same_regions(got, ref)


@pytest.mark.parametrize("few", [0, 10**6])
@pytest.mark.parametrize("seed", [0, 1])
def test_component_by_component_and_whole_strip_polygons_agree(seed, few, monkeypatch):
    """A strip of few components is polygonised component by component, one of many in one go: the
    regions are the same either way (holes and islands in holes included)."""
    from geochange.engine import polygons

    monkeypatch.setattr(polygons, "FEW_COMPONENTS", few)
    for mask in (random_mask(seed), shapes_mask()):
        prob = prob_for(mask, seed)
        got, _ = by_strips(mask, prob, (2, 5, 1, 4, 3, 11))
        assert_same_regions(got, whole_regions(mask, prob))


def test_u_joined_late_is_one_region_and_arch_is_one_region():
    mask = np.zeros((12, 9), bool)
    mask[0:10, 1] = mask[0:10, 6] = True
    mask[9, 1:7] = True   # the U's arms meet in row 9 only
    got, released = by_strips(mask, np.ones(mask.shape, np.float32), 3)
    assert len(got) == 1
    assert got[0].n_pixels == 10 + 10 + 4
    assert got[0].geometry.geom_type == "Polygon"
    assert released == [3]   # released by the strip after its last row (rows 9..11 are strip 3)


def test_ring_keeps_its_hole():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[3:6, 3:6] = False
    for spec in (1, 2, 3, "whole"):
        (reg,), _ = by_strips(mask, np.full(mask.shape, 0.75, np.float32), spec)
        assert reg.geometry.geom_type == "Polygon"
        assert len(reg.geometry.interiors) == 1
        assert shapely.Polygon(reg.geometry.interiors[0]).area == 9
        assert reg.geometry.area == reg.n_pixels == 49 - 9
        assert reg.sum_prob == pytest.approx(0.75 * 40)


def test_diagonal_neighbours_stay_apart_across_strip_borders():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    for spec in (1, 2, "whole"):
        got, _ = by_strips(mask, np.ones(mask.shape, np.float32), spec)
        assert len(got) == 2
        assert sorted(g.n_pixels for g in got) == [1, 1]


def test_regions_are_released_as_soon_as_they_are_finished():
    mask = np.zeros((20, 5), bool)
    mask[0:2, 0] = True      # ends inside strip 0 (rows 0..3): released by add #0
    mask[2:4, 2] = True      # touches strip 0's bottom: released by add #1 (nothing below it)
    mask[3:9, 4] = True      # spans strips 0..2, released by add #2
    mask[18:20, 1] = True    # touches the grid's last row: released by close()
    got, released = by_strips(mask, np.ones(mask.shape, np.float32), 4)
    first_col = {int(g.geometry.bounds[0]): k for g, k in zip(got, released)}
    assert first_col == {0: 0, 2: 1, 4: 2, 1: None}


def test_empty_strips_and_empty_mask():
    mask = np.zeros((10, 6), bool)
    got, _ = by_strips(mask, np.zeros(mask.shape, np.float32), 3)
    assert got == []
    mask[0:3, 2] = True      # region ending exactly on a border, then an empty strip
    mask[6:10, 1:3] = True
    got, released = by_strips(mask, np.ones(mask.shape, np.float32), 3)
    assert sorted(g.n_pixels for g in got) == [3, 8]
    assert released[0] == 1


def test_regions_are_in_grid_pixel_coordinates():
    mask = np.zeros((30, 10), bool)
    mask[17:22, 4:7] = True
    (reg,), _ = by_strips(mask, np.ones(mask.shape, np.float32), 4)
    assert reg.geometry.bounds == (4.0, 17.0, 7.0, 22.0)


# ---------------------------------------------------------------- regions_to_frame

TRANSFORM_10M = Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0)


def frame_of(mask, prob, transform, crs, spec="whole"):
    scale = GroundScale(transform, crs, mask.shape[1], mask.shape[0])
    regions, _ = by_strips(mask, prob, spec, scale)
    return regions, regions_to_frame(regions, transform, crs, scale)


def test_frame_areas_bounds_and_probabilities_in_projected_crs():
    mask = np.zeros((40, 50), bool)
    mask[5:9, 10:16] = True        # 4 x 6 rectangle: 24 px
    mask[20:30, 30:40] = True      # 10 x 10 square with a 2 x 2 hole: 96 px
    mask[24:26, 34:36] = False
    mask[35, 2] = True             # a single pixel
    prob = prob_for(mask, 5)
    regions, frame = frame_of(mask, prob, TRANSFORM_10M, UTM33, spec=3)
    assert list(frame.columns) == ["area_m2", "perim_m", "mean_prob", "max_prob", "geometry"]
    assert frame.crs == UTM33
    assert len(frame) == 3
    assert frame.geometry.is_valid.all()
    by_area = frame.sort_values("area_m2").reset_index(drop=True)
    assert by_area["area_m2"].tolist() == [100.0, 2400.0, 9600.0]
    assert by_area["perim_m"].tolist() == [40.0, 200.0, 400.0 + 80.0]
    # bounds in CRS coordinates: column c -> x = 400000 + 10 c, row r -> y = 5000000 - 10 r
    rect = by_area.geometry[1]
    assert rect.bounds == (400_100.0, 4_999_910.0, 400_160.0, 4_999_950.0)
    sq = by_area.geometry[2]
    assert sq.bounds == (400_300.0, 4_999_700.0, 400_400.0, 4_999_800.0)
    # probabilities per region
    for _, row in frame.iterrows():
        r = next(reg for reg in regions if reg.n_pixels * 100 == row["area_m2"])
        assert row["mean_prob"] == pytest.approx(r.sum_prob / r.n_pixels, abs=5e-5)
        assert row["max_prob"] == pytest.approx(r.max_prob, abs=5e-5)
    sel = np.zeros_like(mask)
    sel[5:9, 10:16] = True
    assert by_area["max_prob"][1] == pytest.approx(prob[sel].max(), abs=5e-5)
    assert by_area["mean_prob"][1] == pytest.approx(prob[sel].mean(), abs=5e-5)


def test_one_pixel_region_is_exactly_one_pixel():
    t = Affine(5.0, 0.0, 400_000.0, 0.0, -5.0, 5_000_000.0)
    mask = np.zeros((6, 6), bool)
    mask[3, 2] = True
    _, frame = frame_of(mask, np.ones(mask.shape, np.float32), t, UTM33, spec=2)
    assert frame["area_m2"].tolist() == [25.0] and frame["perim_m"].tolist() == [20.0]
    assert frame.geometry[0].equals(shapely.box(400_010, 4_999_980, 400_015, 4_999_985))


def test_frame_area_equals_pixel_count_on_random_mask():
    mask = random_mask(7, (60, 60))
    regions, frame = frame_of(mask, prob_for(mask), TRANSFORM_10M, UTM33, spec=7)
    assert len(frame) == len(regions)
    assert frame.geometry.is_valid.all()
    assert sorted(frame["area_m2"]) == sorted(100.0 * r.n_pixels for r in regions)
    x0, y0, x1, y1 = frame.total_bounds
    assert 400_000 <= x0 and x1 <= 400_600 and 4_999_400 <= y0 and y1 <= 5_000_000


def test_exact_frame_is_valid_and_independent_of_strip_height():
    mask = random_mask(11, (80, 80))
    prob = prob_for(mask)
    frames = [frame_of(mask, prob, TRANSFORM_10M, UTM33, spec=spec)[1] for spec in (1, 3, 7, "whole")]
    ref = frames[-1]
    assert ref.geometry.is_valid.all()
    assert not ref.geometry.is_empty.any()
    key = lambda f: f.assign(x=f.geometry.centroid.x, y=f.geometry.centroid.y).sort_values(["x", "y"]).reset_index(drop=True)
    ref = key(ref)
    for f in frames[:-1]:
        f = key(f)
        assert len(f) == len(ref)
        assert f.geometry.is_valid.all()
        assert all(a.equals(b) for a, b in zip(f.geometry, ref.geometry))
        np.testing.assert_allclose(f["area_m2"], ref["area_m2"])
    # outlines are exact: each polygon covers its pixels, and its area is theirs
    regions, _ = by_strips(mask, prob, "whole")
    assert sorted(ref["area_m2"]) == sorted(r.n_pixels * 100.0 for r in regions)
    np.testing.assert_allclose(ref.geometry.area, ref["area_m2"])


def test_empty_regions_give_empty_frame_with_schema():
    frame = regions_to_frame([], TRANSFORM_10M, UTM33)
    assert len(frame) == 0
    assert {"area_m2", "perim_m", "mean_prob", "max_prob"} <= set(frame.columns)
    assert frame.crs == UTM33


def test_geographic_crs_gives_geodesic_areas():
    # 0.0001 degree pixels near 45 N: about 7.9 m x 11.1 m = ~87.6 m² each
    transform = Affine(0.0001, 0.0, 15.0, 0.0, -0.0001, 45.01)
    mask = np.zeros((100, 100), bool)
    mask[10:60, 20:90] = True
    mask[70:72, 5:8] = True
    regions, frame = frame_of(mask, np.ones(mask.shape, np.float32), transform, WGS84, spec=7)
    assert frame.crs == WGS84
    assert len(frame) == 2
    assert frame.geometry.is_valid.all()
    x0, y0, x1, y1 = frame.total_bounds
    assert x0 == pytest.approx(15.0005) and x1 == pytest.approx(15.009)
    assert y1 == pytest.approx(45.009) and y0 == pytest.approx(45.0028)
    big = frame.sort_values("area_m2").iloc[-1]
    per_px = pixel_areas_m2(transform, WGS84, 10, 50)
    assert 80 < per_px.min() < per_px.max() < 95
    assert big["area_m2"] == pytest.approx(70 * per_px.sum(), rel=1e-4)
    # perimeter: 2 x (70 px of ~7.87 m + 50 px of ~11.11 m)
    assert big["perim_m"] == pytest.approx(2 * (70 * 7.87 + 50 * 11.11), rel=0.01)


def test_geographic_ring_area_excludes_its_hole():
    transform = Affine(0.0001, 0.0, 15.0, 0.0, -0.0001, 45.01)
    mask = np.zeros((30, 30), bool)
    mask[5:25, 5:25] = True
    mask[10:20, 10:20] = False
    _, frame = frame_of(mask, np.ones(mask.shape, np.float32), transform, WGS84, spec=4)
    assert len(frame) == 1
    assert frame.geometry[0].geom_type == "Polygon"
    assert len(frame.geometry[0].interiors) == 1
    expected = (mask.sum(axis=1) * pixel_areas_m2(transform, WGS84, 0, 30)).sum()
    assert frame["area_m2"][0] == pytest.approx(expected, abs=0.005)  # rounded to cm²


# ---------------------------------------------------------------- pixel_areas_m2

def test_pixel_areas_projected():
    np.testing.assert_array_equal(pixel_areas_m2(TRANSFORM_10M, UTM33, 0, 5), np.full(5, 100.0))
    t = Affine(0.5, 0.0, 500_000.0, 0.0, -0.25, 5_000_000.0)
    np.testing.assert_allclose(pixel_areas_m2(t, UTM33, 100, 3), np.full(3, 0.125))
    # a CRS in US survey feet: 1 ft pixels are ~0.0929 m²
    ft = pixel_areas_m2(Affine(1.0, 0, 0, 0, -1.0, 0), CRS.from_epsg(2264), 0, 2)
    np.testing.assert_allclose(ft, np.full(2, (1200 / 3937) ** 2), rtol=1e-9)


def test_pixel_areas_geographic():
    # 1 degree pixels from the equator to the pole
    t = Affine(1.0, 0.0, 10.0, 0.0, -1.0, 90.0)
    areas = pixel_areas_m2(t, WGS84, 0, 90)   # rows 0..89 = 90..0 N
    assert areas.shape == (90,)
    assert (np.diff(areas) > 0).all()         # larger toward the equator
    assert areas[-1] == pytest.approx(12_309e6, rel=2e-3)   # 1 x 1 degree at the equator
    assert areas[29] / areas[-1] == pytest.approx(np.cos(np.radians(60.5)), rel=0.02)  # ellipsoid: ~1 % off the sphere
    # rows add up to the geodesic area of the whole band
    geod = pyproj.Geod(ellps="WGS84")
    band, _ = geod.polygon_area_perimeter([10, 11, 11, 10], [60, 60, 0, 0])
    assert areas[30:].sum() == pytest.approx(abs(band), rel=1e-6)
    # row_off selects rows: the same rows asked from another start agree
    np.testing.assert_allclose(pixel_areas_m2(t, WGS84, 45, 10), areas[45:55])
    # southern hemisphere mirrors the north
    south = pixel_areas_m2(Affine(1.0, 0.0, 10.0, 0.0, -1.0, 0.0), WGS84, 0, 90)
    np.testing.assert_allclose(south, areas[::-1], rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_blocks_exported_and_attached_with_seams_between_match_the_whole_mask(seed):
    """Bands polygonised on their own (hold_top) and joined through seam strips, as a distributed run does."""
    from geochange.engine.polygons import BorderPieces

    mask = random_mask(seed, (120, 70)) if seed else shapes_mask()
    prob = prob_for(mask, seed)
    ref = whole_regions(mask, prob)
    h = mask.shape[0]
    # rows: body 0..17, seam 17..20, body 20..41, seam 41..44, body 44..h (a body of one row too)
    cuts = [("body", 0, 17), ("seam", 17, 20), ("body", 20, 41), ("seam", 41, 44), ("body", 44, 45),
            ("seam", 45, 47), ("body", 47, h)]
    stitcher, got, interior = StripPolygonizer(), [], 0
    for kind, y0, y1 in cuts:
        if kind == "seam":
            got += stitcher.add(y0, mask[y0:y1], prob[y0:y1])
            continue
        band = StripPolygonizer(hold_top=True)
        for r in range(y0, y1, 5):
            done = band.add(r, mask[r:min(r + 5, y1)], prob[r:min(r + 5, y1)])
            assert all(g.geometry.bounds[1] > y0 and g.geometry.bounds[3] < y1 for g in done)
            got += done
            interior += len(done)
        border = BorderPieces.from_arrays(band.export().arrays())  # through the block's file format
        assert len(border.top) == len(border.bottom) == mask.shape[1]
        got += stitcher.attach(border)
    got += stitcher.close()
    assert interior > 0
    assert_same_regions(got, ref)
