#!/usr/bin/env python3
"""Accuracy of every detect model against reference methods, on every scene with truth (issue 12).

One table of F1, kappa, AUC and the share of pixels flagged, per scene and method, with means over
the six OSCD cities, the real scenes and the synthetic ones (scenes.py says what each scene is).

* geochange's models run through ``geochange.detect.detect`` with their defaults, end to end (co-
  registration, normalisation, the model, the region decision); their ``change_mask.tif`` is scored
  with ``geochange.evaluate.evaluate``, and the AUC is that of ``change_probability.tif``.
  ``pile`` is the largest share of the mask's changed pixels that hold one single probability
  value (a saturated probability raster has most of them at 1.0).
* Reference methods (reference.py, written from their papers) run in memory on the same pairs
  read through ``RasterPair`` (AFTER warped onto BEFORE's grid, nothing else): CVA + Otsu,
  IR-MAD (Nielsen 2007) with its chi-square test at 1 %, PCA-k-means (Celik 2009).

The last line gives the default model's mean kappa and the best reference method's.

    python benchmarks/bench_accuracy.py [--workdir /tmp/acc] [--models cva drlnet] [--scenes bercy paris]
    python benchmarks/bench_accuracy.py --tiny     # a smoke run: two synthetic scenes, cva and CVA + Otsu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reference  # noqa: E402
import scenes as sc  # noqa: E402

DETECT_MODELS = ("cva", "drlnet", "vae", "rscvae")
DEFAULT_MODEL = "cva"


def _truth_on(grid, truth_path: Path) -> np.ndarray:
    """The truth (1 changed, 0 unchanged, 255 unlabelled) on ``grid`` (a ``geochange.io.align.Grid``), nearest."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(truth_path) as t:
        nodata = t.nodata if t.nodata is not None else 255
        with WarpedVRT(t, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.nearest, nodata=nodata) as v:
            truth = v.read(1)
    return np.where(truth == nodata, 255, (truth > 0).astype(np.uint8)).astype(np.uint8)


def _auc(score: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if truth.min() == truth.max():
        return float("nan")
    return float(roc_auc_score(truth, score))


def oracle_kappa(score: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The best kappa of ``score > t`` over all thresholds t, and that t (exact: every cut is tried)."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], truth[order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]          # cut only between distinct scores
    tp = np.cumsum(y)[last]
    k = np.arange(1, s.size + 1, dtype=np.float64)[last]
    fp = k - tp
    n, p = float(s.size), float(y.sum())
    po = (tp + (n - p - fp)) / n
    pe = (p * k + (n - p) * (n - k)) / n ** 2
    kappa = np.where(pe < 1, (po - pe) / np.maximum(1 - pe, 1e-12), 0.0)
    i = int(np.argmax(kappa))
    cuts = s[last]
    return float(kappa[i]), float(cuts[i + 1] if i + 1 < cuts.size else cuts[i])


def _best_kappa(score: np.ndarray, truth: np.ndarray) -> float:
    """The kappa of the scores at their kappa-best threshold on these very pixels (pixel by pixel, no
    minimum mapping unit): an oracle that says what the ranking is worth, apart from how much is flagged."""
    return oracle_kappa(score, truth)[0] if truth.any() and not truth.all() else 0.0


class Tally:
    """A pooled confusion matrix and scores of one method on one scene (over its parts)."""

    def __init__(self) -> None:
        self.c = np.zeros(4)          # tp, fp, fn, tn
        self.scores: list[np.ndarray] = []
        self.truths: list[np.ndarray] = []
        self.extra: dict = {}

    def add(self, pred: np.ndarray, score: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        m = valid & (truth != 255)
        p, t = pred[m].astype(bool), truth[m] == 1
        self.c += [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()]
        self.scores.append(score[m].astype(np.float64))
        self.truths.append(t)

    def row(self) -> dict:
        score, truth = np.concatenate(self.scores), np.concatenate(self.truths)  # pooled once: AUC, kappa_best
        tp, fp, fn, tn = self.c
        n = self.c.sum()
        po = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
        return {"kappa": float((po - pe) / (1 - pe)) if pe < 1 else 0.0,
                "f1": float(2 * tp / max(2 * tp + fp + fn, 1)),
                "auc": _auc(score, truth), "kappa_best": _best_kappa(score, truth),
                "flagged": float((tp + fp) / n), "true": float((tp + fn) / n), "scored": int(n), **self.extra}


def parse_variant(text: str) -> tuple[str, str, dict, dict]:
    """``NAME=MODEL[:key=value,...]`` -> (name, model, model params, detect options); the keys
    ``mmu_px`` (the MMU in pixels), ``hysteresis`` and ``coregister`` are detect options."""
    name, _, spec = text.partition("=")
    model, _, kv = spec.partition(":")
    params, options = {}, {}
    for item in filter(None, kv.split(",")):
        key, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        (options if key in ("mmu_px", "hysteresis", "coregister") else params)[key] = value
    return name, model or name, params, options


def run_detect(scene: dict, model: str, workdir: Path, seed: int, params: dict | None = None,
               options: dict | None = None, tag: str | None = None) -> dict:
    import rasterio

    from geochange.detect import DetectOptions, detect
    from geochange.geometry import GroundScale
    from geochange.io.align import Grid

    tally = Tally()
    t0 = time.perf_counter()
    polygons = specks = 0
    piles = []
    timings = {"fit": 0.0, "inference": 0.0}
    for k, part in enumerate(scene.get("parts") or [scene]):
        out = workdir / "runs" / scene["name"] / f"{tag or model}-{k}"
        opts = {**(options or {}), **part.get("options", {})}   # a part may add its own (bench_labels: its marks)
        if "mmu_px" in opts:
            with rasterio.open(part["before"]) as ds:
                px = GroundScale(ds.transform, ds.crs, ds.width, ds.height).pixel_area()
            opts["min_area"] = opts.pop("mmu_px") * px
        if "hysteresis" in opts:
            opts["hysteresis_low"] = opts.pop("hysteresis")
        summary = detect(str(part["before"]), str(part["after"]), out,
                         DetectOptions(model=model, model_params=dict(params or {}), seed=seed, overwrite=True,
                                       **opts))
        with rasterio.open(out / "change_probability.tif") as ds:
            prob = ds.read(1)
        with rasterio.open(out / "change_mask.tif") as ds:
            mask, grid = ds.read(1), Grid.of(ds)
        truth = _truth_on(grid, part["truth"])
        valid = mask != 255
        tally.add(mask == 1, prob, truth, valid)
        changed = prob[(mask == 1)]
        if changed.size:
            piles.append((np.unique(changed, return_counts=True)[1].max(), changed.size))
        polygons += summary["polygons"]
        specks += summary.get("regions_dropped", 0)
        for key in timings:
            timings[key] += summary.get("timings_s", {}).get(key, 0.0)
    tally.extra = {"seconds": time.perf_counter() - t0, "polygons": polygons,
                   "pile": max((a / b for a, b in piles), default=0.0),
                   "fit_s": timings["fit"], "inference_s": timings["inference"]}
    return tally.row()


def run_reference(scene: dict, method: str) -> dict:
    from rasterio.windows import Window

    from geochange.io.pair import RasterPair

    tally = Tally()
    t0 = time.perf_counter()
    for part in scene.get("parts") or [scene]:
        with RasterPair.open(str(part["before"]), str(part["after"])) as pair:
            wp = pair.read_raw(Window(0, 0, pair.grid.width, pair.grid.height))
            truth = _truth_on(pair.grid, part["truth"])
        score, changed = reference.REFERENCES[method](wp.before.astype(np.float64), wp.after.astype(np.float64),
                                                      wp.valid)
        tally.add(changed, score, truth, wp.valid)
    tally.extra = {"seconds": time.perf_counter() - t0}
    return tally.row()


def groups(names: list[str]) -> dict[str, list[str]]:
    g = {"OSCD": [n for n in names if n in sc.OSCD], "real": [n for n in names if n in sc.REAL],
         "synthetic": [n for n in names if n in sc.SYNTHETIC]}
    g["all"] = list(names)
    return {k: v for k, v in g.items() if v}


def print_tables(rows: dict, names: list[str], methods: list[str]) -> list[str]:
    lines = []
    hdr = f"{'scene':<15} {'method':<11} {'kappa':>6} {'F1':>6} {'AUC':>6} {'flag%':>6} {'true%':>6} {'pile':>5} {'polys':>6} {'s':>6}"
    lines += [hdr, "-" * len(hdr)]
    for n in names:
        for m in methods:
            r = rows.get((n, m))
            if r is None:
                continue
            pile = f"{r['pile']:.2f}" if "pile" in r else "-"
            polys = str(r["polygons"]) if "polygons" in r else "-"
            lines.append(f"{n:<15} {m:<11} {r['kappa']:>6.3f} {r['f1']:>6.3f} {r['auc']:>6.3f} "
                         f"{100 * r['flagged']:>6.2f} {100 * r['true']:>6.2f} {pile:>5} {polys:>6} {r['seconds']:>6.1f}")
    lines.append("")
    lines.append("mean kappa (F1) by group; OSCD wins: cities where the method's kappa beats every reference method's")
    gs = groups(names)
    hdr2 = f"{'method':<11} " + " ".join(f"{g + f' ({len(v)})':>20}" for g, v in gs.items()) + f" {'OSCD wins':>10}"
    lines += [hdr2, "-" * len(hdr2)]
    refs = [m for m in methods if m in reference.REFERENCES]
    best = {n: max((rows[(n, m)]["kappa"] for m in refs if (n, m) in rows), default=-1.0) for n in names}
    for m in methods:
        cells = []
        for g, members in gs.items():
            ks = [rows[(n, m)]["kappa"] for n in members if (n, m) in rows]
            fs = [rows[(n, m)]["f1"] for n in members if (n, m) in rows]
            cells.append(f"{np.mean(ks):.3f} ({np.mean(fs):.3f})" if len(ks) == len(members) else "incomplete")
        wins = sum(1 for n in gs.get("OSCD", []) if (n, m) in rows and rows[(n, m)]["kappa"] > best[n]) \
            if m not in refs else "-"
        lines.append(f"{m:<11} " + " ".join(f"{c:>20}" for c in cells) + f" {wins:>10}")
    for line in lines:
        print(line)
    return lines


def markdown(rows: dict, names: list[str], methods: list[str]) -> str:
    """The table as markdown: one row per scene, kappa / F1 / AUC / flagged % per method, then the means."""
    have = [m for m in methods if any((n, m) in rows for n in names)]
    out = ["| scene | true % | " + " | ".join(have) + " |", "|---|---|" + "---|" * len(have)]
    for n in names:
        true = next((rows[(n, m)]["true"] for m in have if (n, m) in rows), float("nan"))
        cells = [f"{rows[(n, m)]['kappa']:.3f} / {rows[(n, m)]['f1']:.3f} / {rows[(n, m)]['auc']:.3f} / "
                 f"{100 * rows[(n, m)]['flagged']:.1f}" if (n, m) in rows else "-" for m in have]
        out.append(f"| {n} | {100 * true:.2f} | " + " | ".join(cells) + " |")
    for g, members in groups(names).items():
        cells = []
        for m in have:
            ks = [rows[(n, m)]["kappa"] for n in members if (n, m) in rows]
            cells.append(f"{np.mean(ks):.3f}" if len(ks) == len(members) else "-")
        out.append(f"| mean kappa, {g} ({len(members)}) | | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None, help="scenes and runs (reused) [a temporary folder]")
    p.add_argument("--data", type=Path, default=sc.DATA, help=f"the shared sample data [{sc.DATA}]")
    p.add_argument("--scenes", nargs="+", choices=sc.SCENES, default=None, help="scenes [all]")
    p.add_argument("--models", nargs="+", choices=DETECT_MODELS, default=list(DETECT_MODELS),
                   help="geochange models [all]")
    p.add_argument("--references", nargs="+", choices=list(reference.REFERENCES), default=list(reference.REFERENCES))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=MODEL:k=v,...",
                   help="also run MODEL with these parameters under NAME, e.g. cva-raw=cva:filter=none,threshold=ggki "
                        "(keys mmu_px, hysteresis, coregister set detect options)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="smoke run: illumination and crs, cva and CVA + Otsu")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    if args.tiny:
        args.scenes, args.models, args.references = ["illumination", "crs"], ["cva"], ["cva+otsu"]
    names = args.scenes or list(sc.SCENES)
    if not (args.data / "oscd").exists() and any(n in sc.REAL for n in names):
        print(f"{args.data}: no shared data; running the synthetic scenes only", flush=True)
        names = [n for n in names if n in sc.SYNTHETIC]

    from geochange.progress import set_quiet

    set_quiet(True)
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="geochange-acc-")) if temp else args.workdir
    variants = {v[0]: v[1:] for v in map(parse_variant, args.variant)}
    methods = list(args.models) + list(variants) + list(args.references)
    rows: dict = {}
    t_all = time.perf_counter()
    try:
        for n in names:
            scene = {**sc.prepare(n, workdir, args.data, args.seed), "name": n}
            for m in methods:
                if m in variants:
                    model, params, options = variants[m]
                    r = run_detect(scene, model, workdir, args.seed, params, options, tag=m)
                elif m in DETECT_MODELS:
                    r = run_detect(scene, m, workdir, args.seed)
                else:
                    r = run_reference(scene, m)
                rows[(n, m)] = r
                print(f"  {n:<15} {m:<11} kappa {r['kappa']:.3f} F1 {r['f1']:.3f} AUC {r['auc']:.3f} "
                      f"flagged {100 * r['flagged']:.2f} % (true {100 * r['true']:.2f} %) {r['seconds']:.1f} s",
                      flush=True)
        print()
        print_tables(rows, names, methods)
        if args.json:
            args.json.write_text(json.dumps([{"scene": n, "method": m, **r} for (n, m), r in rows.items()], indent=1))
        if args.markdown:
            args.markdown.write_text(markdown(rows, names, methods))
        refs = [m for m in methods if m in reference.REFERENCES]
        for g, members in groups(names).items():
            if g not in ("OSCD", "synthetic") or DEFAULT_MODEL not in methods or not refs:
                continue
            mean = {m: np.mean([rows[(n, m)]["kappa"] for n in members]) for m in [DEFAULT_MODEL] + refs}
            best = max(refs, key=lambda m: mean[m])
            print(f"[{g}] default ({DEFAULT_MODEL}) mean kappa {mean[DEFAULT_MODEL]:.3f}; "
                  f"best reference ({best}) {mean[best]:.3f}")
        print(f"benchmark wall time: {time.perf_counter() - t_all:.0f} s")
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
