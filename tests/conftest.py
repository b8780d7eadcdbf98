"""Fixtures that write tiny, real GeoTIFFs and footprint layers into tmp_path.

The planted-change scene is the workhorse: BEFORE in UTM with a nodata strip, AFTER with a global
illumination change, new and demolished "buildings", reprojected to EPSG:4326 at another pixel
size and with a nodata strip of its own, and the truth mask of the planted changes on BEFORE's grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from scipy import ndimage

from geochange.models.base import TrainableModel

TEST_DATA = Path(__file__).resolve().parent / "data"
UTM = CRS.from_epsg(32615)


def write_tif(path: Path, array: np.ndarray, crs, transform: Affine, nodata=None, **extra) -> Path:
    """Write a (bands, h, w) or (h, w) array as a GeoTIFF."""
    arr = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr)
    return path


def texture(rng: np.random.Generator, shape: tuple[int, int], bands: int = 3) -> np.ndarray:
    """Smooth random background (fields, trees): float32 (bands, h, w) in roughly 60..150."""
    out = []
    for b in range(bands):
        field = ndimage.gaussian_filter(rng.normal(size=shape), 6) * 25 + ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 6
        out.append(100 + 10 * b + field / max(field.std(), 1e-6) * 15)
    return np.stack(out).astype(np.float32)


@dataclass
class PlantedScene:
    before: Path
    after: Path
    truth: Path          # uint8 on BEFORE's grid: 1 planted change, 0 not, 255 nodata
    truth_array: np.ndarray
    valid: np.ndarray    # where both dates hold data, on BEFORE's grid
    transform: Affine
    crs: CRS
    shape: tuple[int, int]


def make_planted_scene(folder: Path, seed: int = 0, height: int = 240, width: int = 300,
                       after_crs: CRS | None = CRS.from_epsg(4326), holes: bool = False) -> PlantedScene:
    """A planted pair; ``holes``: each planted change has a small unchanged hole (3 x 4 px) inside."""
    rng = np.random.default_rng(seed)
    transform = Affine(1.0, 0, 500_000.0, 0, -1.0, 4_100_000.0)
    base = texture(rng, (height, width))
    before = base.copy()
    after = base.copy()
    change = np.zeros((height, width), bool)
    # existing buildings, the same on both dates
    for _ in range(10):
        r, c = rng.integers(10, height - 30), rng.integers(10, width - 30)
        before[:, r:r + 14, c:c + 18] = after[:, r:r + 14, c:c + 18] = np.array([200, 190, 180])[:, None, None]
    # new buildings (after only) and demolished ones (before only), away from the nodata strips
    for k in range(8):
        r, c = rng.integers(15, height - 60), rng.integers(40, width - 40)
        h, w = rng.integers(12, 20), rng.integers(14, 24)
        roof = np.array([225, 215, 205] if k % 2 == 0 else [60, 55, 50])[:, None, None]
        if k < 5:
            after[:, r:r + h, c:c + w] = roof
        else:
            before[:, r:r + h, c:c + w] = roof
        change[r:r + h, c:c + w] = True
        if holes:
            hole = (slice(None), slice(r + h // 2 - 1, r + h // 2 + 2), slice(c + w // 2 - 2, c + w // 2 + 2))
            after[hole] = before[hole]
            change[hole[1:]] = False
    before += rng.normal(0, 2.0, before.shape)
    after += rng.normal(0, 2.0, after.shape)
    after = after * 0.7 + 30  # a global illumination change: not a change
    before_u8 = np.clip(before, 1, 255).astype(np.uint8)
    after_u8 = np.clip(after, 1, 255).astype(np.uint8)
    valid = np.ones((height, width), bool)
    before_u8[:, -12:, :] = 0          # nodata strip at the bottom of BEFORE
    valid[-12:, :] = False
    folder.mkdir(parents=True, exist_ok=True)
    b_path = write_tif(folder / "before.tif", before_u8, UTM, transform, nodata=0)

    after_u8[:, :, :15] = 0            # nodata strip on the left of AFTER
    valid[:, :15] = False
    if after_crs is None or after_crs == UTM:
        a_path = write_tif(folder / "after.tif", after_u8, UTM, transform, nodata=0)
    else:
        bounds = rasterio.transform.array_bounds(height, width, transform)
        dst_t, dst_w, dst_h = calculate_default_transform(UTM, after_crs, width, height, *bounds[::1],
                                                          resolution=None)
        # a coarser pixel than BEFORE's (1.3 x), so the grids differ in CRS and resolution
        dst_t = dst_t @ Affine.scale(1.3)
        dst_w, dst_h = int(dst_w / 1.3) + 2, int(dst_h / 1.3) + 2
        warped = np.zeros((3, dst_h, dst_w), np.uint8)
        reproject(after_u8, warped, src_transform=transform, src_crs=UTM, src_nodata=0,
                  dst_transform=dst_t, dst_crs=after_crs, dst_nodata=0, resampling=Resampling.bilinear)
        a_path = write_tif(folder / "after.tif", warped, after_crs, dst_t, nodata=0)
        # the warp twice (to 4326 and back) softens edges and the footprint border: not counted
        valid[:2, :] = valid[-2:, :] = valid[:, :2] = valid[:, -2:] = False
        valid[:, :17] = False
    truth = np.where(valid, change.astype(np.uint8), 255).astype(np.uint8)
    t_path = write_tif(folder / "truth.tif", truth, UTM, transform, nodata=255)
    return PlantedScene(b_path, a_path, t_path, truth, valid, transform, UTM, (height, width))


@pytest.fixture
def planted(tmp_path: Path) -> PlantedScene:
    """BEFORE (UTM, nodata strip), AFTER (EPSG:4326, other pixel size, illumination change, nodata strip)."""
    return make_planted_scene(tmp_path / "scene")


@pytest.fixture
def planted_same_grid(tmp_path: Path) -> PlantedScene:
    """The planted scene with both dates on the same UTM grid."""
    return make_planted_scene(tmp_path / "scene_same", after_crs=None)


@pytest.fixture
def many_cores(monkeypatch) -> None:
    """A machine of 16 cores, where ``detect --workers 2`` runs blocks on its local cluster (on a
    smaller one it runs in one process, faster: scheduler.why_not_local_blocks)."""
    monkeypatch.setattr("geochange.scheduler.usable_cores", lambda: 16)


@pytest.fixture
def test_data() -> Path:
    """The small real crops kept with the tests (tests/data, provenance in its README.md)."""
    return TEST_DATA


# -- two tiles in two CRSs that overlap in part (a generated stand-in for the Joplin tiles) -------

@dataclass
class TwoCrsTiles:
    pre: Path            # EPSG:26915, 0.6 m, the whole canvas's top-left part
    post: Path           # EPSG:4326, a rotated footprint over the canvas's bottom-right part
    pre_crs: CRS
    overlap: tuple[float, float, float, float]   # (minx, miny, maxx, maxy) of the common part, EPSG:26915
    change: list         # planted new roofs in POST: (minx, miny, maxx, maxy), EPSG:26915


def make_two_crs_tiles(folder: Path, seed: int = 0, size: int = 256, shift: int = 96) -> TwoCrsTiles:
    """PRE: ``size``² pixels of a textured canvas on UTM 15N; POST: the canvas ``shift`` pixels further
    down and right, darker, with new roofs in the common part, warped to EPSG:4326 (nodata corners)."""
    rng = np.random.default_rng(seed)
    crs = CRS.from_epsg(26915)
    n = size + shift
    canvas = texture(rng, (n, n))
    for _ in range(25):
        r, c = rng.integers(5, n - 25, 2)
        canvas[:, r:r + 14, c:c + 20] = np.array([205, 195, 185])[:, None, None]
    t = Affine(0.6, 0, 366_600.0, 0, -0.6, 4_104_000.0)
    pre = np.clip(canvas[:, :size, :size] + rng.normal(0, 2, (3, size, size)), 1, 255).astype(np.uint8)
    later = canvas * 0.8 + 20
    change = []
    for k in range(4):
        r, c = shift + 10 + 35 * k, shift + 15 + 30 * k
        later[:, r:r + 16, c:c + 20] = 235 if k % 2 else 45
        x0, y1 = t @ (c, r)
        x1, y0 = t @ (c + 20, r + 16)
        change.append((x0, y0, x1, y1))
    post_src = np.clip(later[:, shift:, shift:] + rng.normal(0, 2, (3, size, size)), 1, 255).astype(np.uint8)
    post_t = t @ Affine.translation(shift, shift)
    bounds = rasterio.transform.array_bounds(size, size, post_t)
    dst_t, dst_w, dst_h = calculate_default_transform(crs, "EPSG:4326", size, size, *bounds)
    warped = np.zeros((3, dst_h, dst_w), np.uint8)
    reproject(post_src, warped, src_transform=post_t, src_crs=crs, src_nodata=0, dst_transform=dst_t,
              dst_crs="EPSG:4326", dst_nodata=0, resampling=Resampling.bilinear)
    folder.mkdir(parents=True, exist_ok=True)
    ox, oy = t @ (shift, size)
    ex, ey = t @ (size, shift)
    return TwoCrsTiles(write_tif(folder / "pre.tif", pre, crs, t, nodata=0),
                       write_tif(folder / "post.tif", warped, CRS.from_epsg(4326), dst_t, nodata=0),
                       crs, (ox, oy, ex, ey), change)


@pytest.fixture
def two_crs_tiles(tmp_path: Path) -> TwoCrsTiles:
    """A UTM tile and a WGS84 tile of one place that overlap in part, with planted new roofs."""
    return make_two_crs_tiles(tmp_path / "two_crs")


# -- training: planted-change patch pairs and a tiny real trainable model -------------------------

def planted_patches(n: int = 32, size: int = 24, bands: int = 3, seed: int = 0, split: str = "train") -> list[dict]:
    """Patch pairs (uint8 texture) where every other pair has a bright square planted in AFTER."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        before = np.clip(texture(rng, (size, size), bands), 0, 255).astype(np.uint8)
        after = np.clip(before.astype(int) + rng.integers(-6, 7, before.shape), 0, 255).astype(np.uint8)
        label = np.zeros((size, size), np.uint8)
        if i % 2:
            r, c = rng.integers(0, size - 8, 2)
            after[:, r:r + 8, c:c + 8] = 250
            label[r:r + 8, c:c + 8] = 1
        items.append({"before": before, "after": after, "label": label, "meta": {"split": split, "id": i}})
    return items


@dataclass
class TinyConfig:
    """Settings of the tiny test model (its defaults are what the trainer uses)."""

    epochs: int = 6
    batch_size: int = 8
    lr: float = 0.02
    hidden: int = 8


class TinyChangeNet(TrainableModel):
    """A real, small supervised change model for trainer tests: conv3x3 on [A, B, A-B], then 1x1 to a logit."""

    name = "tiny"
    config_class = TinyConfig

    def build(self, in_bands: int) -> None:
        import torch.nn as nn

        self.in_bands = in_bands
        self.net = nn.Sequential(nn.Conv2d(3 * in_bands, self.config.hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(self.config.hidden, 1, 1))

    def _logits(self, before, after):
        import torch

        return self.net(torch.cat([before, after, after - before], 1))[:, 0]

    def training_step(self, batch: dict, epoch: int) -> dict:
        import torch.nn.functional as F

        logits = self._logits(batch["before"], batch["after"])
        known = batch["label"] != 255
        loss = F.binary_cross_entropy_with_logits(logits[known], batch["label"][known].float())
        return {"loss": loss, "changed_share": (batch["label"] == 1).float().mean()}

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            b = torch.as_tensor(before, device=self.device)
            a = torch.as_tensor(after, device=self.device)
            return torch.sigmoid(self._logits(b, a)).cpu().numpy()


@pytest.fixture
def tiny_model(monkeypatch) -> type[TinyChangeNet]:
    """Register TinyChangeNet as model ``tiny`` for the duration of a test (so checkpoints reload it)."""
    from geochange import models

    monkeypatch.setitem(models.MODELS, "tiny", f"{TinyChangeNet.__module__}:TinyChangeNet")
    return TinyChangeNet


# -- build-wdc: a synthetic city of footprints in two years, and its orthophotos ------------------

CITY_CRS = "EPSG:26985"


@dataclass
class SyntheticCity:
    """Footprints of two years (GeoPackages) and orthophotos (GeoTIFFs) with known changes.

    ``planted`` maps each kind to the building ids it holds: ``destroyed`` (year0 ids), ``new``
    (year1 ids), ``moved`` (year1 ids of buildings redrawn 0.5-1 m off: not changes), and the IoU
    edge cases: ``edge_equal`` (IoU exactly 0.01: no change; ids of both years) and ``edge_below``
    (IoU 0.0099: both buildings are changes). ``invalid`` holds the year1 id of a self-intersecting
    polygon (a bow-tie over a kept building, repaired, still no change).
    """

    folder: Path
    years: tuple[int, int]
    footprints: dict[int, Path]
    imagery: dict[int, Path]
    frames: dict       # year -> GeoDataFrame as written
    planted: dict[str, set]
    transform: Affine
    shape: tuple[int, int]
    park_x: float      # no building east of this x (an empty park: patches without buildings)

    def manifest(self, **extra) -> Path:
        """A build-wdc manifest over this city (local files), with ``extra`` top-level keys."""
        import yaml

        y0, y1 = self.years
        data = {"name": "synthetic", "crs": CITY_CRS, "pairs": [[y0, y1]], "filter_year": y1,
                "imagery": {y: {"source": self.imagery[y].name, "licence": "test", "provenance": "conftest"}
                            for y in self.years},
                "footprints": {y: {"source": self.footprints[y].name, "id_field": "bid"} for y in self.years}}
        data.update(extra)
        path = self.folder / "city.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def make_city(folder: Path, seed: int = 0, years: tuple[int, int] = (2010, 2015), size_px: int = 640,
              res: float = 0.5) -> SyntheticCity:
    import geopandas as gpd
    import rasterio.features
    import shapely

    rng = np.random.default_rng(seed)
    x0, top = 400_000.0, 140_000.0
    transform = Affine(res, 0, x0, 0, -res, top)
    extent = size_px * res
    park_x = x0 + 0.62 * extent
    lot = 20.0
    recs = {years[0]: [], years[1]: []}
    planted = {k: set() for k in ("destroyed", "new", "moved", "edge_equal", "edge_below", "invalid")}
    lots = [(i, j) for i in range(int(extent // lot)) for j in range(int((park_x - x0) // lot))]
    kinds = rng.choice(["stable", "moved", "destroyed", "new"], size=len(lots), p=[0.55, 0.15, 0.15, 0.15]).astype(object)
    kinds[3], kinds[17], kinds[30] = "edge_equal", "edge_below", "invalid"
    for k, ((i, j), kind) in enumerate(zip(lots, kinds)):
        lx, ly = x0 + j * lot, top - (i + 1) * lot         # lot's lower-left corner
        if kind in ("edge_equal", "edge_below"):
            # a 10 x 10 m building in year0; in year1 a 1 x 1 m (or 1 x 0.99 m) shed inside it.
            # IoU = 1 / 100 = 0.01 exactly with integer coordinates; 0.99 / 100 < 0.01
            big = shapely.box(lx + 5, ly + 5, lx + 15, ly + 15)
            small = shapely.box(lx + 7, ly + 7, lx + 8, ly + 8 if kind == "edge_equal" else ly + 7.99)
            recs[years[0]].append((f"a{k}", big))
            recs[years[1]].append((f"b{k}", small))
            planted[kind] |= {f"a{k}", f"b{k}"}
            continue
        w, h = rng.uniform(6, 12, 2).round(1)
        ox, oy = rng.uniform(1, lot - 1 - w), rng.uniform(1, lot - 1 - h)
        geom = shapely.box(lx + ox, ly + oy, lx + ox + w, ly + oy + h)
        if kind in ("stable", "moved", "destroyed", "invalid"):
            recs[years[0]].append((f"a{k}", geom))
        if kind == "stable":
            recs[years[1]].append((f"b{k}", geom))
        elif kind == "moved":
            dx, dy = rng.uniform(0.5, 1.0, 2) * rng.choice([-1, 1], 2)
            recs[years[1]].append((f"b{k}", shapely.affinity.translate(geom, dx, dy)))
            planted["moved"].add(f"b{k}")
        elif kind == "invalid":
            x_0, y_0, x_1, y_1 = geom.bounds
            bowtie = shapely.Polygon([(x_0, y_0), (x_1, y_1), (x_1, y_0), (x_0, y_1)])
            assert not bowtie.is_valid
            recs[years[1]].append((f"b{k}", bowtie))
            planted["invalid"].add(f"b{k}")
        elif kind == "destroyed":
            planted["destroyed"].add(f"a{k}")
        elif kind == "new":
            recs[years[1]].append((f"b{k}", geom))
            planted["new"].add(f"b{k}")
    planted["destroyed"].add(next(i for i in planted["edge_below"] if i.startswith("a")))
    planted["new"].add(next(i for i in planted["edge_below"] if i.startswith("b")))

    folder.mkdir(parents=True, exist_ok=True)
    background = np.clip(texture(rng, (size_px, size_px)), 0, 255)
    frames, footprints, imagery = {}, {}, {}
    for t, year in enumerate(years):
        frame = gpd.GeoDataFrame({"bid": [r[0] for r in recs[year]]},
                                 geometry=[r[1] for r in recs[year]], crs=CITY_CRS)
        frames[year] = frame
        footprints[year] = folder / f"buildings_{year}.gpkg"
        frame.to_file(footprints[year], engine="pyogrio")
        roofs = rasterio.features.rasterize(
            ((g, 1 + n % 3) for n, g in enumerate(shapely.make_valid(np.asarray(frame.geometry)))),
            out_shape=(size_px, size_px), transform=transform, fill=0, dtype="uint8")
        img = background * (0.9 + 0.1 * t) + rng.normal(0, 2, background.shape)
        for v, colour in ((1, (210, 200, 190)), (2, (90, 80, 75)), (3, (230, 120, 100))):
            img[:, roofs == v] = np.array(colour, float)[:, None]
        imagery[year] = write_tif(folder / f"ortho_{year}.tif", np.clip(img, 1, 255).astype(np.uint8),
                                  CRS.from_string(CITY_CRS), transform, nodata=0)
    return SyntheticCity(folder, years, footprints, imagery, frames, planted, transform,
                         (size_px, size_px), park_x)


@pytest.fixture
def city(tmp_path: Path) -> SyntheticCity:
    """A 320 m synthetic city (EPSG:26985, 0.5 m pixels), years 2010 and 2015, with planted changes."""
    return make_city(tmp_path / "city")


# -- co-registration: two dates of one scene, AFTER shifted by a known amount ----------------------

@dataclass
class ShiftedPair:
    before: Path
    after: Path
    shift: tuple[float, float]   # (dy, dx): AFTER's content lies this many pixels from BEFORE's
    transform: Affine
    change: np.ndarray           # bool (h, w): where buildings were planted in AFTER


def make_shifted_pair(folder: Path, shift: tuple[float, float] = (0.6, -1.3), seed: int = 0, size: int = 320,
                      noise: float = 2.0, change: bool = True) -> ShiftedPair:
    """BEFORE and AFTER (uint8, 3 bands, same UTM grid) cut from one textured canvas, AFTER's cut
    shifted by ``shift`` (scipy.ndimage.shift, cubic spline), with an illumination change, noise and
    (``change``) a few planted buildings; nodata strips at the borders."""
    rng = np.random.default_rng(seed)
    margin = 16
    canvas = texture(rng, (size + 2 * margin, size + 2 * margin))
    for _ in range(12):  # buildings on both dates: sharp edges
        r, c = rng.integers(margin, size, 2)
        canvas[:, r:r + 12, c:c + 16] = np.array([200, 190, 180])[:, None, None]
    moved = np.stack([ndimage.shift(band, shift, order=3, mode="nearest") for band in canvas])
    crop = (slice(None), slice(margin, margin + size), slice(margin, margin + size))
    before = canvas[crop] + rng.normal(0, noise, (3, size, size))
    after = moved[crop] * 0.8 + 25 + rng.normal(0, noise, (3, size, size))
    planted = np.zeros((size, size), bool)
    if change:
        for k in range(4):
            r, c = rng.integers(20, size - 40, 2)
            after[:, r:r + 18, c:c + 22] = 235 if k % 2 else 50
            planted[r:r + 18, c:c + 22] = True
    before_u8 = np.clip(before, 1, 255).astype(np.uint8)
    after_u8 = np.clip(after, 1, 255).astype(np.uint8)
    before_u8[:, -6:, :] = 0
    after_u8[:, :, :5] = 0
    transform = Affine(2.0, 0, 600_000.0, 0, -2.0, 4_200_000.0)
    folder.mkdir(parents=True, exist_ok=True)
    return ShiftedPair(write_tif(folder / "before.tif", before_u8, UTM, transform, nodata=0),
                       write_tif(folder / "after.tif", after_u8, UTM, transform, nodata=0), shift, transform, planted)


@dataclass
class MarkedScene:
    before: Path
    after: Path
    marks: Path          # GeoPackage (EPSG:4326) of marks in the LEFT half: change 1 on new roofs, 0 on distractors
    roofs: np.ndarray    # bool (h, w): new roofs, the change that matters
    distractors: np.ndarray  # bool (h, w): strong spectral change that the analyst marks as not change
    transform: Affine
    shape: tuple[int, int]


def make_marked_scene(folder: Path, seed: int = 0, size: int = 192) -> MarkedScene:
    """Two kinds of change of the same strength: new bright roofs (change) and darkened, greener patches
    (say, crops ripening: marked unchanged). A label-free model flags both; one that learns from the
    marks of the left half should keep only the roofs in the right half."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    transform = Affine(2.0, 0, 600_000.0, 0, -2.0, 4_200_000.0)
    base = texture(rng, (size, size))
    before, after = base.copy(), base.copy()
    roofs = np.zeros((size, size), bool)
    distractors = np.zeros((size, size), bool)
    taken = np.zeros((size, size), bool)
    boxes = []
    for k in range(28):
        for _ in range(50):
            h, w = rng.integers(8, 14), rng.integers(8, 14)
            r, c = rng.integers(4, size - h - 4), rng.integers(4, size - w - 4)
            if not taken[r - 3:r + h + 3, c - 3:c + w + 3].any():
                break
        taken[r:r + h, c:c + w] = True
        if k % 2 == 0:
            after[:, r:r + h, c:c + w] = np.array([215, 205, 195])[:, None, None]
            roofs[r:r + h, c:c + w] = True
        else:  # as far from the background as a roof, in another direction: darker red, greener
            after[:, r:r + h, c:c + w] -= np.array([45, -55, 70])[:, None, None]
            distractors[r:r + h, c:c + w] = True
        boxes.append((r, c, h, w, 1 if k % 2 == 0 else 0))
    before += rng.normal(0, 2.0, before.shape)
    after += rng.normal(0, 2.0, after.shape)
    folder.mkdir(parents=True, exist_ok=True)
    b = write_tif(folder / "before.tif", np.clip(before, 1, 255).astype(np.uint8), UTM, transform)
    a = write_tif(folder / "after.tif", np.clip(after, 1, 255).astype(np.uint8), UTM, transform)
    geoms, values = [], []
    for r, c, h, w, v in boxes:
        if c + w <= size // 2:  # marks in the left half only
            (x0, y0), (x1, y1) = transform * (c, r), transform * (c + w, r + h)
            geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            values.append(v)
    marks = folder / "marks.gpkg"
    gpd.GeoDataFrame({"change": values}, geometry=geoms, crs=UTM).to_crs(4326).to_file(marks, driver="GPKG")
    return MarkedScene(b, a, marks, roofs, distractors, transform, (size, size))


@pytest.fixture
def marked_scene(tmp_path: Path) -> MarkedScene:
    """A pair with roofs (change) and distractors (not change) and marks on the left half (see make_marked_scene)."""
    return make_marked_scene(tmp_path / "marked")
