"""Scenes with ground truth for the accuracy benchmarks, prepared once into a work folder and reused.

Every scene is a dict with ``before``, ``after`` (GeoTIFF paths), ``truth`` (a 0/1 raster, 255 =
unlabelled, on BEFORE's grid or warpable onto it), ``kind`` (one line) and ``notes``; a scene made
of several separate pairs (DSIFN) has ``parts``, a list of such dicts, scored together.

* OSCD (``../shared/data/oscd``): Sentinel-2 L1C, the four 10 m bands B02, B03, B04, B08 of each
  date stacked into one GeoTIFF; full 0/1 change masks; every pixel scored. Cities bercy, paris,
  cupertino, beihai, aguasclaras, abudhabi.
* ``taizhou``: Landsat 7 ETM+ 6 bands; SPARSE reference samples (1 change, 0 unchanged, 255
  unlabelled): only labelled pixels are scored.
* ``dsifn``: the ten DSIFN samples (256² RGB, Google Earth), each written as a GeoTIFF pair on a
  made-up 2 m grid (they are not georeferenced), scored together.
* synthetic 512² 4-band (blue, green, red, NIR) pairs with the same kinds of planted change (new
  roofs, asphalt, cleared soil, new vegetation, demolished buildings; unchanged buildings on both
  dates) plus one event that is not change: ``illumination`` (per-band gain, offset and gamma),
  ``misregistration`` (AFTER shifted 1 px each way), ``seasonal`` (tint with vegetation cover),
  ``crs`` (AFTER delivered in EPSG:3857 at another pixel size, warped back by detect).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
GEN_VERSION = "4"   # bump when a scene's preparation changes, so stale scenes in a reused workdir are rebuilt
OSCD = ("bercy", "paris", "cupertino", "beihai", "aguasclaras", "abudhabi")
SYNTHETIC = ("illumination", "misregistration", "seasonal", "crs")
REAL = OSCD + ("taizhou", "dsifn")
SCENES = REAL + SYNTHETIC
OSCD_BANDS = ("B02", "B03", "B04", "B08")
SYN_SIZE = 512
SYN_SHIFT = (1, 1)  # misregistration of AFTER: (rows, cols) in pixels


def _fresh(folder: Path) -> bool:
    stamp = folder / "scene.ok"
    return stamp.exists() and stamp.read_text() == GEN_VERSION


def _stamp(folder: Path, notes: list[str]) -> None:
    (folder / "notes.json").write_text(json.dumps(notes))
    (folder / "scene.ok").write_text(GEN_VERSION)


def _notes(folder: Path) -> list[str]:
    return json.loads((folder / "notes.json").read_text())


def write_tif(path: Path, array: np.ndarray, crs, transform, nodata=None) -> Path:
    """Write ``array`` ((bands,) h, w) as a GeoTIFF, atomically."""
    import rasterio

    arr = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata, compress="DEFLATE")
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.write(arr)
    os.replace(tmp, path)
    return path


def _stack(files: list[Path], ref_file: Path, out: Path) -> list[str]:
    """Stack single-band files into one GeoTIFF on ``ref_file``'s grid (warping any that differ)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    notes = []
    with rasterio.open(ref_file) as ref:
        crs, transform, shape = ref.crs, ref.transform, ref.shape
    bands = []
    for f in files:
        with rasterio.open(f) as ds:
            if (ds.shape, ds.transform, ds.crs) == (shape, transform, crs):
                bands.append(ds.read(1))
            else:
                dst = np.zeros(shape, ds.dtypes[0])
                reproject(rasterio.band(ds, 1), dst, dst_transform=transform, dst_crs=crs,
                          resampling=Resampling.bilinear)
                bands.append(dst)
                notes.append(f"{f.name}: warped onto {ref_file.name}'s grid")
    write_tif(out, np.stack(bands), crs, transform)
    return notes


def prepare_oscd(city: str, data: Path, folder: Path) -> dict:
    root = data / "oscd" / "images" / city
    truth = data / "oscd" / "train_labels" / city / "cm" / f"{city}-cm_georef_01.tif"
    if not _fresh(folder):
        folder.mkdir(parents=True, exist_ok=True)
        notes, files = [], {}
        for d in ("imgs_1", "imgs_2"):
            files[d] = []
            for b in OSCD_BANDS:
                hits = sorted((root / d).glob(f"*_{b}.tif"))
                if len(hits) != 1:
                    raise SystemExit(f"{root / d}: expected one *_{b}.tif, found {len(hits)}")
                files[d].append(hits[0])
        notes += _stack(files["imgs_1"], files["imgs_1"][0], folder / "before.tif")
        notes += _stack(files["imgs_2"], files["imgs_2"][0], folder / "after.tif")
        _stamp(folder, notes)
    return {"before": folder / "before.tif", "after": folder / "after.tif", "truth": truth,
            "kind": "OSCD Sentinel-2 B2,B3,B4,B8, 10 m; full mask", "notes": _notes(folder)}


def prepare_taizhou(data: Path, folder: Path) -> dict:
    import rasterio

    root = data / "landsat_taizhou" / "geotiff"
    if not _fresh(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(root / "change_mask.tif") as ds:
            change = ds.read(1) > 0
            crs, transform = ds.crs, ds.transform
        with rasterio.open(root / "unchanged_mask.tif") as ds:
            unchanged = ds.read(1) > 0
        both = change & unchanged
        truth = np.full(change.shape, 255, np.uint8)
        truth[unchanged & ~both] = 0
        truth[change & ~both] = 1
        write_tif(folder / "truth.tif", truth, crs, transform, nodata=255)
        _stamp(folder, [f"{int(change.sum())} change / {int(unchanged.sum())} unchanged samples"])
    return {"before": root / "2000TM.tif", "after": root / "2003TM.tif", "truth": folder / "truth.tif",
            "kind": "Landsat ETM+ 6 bands, 30 m; sparse samples", "notes": _notes(folder)}


def prepare_dsifn(data: Path, folder: Path) -> dict:
    from affine import Affine
    from PIL import Image
    from rasterio.crs import CRS

    root = data / "dsifn_samples"
    names = sorted(p.stem for p in (root / "label").glob("*.png"))
    crs = CRS.from_epsg(32650)
    transform = Affine(2.0, 0, 500_000.0, 0, -2.0, 3_500_000.0)
    if not _fresh(folder):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            sub = folder / name
            sub.mkdir(exist_ok=True)
            for d, out in (("A", "before.tif"), ("B", "after.tif")):
                rgb = np.asarray(Image.open(root / d / f"{name}.png").convert("RGB"))
                write_tif(sub / out, np.ascontiguousarray(rgb.transpose(2, 0, 1)), crs, transform)
            label = np.asarray(Image.open(root / "label" / f"{name}.png").convert("L"))
            write_tif(sub / "truth.tif", (label > 127).astype(np.uint8), crs, transform)
        _stamp(folder, [f"{len(names)} samples of 256² on a made-up 2 m grid, scored together"])
    parts = [{"before": folder / n / "before.tif", "after": folder / n / "after.tif",
              "truth": folder / n / "truth.tif", "name": n} for n in names]
    return {"parts": parts, "kind": "DSIFN Google Earth RGB, ~2 m; full masks", "notes": _notes(folder)}


def _texture(rng: np.random.Generator, shape: tuple[int, int], bands: int) -> np.ndarray:
    """Smooth fields and trees, float32 (bands, h, w) around 100-140."""
    from scipy import ndimage

    out = []
    for b in range(bands):
        field = (ndimage.gaussian_filter(rng.normal(size=shape), 6) * 25
                 + ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 6)
        out.append(100 + 10 * b + field / max(field.std(), 1e-6) * 15)
    return np.stack(out).astype(np.float32)


# (blue, green, red, NIR)
_EXISTING = np.array([200, 190, 180, 170], np.float32)
_MATERIALS = {
    "new roof": np.array([225, 215, 205, 190], np.float32),
    "new asphalt": np.array([50, 48, 45, 40], np.float32),
    "cleared to soil": np.array([135, 140, 150, 150], np.float32),
    "new vegetation": np.array([70, 95, 60, 210], np.float32),
}


def make_synthetic(kind: str, folder: Path, seed: int) -> dict:
    """One synthetic pair with planted changes and the event ``kind`` that is not change."""
    from affine import Affine
    from rasterio.crs import CRS
    from scipy import ndimage

    crs = CRS.from_epsg(32633)
    transform = Affine(10.0, 0, 400_000.0, 0, -10.0, 5_000_000.0)
    if not _fresh(folder):
        folder.mkdir(parents=True, exist_ok=True)
        n, pad = SYN_SIZE, 2
        m = n + 2 * pad                      # a canvas a little larger than the grid (room for the shift)
        rng = np.random.default_rng([seed, SYNTHETIC.index(kind)])
        veg = ndimage.gaussian_filter(rng.normal(size=(m, m)), 12)
        veg = 1.0 / (1.0 + np.exp(-veg / veg.std() * 2.0))          # smooth vegetation cover in (0, 1)
        base = _texture(rng, (m, m), 4) + veg[None] * np.array([-15, -5, -20, 60], np.float32)[:, None, None]
        fine = ndimage.gaussian_filter(rng.normal(size=(m, m)), 0.7)  # hedges, roads, single trees
        base += (10 * fine / fine.std()).astype(np.float32)[None]
        before, after = base.copy(), base.copy()
        chg_after = np.zeros((m, m), bool)
        chg_before = np.zeros((m, m), bool)
        for _ in range(14):                  # existing buildings, the same on both dates
            r, c = rng.integers(pad + 4, m - pad - 30, 2)
            h, w = rng.integers(10, 22, 2)
            before[:, r:r + h, c:c + w] = after[:, r:r + h, c:c + w] = _EXISTING[:, None, None]
        names = list(_MATERIALS) + ["demolished"]
        for k in range(20):
            r, c = rng.integers(pad + 4, m - pad - 36, 2)
            h, w = rng.integers(12, 32, 2)
            what = names[k % len(names)]
            if what == "demolished":
                before[:, r:r + h, c:c + w] = _EXISTING[:, None, None]
                chg_before[r:r + h, c:c + w] = True
            else:
                after[:, r:r + h, c:c + w] = _MATERIALS[what][:, None, None]
                chg_after[r:r + h, c:c + w] = True
        before += rng.normal(0, 2.0, before.shape).astype(np.float32)
        after += rng.normal(0, 2.0, after.shape).astype(np.float32)
        dy, dx = (0, 0)
        if kind == "illumination":
            gamma = np.array([0.7, 0.75, 0.8, 1.2], np.float32)[:, None, None]
            after = 255 * (np.clip(after, 0, 255) / 255) ** gamma * np.array([0.8, 0.85, 0.8, 0.9], np.float32)[
                :, None, None] + np.array([25, 20, 22, 10], np.float32)[:, None, None]
        elif kind == "misregistration":
            dy, dx = SYN_SHIFT
        elif kind == "seasonal":
            after = (after * np.array([0.95, 1.05, 1.1, 0.85], np.float32)[:, None, None]
                     + veg[None] * np.array([5, -10, 25, -60], np.float32)[:, None, None])
        elif kind == "crs":
            after = after * np.array([1.05, 1.0, 0.95, 1.1], np.float32)[:, None, None]
        else:
            raise ValueError(kind)
        b = before[:, pad:pad + n, pad:pad + n]
        a = after[:, pad + dy:pad + dy + n, pad + dx:pad + dx + n]
        truth = chg_after[pad + dy:pad + dy + n, pad + dx:pad + dx + n] | chg_before[pad:pad + n, pad:pad + n]
        write_tif(folder / "before.tif", np.clip(b, 1, 255).round().astype(np.uint8), crs, transform)
        after_path = folder / "after.tif"
        a8 = np.clip(a, 1, 255).round().astype(np.uint8)
        if kind == "crs":
            _write_reprojected(after_path, a8, crs, transform, "EPSG:3857", 7.0)
        else:
            write_tif(after_path, a8, crs, transform)
        write_tif(folder / "truth.tif", truth.astype(np.uint8), crs, transform)
        _stamp(folder, [{"illumination": "global per-band gain, offset and gamma of AFTER",
                         "misregistration": f"AFTER shifted {SYN_SHIFT[0]} px down, {SYN_SHIFT[1]} px right",
                         "seasonal": "per-band gains + NIR down / red up with vegetation cover",
                         "crs": "AFTER in EPSG:3857 at 7 m (cubic), nodata 0 outside"}[kind]])
    return {"before": folder / "before.tif", "after": folder / "after.tif", "truth": folder / "truth.tif",
            "kind": f"synthetic {SYN_SIZE}² x4, planted + {kind}", "notes": _notes(folder)}


def _write_reprojected(path: Path, array: np.ndarray, crs, transform, dst_crs: str, res: float) -> None:
    """``array`` on (crs, transform) reprojected into ``dst_crs`` at ``res`` (cubic), nodata 0."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    h, w = array.shape[1:]
    bounds = (transform.c, transform.f + transform.e * h, transform.c + transform.a * w, transform.f)
    dst_t, dw, dh = calculate_default_transform(crs, dst_crs, w, h, *bounds, resolution=res)
    out = np.zeros((array.shape[0], dh, dw), np.uint8)
    reproject(array, out, src_transform=transform, src_crs=crs, dst_transform=dst_t, dst_crs=dst_crs,
              resampling=Resampling.cubic, src_nodata=0, dst_nodata=0)
    write_tif(path, out, dst_crs, dst_t, nodata=0)


def prepare(name: str, workdir: Path, data: Path = DATA, seed: int = 0) -> dict:
    """The scene ``name``, prepared into ``workdir/scenes/name`` (once)."""
    folder = workdir / "scenes" / name
    if name in OSCD:
        return prepare_oscd(name, data, folder)
    if name == "taizhou":
        return prepare_taizhou(data, folder)
    if name == "dsifn":
        return prepare_dsifn(data, folder)
    return make_synthetic(name, folder, seed)
