#!/usr/bin/env python3
"""Benchmark of ``geochange detect`` on a Dask cluster: one large pair in blocks, 1 and 2 workers.

Three runs of ``geochange.detect.detect`` on the same synthetic pair (``bench_detect.make_pair``),
in this order, repeated ``--repeats`` times (best of each kept):
  plain     -- the single-process path (no Dask);
  1 worker  -- ``--workers 1``: the blocked path on a local Dask cluster of one process;
  2 workers -- ``--workers 2``.
Every time is end to end, as a user waits for it: fitting, the cluster's start, the blocks,
the assembly (seams, COGs through a VRT, polygons), quicklook and summary.

Figures: speed-up = t(1 worker) / t(2 workers), and the overhead of the Dask path =
t(1 worker) / t(plain) (goal <= 1.15). The plain run already keeps more than one core busy (reader
and writer threads, GDAL's compression), so on a 2-core machine the speed-up is bounded by
cores / (cores the plain run uses); that figure is printed too. It also checks that the three
runs wrote the same probability raster (compared window by window) and the same polygon count.

    python3 benchmarks/bench_scale.py [--size 6144] [--model cva] [--block-size 2048] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(before: Path, after: Path, out: Path, model: str, tile: int, block_size: int,
        workers: int | None) -> tuple[float, dict]:
    from geochange.detect import DetectOptions, detect

    shutil.rmtree(out, ignore_errors=True)
    opts = DetectOptions(model=model, tile=tile, workers=workers, block_size=block_size, overwrite=True)
    cpu0 = _cpu_seconds()
    t = time.perf_counter()
    summary = detect(str(before), str(after), out, opts)
    seconds = time.perf_counter() - t
    summary["cpu_s"] = _cpu_seconds() - cpu0
    summary["cores_used"] = summary["cpu_s"] / seconds
    return seconds, summary


def _cpu_seconds() -> float:
    import resource

    # this process and its children that ended (a local cluster's worker processes, once closed)
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def same_raster(a: Path, b: Path) -> bool:
    """Equal pixel for pixel, read by blocks (never a whole raster in memory)."""
    import rasterio

    with rasterio.open(a) as da, rasterio.open(b) as db:
        if (da.width, da.height) != (db.width, db.height):
            return False
        return all(np.array_equal(da.read(1, window=w), db.read(1, window=w)) for _, w in da.block_windows(1))


def main(argv: list[str] | None = None) -> int:
    from bench_detect import make_pair

    from geochange.progress import set_quiet

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=6144, help="square pair size in px (default 6144)")
    p.add_argument("--model", default="cva")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the synthetic pair here")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    set_quiet(True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gc_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    before, after = make_pair(workdir, args.size)
    runs = {"plain": None, "1 worker": 1, "2 workers": 2}
    best: dict[str, float] = {}
    summaries: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, workers in runs.items():
            seconds, summary = run(before, after, workdir / f"out_{name.replace(' ', '_')}", args.model, args.tile,
                                   args.block_size, workers)
            best[name] = min(best.get(name, float("inf")), seconds)
            summaries[name] = summary
            print(f"  repeat {rep + 1}: {name:9s} {seconds:7.2f} s  (fit {summary['timings_s']['fit']:.2f}, "
                  f"blocks/inference {summary['timings_s']['inference']:.2f}, "
                  f"publish {summary['timings_s']['publish']:.2f}; cpu {summary['cpu_s']:.1f} s)", flush=True)
    outs = {name: workdir / f"out_{name.replace(' ', '_')}" for name in runs}
    identical = all(same_raster(outs["plain"] / "change_probability.tif", outs[n] / "change_probability.tif")
                    and summaries[n]["polygons"] == summaries["plain"]["polygons"] for n in runs)
    blocks = summaries["2 workers"]["engine"]["blocks"]
    result = {
        "size_px": args.size, "model": args.model, "tile": args.tile, "block_size": args.block_size, "blocks": blocks,
        "seconds": {k: round(v, 2) for k, v in best.items()},
        "speedup_2_over_1_worker": round(best["1 worker"] / best["2 workers"], 3),
        "dask_overhead_1_worker_over_plain": round(best["1 worker"] / best["plain"], 3),
        "identical_outputs": identical,
        "plain_cores_used": round(summaries["plain"]["cores_used"], 2),
    }
    print(f"\n{args.size}x{args.size} px, {args.model}, tile {args.tile}, {blocks} blocks of ~{args.block_size} rows")
    for k, v in result["seconds"].items():
        print(f"  {k:9s} {v:7.2f} s")
    print(f"  speed-up, 2 workers over 1:         {result['speedup_2_over_1_worker']:.2f}x")
    print(f"  Dask path with 1 worker over plain:  {result['dask_overhead_1_worker_over_plain']:.3f} (goal <= 1.15)")
    print(f"  identical outputs:                   {identical}")
    print(f"  cores the plain run keeps busy:      {result['plain_cores_used']:.2f} (of {os.cpu_count()}): "
          "the ceiling of any speed-up here")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
