"""build-wdc speed: footprint annotation at city scale, and patch extraction with 1 and N processes.

    python benchmarks/bench_wdc.py                       # 200,000 footprints per year, 2 workers
    python benchmarks/bench_wdc.py --footprints 50000 --overlay-subset 10000 --workers 2 --noisy 1500

(a) Annotation: two synthetic years of ``--footprints`` buildings on a 20 m lot grid (2 % destroyed,
    2 % new, the rest moved by < 1 m), annotated in both directions by ``footprints.annotate`` (STRtree
    bulk query + vectorised IoU) on one core. The reference is ``geopandas.overlay(how="intersection")``
    on the first ``--overlay-subset`` buildings of each year: the first step of an overlay-based
    annotation (it still lacks the areas, unions and per-building maxima), so the printed ratio
    overlay / annotate on that subset is a lower bound of the speed-up.
(b) Patch extraction: ``build_wdc`` on a synthetic city (tests/conftest.make_city, 0.5 m pixels)
    with ``--noisy`` noisy negatives plus the positives and negatives, in this process
    (``workers=0``) and on a local Dask cluster of ``--workers`` processes; patches per second each,
    and the ratio. Both runs write the same dataset (the same seed), so the ratio is the parallel gain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def synthetic_years(n: int, seed: int = 0):
    """Two years of box footprints on a lot grid: most moved by < 1 m, 2 % destroyed, 2 % new."""
    import shapely

    from geochange.data.footprints import Footprints

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n * 1.02)))
    i, j = np.divmod(np.arange(int(n * 1.02)), side)
    x = 400_000 + j * 20.0 + rng.uniform(1, 6, len(i))
    y = 130_000 + i * 20.0 + rng.uniform(1, 6, len(i))
    w, h = rng.uniform(6, 12, (2, len(i)))
    shift = rng.uniform(-0.8, 0.8, (2, len(i)))
    g0 = shapely.box(x, y, x + w, y + h)
    g1 = shapely.box(x + shift[0], y + shift[1], x + w + shift[0], y + h + shift[1])
    fate = rng.random(len(i))
    in0 = fate >= 0.02                   # the first 2 % are new (year 1 only)
    in1 = (fate < 0.02) | (fate >= 0.04)  # the next 2 % are destroyed (year 0 only)
    in0[np.flatnonzero(in0)[n:]] = False
    ids = np.array([str(k) for k in range(len(i))], object)
    return (Footprints(1999, ids[in0], g0[in0], "EPSG:26985"), Footprints(2005, ids[in1], g1[in1], "EPSG:26985"))


def bench_annotation(n: int, subset: int) -> None:
    import geopandas as gpd

    from geochange.data.footprints import Footprints, annotate

    fp0, fp1 = synthetic_years(n)
    t = time.perf_counter()
    changes = annotate(fp0, fp1)
    full = time.perf_counter() - t
    print(f"(a) annotation: {len(fp0.geoms):,} vs {len(fp1.geoms):,} footprints, both directions: {full:.2f} s "
          f"(goal < 10 s); {len(changes.destroyed):,} destroyed, {len(changes.new):,} new")
    a0 = Footprints(fp0.year, fp0.ids[:subset], fp0.geoms[:subset], fp0.crs)
    a1 = Footprints(fp1.year, fp1.ids[:subset], fp1.geoms[:subset], fp1.crs)
    t = time.perf_counter()
    annotate(a0, a1)
    ours = time.perf_counter() - t
    left = gpd.GeoDataFrame({"i": np.arange(subset)}, geometry=a0.geoms, crs=a0.crs)
    right = gpd.GeoDataFrame({"k": np.arange(subset)}, geometry=a1.geoms, crs=a1.crs)
    t = time.perf_counter()
    gpd.overlay(left, right, how="intersection", keep_geom_type=True)
    overlay = time.perf_counter() - t
    print(f"    on {subset:,} per year: geopandas.overlay (intersection only) {overlay:.2f} s, annotate {ours:.2f} s, "
          f"ratio overlay/annotate {overlay / ours:.2f}")


def bench_extraction(workers: int, noisy: int, size_px: int) -> None:
    from conftest import make_city

    from geochange.data.wdc import WdcOptions, build_wdc
    from geochange.progress import set_quiet

    set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        city = make_city(Path(tmp) / "city", size_px=size_px)
        manifest = city.manifest()
        rates = {}
        for n in (0, workers):
            opts = WdcOptions(patch=128, noisy=noisy, workers=n, margin=8, block=2)
            t = time.perf_counter()
            summary = build_wdc(manifest, Path(tmp) / f"out_{n}", options=opts)
            seconds = time.perf_counter() - t
            total = summary["patches"]["total"]
            rates[n] = total / seconds
            label = "this process" if n == 0 else f"{n} Dask workers"
            print(f"(b) extraction, {label}: {total} patches of 128 px in {seconds:.1f} s = {rates[n]:.0f} patches/s")
        print(f"    speed-up {workers} workers / 1 process: {rates[workers] / rates[0]:.2f} (on {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--footprints", type=int, default=200_000)
    parser.add_argument("--overlay-subset", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noisy", type=int, default=3000)
    parser.add_argument("--size", type=int, default=2048, help="synthetic city side in pixels (0.5 m)")
    args = parser.parse_args()
    bench_annotation(args.footprints, args.overlay_subset)
    bench_extraction(args.workers, args.noisy, args.size)


if __name__ == "__main__":
    main()
