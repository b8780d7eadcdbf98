#!/usr/bin/env python3
"""Benchmarks of ``geochange detect``: engine efficiency and peak memory against raster size.

(a) Engine efficiency = model time / end-to-end ``detect`` time, on the same pair and windows.
    Both baselines open the pair and fit the normalisation and the model on the scene sample
    exactly as ``detect`` does, then loop over the same window plan (``plan_for`` with the same
    tile/overlap, batches of ``batch_size``), one step after another, no threads:
      "read+predict": read each window pair with ``pair.read`` and call ``model.predict``;
      "+write" (the cva model counted with its I/O): also write each window's own share of the
      probability and mask (no blending) into two plain tiled DEFLATE GeoTIFFs.
    End-to-end is the wall time of ``geochange.detect.detect(...)`` (quiet): blending, COG
    publishing with overviews, polygons (GPKG + SHP), quicklook, summary. All run in this process,
    alternating, best of ``--repeats``. Goal: (+write) / detect >= 0.85.
(a') CPU seconds (this process, all threads: ``time.process_time``) of the same three runs and of the
    yardstick of issue 15, ``minimal_pipeline``: what one writes by hand with rasterio for a CVA map
    (strip reads, z-scores, magnitude, a global Otsu threshold, probability and mask GeoTIFFs, and with
    ``polygons`` the mask polygonised strip by strip into a GeoPackage and a Shapefile). Goal:
    detect / minimal+polygons <= 1.5.
(b) Peak RSS of ``python3 -m geochange detect A B --out D --quiet --overwrite`` for each size,
    each in its own wrapper subprocess that reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of
    its single child (so sizes do not contaminate each other). Goal: biggest / smallest <= 1.3.

The synthetic pairs (3-band uint8 GeoTIFFs, tiled 256, DEFLATE, EPSG:32633, 0.5 m) are generated
strip by strip -- never a whole raster in memory -- into ``--workdir`` once and reused.

    python3 benchmarks/bench_detect.py [--sizes 1536 6144 12288] [--efficiency-sizes 1536 6144] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GEN_VERSION = "1"  # bump when the generator changes, so stale pairs in a reused workdir are rebuilt
STRIP = 256        # rows generated (and written) at a time; a multiple of the 256 block size
PIXEL = 0.5
ORIGIN = (500_000.0, 5_600_000.0)  # UTM 33N, upper-left corner


# --------------------------------------------------------------------------------------------------
# synthetic pair
# --------------------------------------------------------------------------------------------------

def _coarse_fields(rng: np.random.Generator, n: int, spacing: int, bands: int = 3) -> np.ndarray:
    """Random values on a coarse lattice (one per ``spacing`` px), upsampled per strip later."""
    cells = n // spacing + 3
    return rng.normal(size=(bands, cells, cells)).astype(np.float32)


def _upsample(coarse: np.ndarray, spacing: int, r0: int, h: int, n: int) -> np.ndarray:
    """Bilinear upsampling of ``coarse`` (bands, cy, cx) onto rows ``[r0, r0+h)`` x ``[0, n)``.

    Depends only on the global pixel position, so strips join seamlessly.
    """
    y = (np.arange(r0, r0 + h, dtype=np.float32) + 0.5) / spacing
    x = (np.arange(n, dtype=np.float32) + 0.5) / spacing
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    out = np.empty((coarse.shape[0], h, n), np.float32)
    for b in range(coarse.shape[0]):
        c = coarse[b]
        a00, a01 = c[y0][:, x0], c[y0][:, x0 + 1]
        a10, a11 = c[y0 + 1][:, x0], c[y0 + 1][:, x0 + 1]
        out[b] = (a00 * (1 - fx) + a01 * fx) * (1 - fy) + (a10 * (1 - fx) + a11 * fx) * fy
    return out


def _rectangles(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """Planted changes: (row0, col0, h, w, colour) with ~1 rectangle per 0.25 Mpx."""
    k = max(8, n * n // 250_000)
    rects = []
    for _ in range(k):
        h, w = (int(v) for v in rng.integers(12, 120, size=2))
        r0, c0 = int(rng.integers(0, n - h)), int(rng.integers(0, n - w))
        rects.append((r0, c0, h, w, rng.uniform(30, 230, size=3).astype(np.float32)))
    return rects


def make_pair(workdir: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) ``before_<n>.tif`` / ``after_<n>.tif`` in ``workdir``; returns their paths."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    before, after = workdir / f"before_{n}.tif", workdir / f"after_{n}.tif"
    stamp = workdir / f"pair_{n}.ok"
    if stamp.exists() and stamp.read_text() == GEN_VERSION and before.exists() and after.exists():
        return before, after
    t = time.perf_counter()
    rng = np.random.default_rng(seed + n)
    low = _coarse_fields(rng, n, 96)    # fields
    mid = _coarse_fields(rng, n, 16)    # trees, roofs
    rects = _rectangles(rng, n)
    gain = np.array([1.18, 1.12, 1.25], np.float32)[:, None, None]   # global illumination change
    offset = np.array([8.0, 12.0, -5.0], np.float32)[:, None, None]
    base = np.array([95.0, 105.0, 115.0], np.float32)[:, None, None]
    profile = dict(driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs=CRS.from_epsg(32633),
                   transform=from_origin(*ORIGIN, PIXEL, PIXEL), tiled=True, blockxsize=256,
                   blockysize=256, compress="DEFLATE", interleave="pixel")
    tmp_b, tmp_a = before.with_suffix(".tmp.tif"), after.with_suffix(".tmp.tif")
    stamp.unlink(missing_ok=True)
    with rasterio.open(tmp_b, "w", **profile) as db, rasterio.open(tmp_a, "w", **profile) as da:
        for r0 in range(0, n, STRIP):
            h = min(STRIP, n - r0)
            srng = np.random.default_rng([seed, n, r0])
            tex = base + 22 * _upsample(low, 96, r0, h, n) + 9 * _upsample(mid, 16, r0, h, n)
            b = tex + srng.normal(0, 3, size=tex.shape).astype(np.float32)
            a = tex * gain + offset + srng.normal(0, 3, size=tex.shape).astype(np.float32)
            for rr, cc, hh, ww, colour in rects:
                y0, y1 = max(rr, r0), min(rr + hh, r0 + h)
                if y0 < y1:
                    a[:, y0 - r0:y1 - r0, cc:cc + ww] = colour[:, None, None] + srng.normal(
                        0, 4, size=(3, y1 - y0, ww)).astype(np.float32)
            win = rasterio.windows.Window(0, r0, n, h)
            db.write(np.clip(b, 0, 255).astype(np.uint8), window=win)
            da.write(np.clip(a, 0, 255).astype(np.uint8), window=win)
    os.replace(tmp_b, before)
    os.replace(tmp_a, after)
    stamp.write_text(GEN_VERSION)
    print(f"  wrote {n}x{n} pair ({len(rects)} planted rectangles) in {time.perf_counter() - t:.1f} s "
          f"[{(before.stat().st_size + after.stat().st_size) / 2**20:.0f} MiB]", flush=True)
    return before, after


# --------------------------------------------------------------------------------------------------
# (a) engine efficiency
# --------------------------------------------------------------------------------------------------

def model_only(before: Path, after: Path, opts, out: Path | None = None) -> dict:
    """The model on the same windows, without the engine: open, fit (like detect), read every window
    and predict. With ``out``, also write each window's probability and mask (its own share of the
    grid, no blending) to two plain tiled DEFLATE GeoTIFFs: "the model counted with its I/O"."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from geochange.device import resolve_device
    from geochange.engine.plan import plan_windows
    try:
        from geochange.engine.plan import plan_for
    except ImportError:   # geochange before 2026-11-29 (for before/after figures)
        def plan_for(h, w, tile, overlap, context_px, block_h):
            return plan_windows(h, w, tile, overlap)
    from geochange.io.pair import RasterPair
    from geochange.models import create_model, model_class

    t0 = time.perf_counter()
    device = resolve_device(opts.device) if model_class(opts.model).uses_torch else "cpu"
    with RasterPair.open(str(before), str(after), bands=opts.bands,
                         resampling=Resampling[opts.resampling]) as pair:
        samples = pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size,
                                         seed=opts.seed)
        model = create_model(opts.model, device=device, **opts.model_params)
        model.fit([(s.before, s.after, s.valid) for s in samples], seed=opts.seed)
        del samples
        t_fit = time.perf_counter() - t0
        grid = pair.grid
        plan = plan_for(grid.height, grid.width, opts.tile, opts.overlap, getattr(model, "context_px", None),
                        getattr(pair, "block_height", None))  # as detect
        writers = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            prof = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, crs=grid.crs,
                        transform=grid.transform, tiled=True, blockxsize=512, blockysize=512, compress="DEFLATE")
            writers = [rasterio.open(out / "prob.tif", "w", dtype="float32", **prof),
                       rasterio.open(out / "mask.tif", "w", dtype="uint8", **prof)]
        t1 = time.perf_counter()
        read_s = predict_s = write_s = 0.0
        windows = [w for _, w in plan.windows()]
        checksum = 0.0
        half = plan.overlap // 2
        for i in range(0, len(windows), opts.batch_size):
            t = time.perf_counter()
            wps = [pair.read(w) for w in windows[i:i + opts.batch_size]]
            before_b = np.stack([w.before for w in wps])
            after_b = np.stack([w.after for w in wps])
            valid_b = np.stack([w.valid for w in wps])
            t2 = time.perf_counter()
            probs = model.predict(before_b, after_b, valid_b)
            t3 = time.perf_counter()
            predict_s += t3 - t2
            read_s += t2 - t
            checksum += float(probs[:, ::64, ::64].sum())  # keep the result alive
            for w, p in zip(wps, probs):
                # the window's own share: trim half the overlap on inner edges (no blending)
                r0 = 0 if w.window.row_off == 0 else half
                c0 = 0 if w.window.col_off == 0 else half
                core = Window(w.window.col_off + c0, w.window.row_off + r0,
                              w.window.width - c0, w.window.height - r0)
                for wr, arr in zip(writers, (p, (p >= 0.5).astype(np.uint8))):
                    wr.write(arr[r0:, c0:].astype(wr.dtypes[0]), 1, window=core)
            write_s += time.perf_counter() - t3
        for wr in writers:
            wr.close()
        t_loop = time.perf_counter() - t1
    return {"total": time.perf_counter() - t0, "fit": t_fit, "loop": t_loop, "read": read_s,
            "predict": predict_s, "write": write_s, "windows": len(windows)}


def minimal_pipeline(before: Path, after: Path, out: Path, polygons: bool = True, strip: int = 512,
                     sample_windows: int = 64, sample_size: int = 256, seed: int = 0) -> dict:
    """The yardstick of issue 15: what one writes by hand with rasterio for a CVA change map.

    Per-band z-scores (AFTER's mean and std matched to BEFORE's, from ``sample_windows`` windows of
    ``sample_size`` px spread over the scene, as detect samples them), the change-vector magnitude, a
    global Otsu threshold on the sample, a probability ``m / (m + t)`` (0.5 at the threshold), and
    full-width strips of ``strip`` rows read, computed and written to two tiled DEFLATE GeoTIFFs
    (float32 probability, uint8 mask). With ``polygons``, each strip's mask is polygonised
    (``rasterio.features.shapes``; regions are cut at strip borders, no dissolve, no minimum area)
    and all polygons are written to a GeoPackage and a Shapefile at the end. No overviews, no COG, no
    blending, no quicklook. Returns seconds: wall, CPU (this process, all threads) and the parts.
    """
    import geopandas as gpd
    import rasterio
    import rasterio.features
    import shapely
    from rasterio.windows import Window
    from skimage.filters import threshold_otsu

    wall0, cpu0 = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(before) as db, rasterio.open(after) as da:
        h, w = db.height, db.width
        rng = np.random.default_rng(seed)
        side = int(np.sqrt(sample_windows))
        size = min(sample_size, h, w)
        wins = [Window(int(c), int(r), size, size)
                for r in np.linspace(0, h - size, side).astype(int) for c in np.linspace(0, w - size, side).astype(int)]
        sb = np.concatenate([db.read(window=win).reshape(db.count, -1) for win in wins], axis=1).astype(np.float32)
        sa = np.concatenate([da.read(window=win).reshape(da.count, -1) for win in wins], axis=1).astype(np.float32)
        mb, stb = sb.mean(axis=1), sb.std(axis=1) + 1e-6
        ma, sta = sa.mean(axis=1), sa.std(axis=1) + 1e-6
        scale_b, shift_b = (1 / stb)[:, None, None], (-mb / stb)[:, None, None]
        scale_a, shift_a = (1 / sta)[:, None, None], (-ma / sta)[:, None, None]
        d = (sa - ma[:, None]) / sta[:, None] - (sb - mb[:, None]) / stb[:, None]
        sample = np.sqrt((d * d).sum(axis=0))
        t = float(threshold_otsu(sample[rng.permutation(sample.size)[:1_000_000]]))
        prof = dict(driver="GTiff", width=w, height=h, count=1, crs=db.crs, transform=db.transform, tiled=True,
                    blockxsize=512, blockysize=512, compress="DEFLATE")
        geoms: list = []
        with rasterio.open(out / "prob.tif", "w", dtype="float32", **prof) as wp, \
                rasterio.open(out / "mask.tif", "w", dtype="uint8", **prof) as wm:
            for r0 in range(0, h, strip):
                win = Window(0, r0, w, min(strip, h - r0))
                b = db.read(window=win, out_dtype="float32")
                a = da.read(window=win, out_dtype="float32")
                b *= scale_b
                b += shift_b
                a *= scale_a
                a += shift_a
                a -= b
                a *= a
                mag = np.sqrt(a.sum(axis=0))
                mask = (mag >= t).astype(np.uint8)
                mag /= mag + t
                wp.write(mag, 1, window=win)
                wm.write(mask, 1, window=win)
                if polygons and mask.any():
                    tr = db.window_transform(win)
                    geoms.extend(shapely.geometry.shape(g) for g, _ in
                                 rasterio.features.shapes(mask, mask=mask.astype(bool), transform=tr))
    if polygons:
        frame = gpd.GeoDataFrame({"id": np.arange(1, len(geoms) + 1)}, geometry=geoms, crs=db.crs)
        frame["area_m2"] = frame.geometry.area
        frame.to_file(out / "changes.gpkg", engine="pyogrio")
        frame.to_file(out / "changes.shp", engine="pyogrio")
    return {"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0,
            "polygons": len(geoms) if polygons else 0}


def end_to_end(before: Path, after: Path, out: Path, opts) -> tuple[float, dict]:
    from geochange.detect import detect

    shutil.rmtree(out, ignore_errors=True)
    t, cpu = time.perf_counter(), time.process_time()
    summary = detect(str(before), str(after), out, opts)
    summary["cpu_s"] = time.process_time() - cpu
    return time.perf_counter() - t, summary


def _warm_imports() -> None:
    """Import what detect imports lazily, so the first timed run does not pay for it."""
    import geopandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import pyogrio  # noqa: F401
    import rasterio.features  # noqa: F401
    import rasterio.shutil  # noqa: F401
    import shapely  # noqa: F401
    from scipy import ndimage  # noqa: F401

    import geochange.detect  # noqa: F401
    from geochange.device import resolve_device
    from geochange.models import create_model

    resolve_device("auto")  # imports torch
    create_model("cva")


def bench_efficiency(pair: tuple[Path, Path], n: int, workdir: Path, args) -> dict:
    from geochange.detect import DetectOptions
    from geochange.progress import set_quiet

    set_quiet(True)
    _warm_imports()
    opts = DetectOptions(model="cva", tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, overwrite=True)
    out = workdir / f"out_e2e_{n}"
    best: dict[str, dict] = {}
    io_out, min_out = workdir / f"out_io_{n}", workdir / f"out_min_{n}"

    def keep(which: str, result: dict) -> None:
        if which not in best or result["wall"] < best[which]["wall"]:
            best[which] = result

    for rep in range(args.repeats):
        # alternate the order, so none always gets the warmer caches
        order = ("m", "io", "min", "minpoly", "e")
        for which in order if rep % 2 == 0 else order[::-1]:
            gc.collect()
            if which in ("m", "io"):
                cpu = time.process_time()
                r = model_only(*pair, opts, out=io_out if which == "io" else None)
                keep(which, {**r, "wall": r["total"], "cpu": time.process_time() - cpu})
            elif which in ("min", "minpoly"):
                shutil.rmtree(min_out, ignore_errors=True)
                keep(which, minimal_pipeline(*pair, min_out, polygons=which == "minpoly", seed=opts.seed))
            else:
                wall, summary = end_to_end(*pair, out, opts)
                keep("e", {"wall": wall, "cpu": summary["cpu_s"], "summary": summary})
        print(f"  {n}: repeat {rep + 1}/{args.repeats}: " + ", ".join(
            f"{NAMES[k]} {best[k]['wall']:.2f} s" for k in order), flush=True)
    for folder in (out, io_out, min_out):
        shutil.rmtree(folder, ignore_errors=True)
    summary = best["e"].pop("summary")
    return {"n": n, "model_only": best["m"], "model_io": best["io"], "minimal": best["min"],
            "minimal_polygons": best["minpoly"], "end_to_end": best["e"]["wall"], "end_to_end_cpu": best["e"]["cpu"],
            "timings": summary["timings_s"], "windows": summary["engine"]["windows"],
            "polygons": summary["polygons"], "changed_fraction": summary["changed_fraction"]}


#: the measurements of part (a), by key
NAMES = {"m": "model-only", "io": "model+write", "min": "minimal", "minpoly": "minimal+polygons", "e": "detect"}


# --------------------------------------------------------------------------------------------------
# (b) peak RSS
# --------------------------------------------------------------------------------------------------

#: runs its argv as its only child and prints that child's peak RSS (KiB on Linux) and wall time
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "dt = time.perf_counter() - t\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, dt)\n"
)


def run_for_peak_rss(cmd: list[str], what: str) -> tuple[float, float, str]:
    """Run ``cmd`` as the only child of a fresh wrapper process: (peak RSS MiB, wall s, its stderr)."""
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True)
    try:
        rc, kib, wall = res.stdout.split()
    except ValueError:
        raise SystemExit(f"peak-RSS wrapper failed for {what}: {res.stdout}{res.stderr}") from None
    if int(rc) != 0:
        raise SystemExit(f"{what} failed (exit {rc}):\n{res.stderr}")
    return int(kib) / 1024, float(wall), res.stderr


def peak_rss(pair: tuple[Path, Path], n: int, workdir: Path, args) -> dict:
    out = workdir / f"out_rss_{n}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "geochange", "detect", str(pair[0]), str(pair[1]), "--out", str(out),
           "--quiet", "--overwrite", "--tile", str(args.tile), "--overlap", str(args.overlap),
           "--batch-size", str(args.batch_size)]
    try:
        mib, wall, _ = run_for_peak_rss(cmd, f"geochange detect on the {n}x{n} pair")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "peak_mib": mib, "wall": wall}


def profile_detect(pair: tuple[Path, Path], n: int, workdir: Path, args, top: int = 10) -> None:
    import cProfile
    import pstats

    from geochange.detect import DetectOptions
    from geochange.progress import set_quiet

    set_quiet(True)
    _warm_imports()
    opts = DetectOptions(model="cva", tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, overwrite=True)
    prof = cProfile.Profile()
    out = workdir / f"out_prof_{n}"
    shutil.rmtree(out, ignore_errors=True)
    prof.enable()
    end_to_end(*pair, out, opts)
    prof.disable()
    shutil.rmtree(out, ignore_errors=True)
    print(f"\ncProfile of detect on the {n}x{n} pair, top {top} by cumulative time:")
    pstats.Stats(prof, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(top)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1536, 6144, 12288],
                   help="square pair sizes in px (peak RSS: each; ratio = largest / smallest) [1536 6144 12288]")
    p.add_argument("--efficiency-sizes", type=int, nargs="*", default=None,
                   help="sizes for the efficiency and CPU measurements [default: all of --sizes up to 6144]")
    p.add_argument("--tile", type=int, default=512, help="window size [512]")
    p.add_argument("--overlap", type=int, default=64, help="window overlap [64]")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call [8]")
    p.add_argument("--repeats", type=int, default=2, help="repeats of each efficiency measurement (best kept) [2]")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the synthetic pairs are kept (and reused) and outputs go "
                        "[default: a temporary folder, removed at the end]")
    p.add_argument("--skip-efficiency", action="store_true", help="only the peak-RSS part")
    p.add_argument("--skip-rss", action="store_true", help="only the efficiency part")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile one detect run on the largest pair and print the top functions "
                        "(main thread only: the reader/writer threads show up as lock waits)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    sizes = sorted(set(args.sizes))
    eff_sizes = sorted(set(args.efficiency_sizes if args.efficiency_sizes is not None
                           else [n for n in sizes if n <= 6144] or sizes[:1]))
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="geochange-bench-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        print(f"workdir: {workdir}  (cpus: {os.cpu_count()}, tile {args.tile}, overlap {args.overlap}, "
              f"batch {args.batch_size})", flush=True)
        pairs = {n: make_pair(workdir, n) for n in sorted(set(sizes) | set(eff_sizes))}

        eff = []
        if not args.skip_efficiency:
            print("(a) engine efficiency: model-only vs detect, best of", args.repeats, flush=True)
            eff = [bench_efficiency(pairs[n], n, workdir, args) for n in eff_sizes]
        rss = []
        if not args.skip_rss:
            print("(b) peak RSS of `python3 -m geochange detect` (one fresh subprocess per size)", flush=True)
            for n in sizes:
                rss.append(peak_rss(pairs[n], n, workdir, args))
                print(f"  {n}: {rss[-1]['peak_mib']:.0f} MiB (wall {rss[-1]['wall']:.1f} s)", flush=True)

        print()
        if eff:
            print("(a) engine efficiency (seconds; goal (model+write)/detect >= 0.85)")
            hdr = (f"{'size':>6} {'win':>4} {'read+pred':>10} {'=fit':>6} {'+loop':>6} {'(read':>6} "
                   f"{'predict)':>8} {'+write':>7} {'detect':>7} {'r/d':>6} {'ratio':>6} | detect timings_s: "
                   f"{'fit':>6} {'infer':>6} {'model':>6} {'publish':>7} {'qlook':>6} {'total':>6}")
            print(hdr)
            for r in eff:
                m, mio, tm = r["model_only"], r["model_io"], r["timings"]
                strict = m["total"] / r["end_to_end"]
                ratio = mio["total"] / r["end_to_end"]
                r["ratio_read_predict"], r["ratio"] = strict, ratio
                ok = "ok" if ratio >= 0.85 else "LOW"
                print(f"{r['n']:>6} {r['windows']:>4} {m['total']:>10.2f} {m['fit']:>6.2f} {m['loop']:>6.2f} "
                      f"{m['read']:>6.2f} {m['predict']:>8.2f} {mio['total']:>7.2f} {r['end_to_end']:>7.2f} "
                      f"{strict:>6.3f} {ratio:>6.3f} | "
                      f"{'':17}{tm.get('fit', 0):>6.2f} {tm.get('inference', 0):>6.2f} {tm.get('model', 0):>6.2f} "
                      f"{tm.get('publish', 0):>7.2f} {tm.get('quicklook', 0):>6.2f} {tm.get('total', 0):>6.2f}  {ok}")
            print("(a') CPU seconds (all threads) against the minimal hand-written pipeline "
                  "(goal detect / minimal+polygons <= 1.5)")
            print(f"{'size':>6} {'minimal':>8} {'+polygons':>10} {'model+write':>12} {'detect':>7} {'(wall)':>7} "
                  f"{'polygons':>9} {'d/min':>6} {'d/min+poly':>11}")
            for r in eff:
                mn, mp = r["minimal"], r["minimal_polygons"]
                r["cpu_ratio_minimal"] = r["end_to_end_cpu"] / mn["cpu"]
                r["cpu_ratio"] = r["end_to_end_cpu"] / mp["cpu"]
                ok = "ok" if r["cpu_ratio"] <= 1.5 else "HIGH"
                print(f"{r['n']:>6} {mn['cpu']:>8.2f} {mp['cpu']:>10.2f} {r['model_io']['cpu']:>12.2f} "
                      f"{r['end_to_end_cpu']:>7.2f} {r['end_to_end']:>7.2f} {r['polygons']:>9} "
                      f"{r['cpu_ratio_minimal']:>6.2f} {r['cpu_ratio']:>11.2f}  {ok}")
        if rss:
            print("(b) peak RSS of `geochange detect` (goal largest/smallest <= 1.3)")
            for r in rss:
                print(f"{r['n']:>6}: {r['peak_mib']:8.1f} MiB   (wall {r['wall']:.1f} s)")
            if len(rss) > 1:
                ratio = rss[-1]["peak_mib"] / rss[0]["peak_mib"]
                print(f"ratio {rss[-1]['n']}/{rss[0]['n']}: {ratio:.3f}  {'ok' if ratio <= 1.3 else 'HIGH'}")
        if args.profile:
            profile_detect(pairs[max(pairs)], max(pairs), workdir, args)
        print(f"benchmark wall time: {time.perf_counter() - t_all:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({"efficiency": eff, "rss": rss}, indent=2, default=float) + "\n")
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
