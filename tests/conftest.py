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

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
                       after_crs: CRS | None = CRS.from_epsg(4326)) -> PlantedScene:
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
def shared_data() -> Path:
    """The real sample data beside the project (../shared/data)."""
    assert SHARED_DATA.is_dir(), f"real sample data expected at {SHARED_DATA}"
    return SHARED_DATA


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
