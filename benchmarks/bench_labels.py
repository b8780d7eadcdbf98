#!/usr/bin/env python3
"""Detection trained on a handful of marks against the label-free default and a random forest (issue 13).

``geochange detect BEFORE AFTER --labels MARKS --model M`` trains M on a few marks an analyst draws
(polygons or points with an integer field ``change``: 1 changed, 0 unchanged) and maps the scene.
This benchmark plays the analyst on every scene with truth (scenes.py): each pair (each DSIFN part)
is cut into two halves of BEFORE's columns; the marks are drawn from the truth of the LEFT half only,
and every method is scored on the RIGHT half only (its pixels with known truth).

Marks (per pair, ``--marks N`` per class, seeded by ``--seed``; ``--marks 0``: all of the left half's
truth, each region of changed and of unchanged pixels as a polygon: what a model could learn at most from
that half, a ceiling for the marks):

* changed: up to N connected components (4-connected) of truth == 1 in the left half, picked at random
  among those of at least 4 pixels, written as their exact pixel outlines; a component larger than
  400 px is cut down to the part of it (connected to its centre) within a 20 x 20 square around its
  centre, so that one mark is not half the truth;
* unchanged: N squares of 5 x 5 pixels (``--square``) whose pixels are all truth == 0 (so, on Taizhou's
  sparse truth, all labelled 0), not overlapping; where there are too few, points on truth == 0 pixels.

``--unchanged false-alarms``: the unchanged marks are first up to N regions of a label-free first run's
false alarms (its mask on truth == 0) in the left half, drawn like the changed ones (the analyst marks
what the first map got wrong); squares only where there are fewer.

``--corrections K``: the analyst's second round. N - K marks of each class are drawn as above, the default
label model is trained on them and maps the pair, and the K largest regions of its false alarms (marked
unchanged) and of its misses (marked changed) in the left half are added, drawn like the changed ones:
N of each class in all, as an analyst who looks at the first map and corrects its worst errors.

They are written as a GeoPackage in the scene's CRS (``WORKDIR/labels/SCENE[/PART]/marks.gpkg``).
A pair without a changed component in its left half has no marks: a scene made of one such pair is
scored by the label-free methods only, such a DSIFN part is left out of the scene for every method (a note says so).

Methods, each scored on the right half (kappa, F1, % flagged, seconds):

* ``cva``: the label-free default, ``detect(before, after, out, DetectOptions(seed=seed))``
  (bench_accuracy.run_detect);
* each label model of ``--models`` (default logistic cdcluster vae rscvae): ``detect`` with
  ``DetectOptions(model=M, labels=MARKS, label_field="change")``; its ``timings_s`` fit and inference too;
* ``rf``: the yardstick an analyst has at hand in QGIS / OTB: scikit-learn's RandomForestClassifier
  (100 trees, class_weight="balanced") on per-pixel features (both dates' bands, each standardised
  per band over the scene's valid pixels, their difference and its 5 x 5 mean), trained on the marked
  pixels (the same marks file burnt onto the grid) plus 5,000 random pixels of the whole scene taken as
  unchanged ("cheap negatives"), predicting every pixel; ``rf-nonneg``: the same on the marks only;
* ``--references`` (default cva+otsu): bench_accuracy's label-free reference methods on the whole pair.

The last lines give, per group of scenes, the default label model's mean kappa against cva's and rf's, and
every method's mean kappa at each scene's kappa-best threshold (``kappa_best``: pixel by pixel, chosen on the
scored pixels themselves, an oracle): what its ranking is worth, apart from how much it flags.

    python benchmarks/bench_labels.py --workdir /tmp/acc [--models logistic] [--scenes bercy paris]
    python benchmarks/bench_labels.py --workdir /tmp/acc --models none    # cva, rf and rf-nonneg only
    python benchmarks/bench_labels.py --tiny   # a smoke run: illumination, cva, rf and logistic
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_accuracy as ba  # noqa: E402
import reference  # noqa: E402
import scenes as sc  # noqa: E402

LABEL_MODELS = ("logistic", "cdcluster", "vae", "rscvae")
DEFAULT_LABEL_MODEL = "logistic"   # geochange.detect.LABELS_MODEL
LABEL_FREE = "cva"
RF_METHODS = ("rf", "rf-nonneg")
MIN_COMPONENT_PX = 4       # smaller changed components are not drawn
MAX_MARK_PX = 400          # larger ones are cut to a square of this area around their centre
SQUARE = 5                 # side of an unchanged square, px (--square)
RF_SMOOTH = 5              # rf's smoothed difference: its box mean over this side, px
CHEAP_NEGATIVES = 5000     # random scene pixels taken as unchanged by rf
RF_TREES = 100
#: --tiny: label models trained briefly (--param overrides them)
TINY_PARAMS = {"cdcluster": {"epochs": 2, "warmup_epochs": 1}, "vae": {"scene_epochs": 1, "scene_patches": 200},
               "rscvae": {"scene_epochs": 1}}


# -- marks -------------------------------------------------------------------------------------------

def _cut(piece: np.ndarray) -> np.ndarray:
    """The part of the component ``piece`` within a square of MAX_MARK_PX around its centre (the
    pixel nearest its centroid) that is connected to the centre."""
    from scipy import ndimage

    rows, cols = np.nonzero(piece)
    i = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    r, c = int(rows[i]), int(cols[i])
    side = int(np.sqrt(MAX_MARK_PX))
    r0, c0 = max(r - side // 2, 0), max(c - side // 2, 0)
    inside = np.zeros_like(piece)
    inside[r0:r0 + side, c0:c0 + side] = piece[r0:r0 + side, c0:c0 + side]
    lab, _ = ndimage.label(inside)
    return lab == lab[r, c]


def _outline(piece: np.ndarray, transform):
    """The exact pixel outline of ``piece`` (a boolean mask) as one polygon under ``transform``."""
    import rasterio.features
    import shapely
    import shapely.geometry

    parts = [shapely.geometry.shape(g) for g, _ in
             rasterio.features.shapes(piece.astype(np.uint8), mask=piece, transform=transform, connectivity=4)]
    return shapely.union_all(parts)


def _regions(mask: np.ndarray, n: int, rng: np.random.Generator | None, transform) -> tuple[list, int]:
    """Up to ``n`` of the 4-connected regions of ``mask`` of >= MIN_COMPONENT_PX pixels, picked at random
    (``rng`` None: the largest), as exact pixel outlines (one over MAX_MARK_PX cut down to its centre's
    square); and how many were cut."""
    from affine import Affine
    from scipy import ndimage

    lab, k = ndimage.label(mask)
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    ids = np.flatnonzero(sizes >= MIN_COMPONENT_PX)
    ids = ids[ids > 0]
    boxes = ndimage.find_objects(lab)
    geoms, cut = [], 0
    picked = ids[np.argsort(-sizes[ids], kind="stable")[:n]] if rng is None else \
        rng.choice(ids, size=min(n, len(ids)), replace=False)
    for i in sorted(picked):
        rows, cols = boxes[i - 1]
        piece = lab[rows, cols] == i
        if piece.sum() > MAX_MARK_PX:
            piece, cut = _cut(piece), cut + 1
        geoms.append(_outline(piece, transform @ Affine.translation(cols.start, rows.start)))
    return geoms, cut


def draw_marks(truth: np.ndarray, transform, n: int, rng: np.random.Generator,
               false_alarms: np.ndarray | None = None, square: int = SQUARE) -> tuple[list, list[int], dict]:
    """Marks from the left half of ``truth`` (1 changed, 0 unchanged, 255 unknown) on the grid of
    ``transform``: up to ``n`` changed regions and ``n`` unchanged squares of ``square`` px a side (or
    points where there are too few squares). With ``false_alarms`` (a first label-free run's mask), the
    unchanged marks are first its false alarms in the left half (regions of mask & truth == 0, drawn like
    the changed ones), squares only where there are too few. Returns (geometries, change values, counts)."""
    import shapely
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import ndimage

    left = truth[:, :truth.shape[1] // 2]
    changed = left == 1
    geoms, cut = _regions(changed, n, rng, transform)
    values = [1] * len(geoms)
    n_changed = len(geoms)
    alarms = 0
    if false_alarms is not None:
        fa, fa_cut = _regions(false_alarms[:, :left.shape[1]] & (left == 0), n, rng, transform)
        geoms, values, alarms, cut = geoms + fa, values + [0] * len(fa), len(fa), cut + fa_cut
    # unchanged squares: top-left corners whose square x square block is all 0, taken at random, not overlapping
    corners = np.argwhere(sliding_window_view(left == 0, (square, square)).all(axis=(2, 3)))
    taken = np.zeros(left.shape, bool)
    squares = alarms
    for r, c in corners[rng.permutation(len(corners))]:
        if squares == n:
            break
        if taken[r:r + square, c:c + square].any():
            continue
        taken[r:r + square, c:c + square] = True
        x0, y0 = transform @ (c, r)
        x1, y1 = transform @ (c + square, r + square)
        geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        values.append(0)
        squares += 1
    points = 0
    if squares < n:               # sparse truth: single unchanged pixels, marked by a point at their centre
        free = np.argwhere((left == 0) & ~taken)
        for r, c in free[rng.choice(len(free), size=min(n - squares, len(free)), replace=False)]:
            geoms.append(shapely.Point(*(transform @ (c + 0.5, r + 0.5))))
            values.append(0)
            points += 1
    components = int((np.bincount(ndimage.label(changed)[0].ravel())[1:] >= MIN_COMPONENT_PX).sum())
    return geoms, values, {"changed": n_changed, "unchanged": squares + points, "points": points, "cut": cut,
                           "components": components, "false_alarms": alarms}


def all_truth_marks(truth: np.ndarray, transform) -> tuple[list, list[int], dict]:
    """``--marks 0``, the ceiling: ALL of the left half's truth as marks (each 4-connected region of
    truth == 1 and of truth == 0 as its exact outline), the most a model could learn from that half."""
    import rasterio.features
    import shapely.geometry

    left = truth.copy()
    left[:, truth.shape[1] // 2:] = 255
    geoms, values = [], []
    for g, v in rasterio.features.shapes(left, mask=left != 255, transform=transform, connectivity=4):
        geoms.append(shapely.geometry.shape(g))
        values.append(int(v))
    n_changed = sum(values)
    return geoms, values, {"changed": n_changed, "unchanged": len(values) - n_changed, "points": 0, "cut": 0,
                           "components": n_changed, "false_alarms": 0}


def write_marks(path: Path, geoms: list, values: list[int], crs) -> Path:
    """The marks as a GeoPackage (layer ``marks``, integer field ``change``) in ``crs``."""
    import geopandas as gpd

    path.unlink(missing_ok=True)
    gpd.GeoDataFrame({"change": np.asarray(values, np.int32)}, geometry=geoms, crs=crs).to_file(
        path, driver="GPKG", layer="marks", engine="pyogrio")
    return path


def first_run_mask(part: dict, folder: Path, seed: int, labels: Path | None = None) -> np.ndarray:
    """The change mask of the analyst's first run of ``part``: label-free ``detect`` (cva), or with ``labels``
    the default label model trained on those marks."""
    import rasterio

    from geochange.detect import DetectOptions, detect

    marks = {"model": DEFAULT_LABEL_MODEL, "labels": str(labels), "label_field": "change"} if labels else {}
    detect(str(part["before"]), str(part["after"]), folder / "first-run", DetectOptions(seed=seed, overwrite=True,
                                                                                      **marks))
    with rasterio.open(folder / "first-run" / "change_mask.tif") as ds:
        return ds.read(1) == 1


def corrections(part: dict, folder: Path, seed: int, truth: np.ndarray, transform, crs, geoms: list,
                values: list[int], counts: dict, k: int) -> tuple[list, list[int], dict]:
    """The analyst's second round (``--corrections K``): the default label model trained on the first
    marks maps the pair; the K largest regions of its false alarms (unchanged) and of its misses (changed)
    in the left half are added to the marks."""
    first = write_marks(folder / "marks-first.gpkg", geoms, values, crs)
    mask = first_run_mask(part, folder, seed, labels=first)
    left = np.zeros(truth.shape, bool)
    left[:, :truth.shape[1] // 2] = True
    alarms, cut_a = _regions(mask & left & (truth == 0), k, None, transform)
    misses, cut_m = _regions(~mask & left & (truth == 1), k, None, transform)
    counts = {**counts, "changed": counts["changed"] + len(misses), "unchanged": counts["unchanged"] + len(alarms),
              "false_alarms": counts["false_alarms"] + len(alarms), "cut": counts["cut"] + cut_a + cut_m}
    return geoms + alarms + misses, values + [0] * len(alarms) + [1] * len(misses), counts


def split_scene(scene: dict, workdir: Path, n: int, seed: int, unchanged: str = "squares", fixes: int = 0,
                square: int = SQUARE) -> dict:
    """``scene`` with, for each pair, its marks (left half) and the truth of its right half only
    (``truth``: left half 255, on BEFORE's grid); pairs without changed marks get ``marks`` None.
    ``unchanged="false-alarms"``: the unchanged marks go on a first label-free run's false alarms.
    ``fixes`` > 0: ``n - fixes`` marks of each class first, then ``fixes`` of each from :func:`corrections`.
    ``square``: the side of the unchanged squares, px."""
    import rasterio

    from geochange.io.align import Grid

    parts = []
    for part in scene.get("parts") or [scene]:
        sub = part["name"] if "parts" in scene else None
        folder = workdir / "labels" / scene["name"] / (sub or "")
        folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(part["before"]) as ds:
            grid = Grid.of(ds)
        truth = ba._truth_on(grid, part["truth"])
        tag = f"{scene['name']}/{sub}" if sub else scene["name"]
        rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
        if n:
            alarms = first_run_mask(part, folder, seed) if unchanged == "false-alarms" else None
            geoms, values, counts = draw_marks(truth, grid.transform, n - fixes, rng, alarms, square)
            if fixes and counts["changed"]:
                geoms, values, counts = corrections(part, folder, seed, truth, grid.transform, grid.crs, geoms,
                                                    values, counts, fixes)
        else:
            geoms, values, counts = all_truth_marks(truth, grid.transform)
        marks = write_marks(folder / "marks.gpkg", geoms, values, grid.crs) if counts["changed"] else None
        right = truth.copy()
        right[:, :grid.width // 2] = 255
        sc.write_tif(folder / "truth_right.tif", right, grid.crs, grid.transform, nodata=255)
        parts.append({**part, "name": tag, "truth": folder / "truth_right.tif", "marks": marks, "counts": counts})
    return {**scene, "parts": parts}


# -- the random forest yardstick --------------------------------------------------------------------

def rf_features(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H * W, 4C) float32: both dates' z-scores (per band, over the valid pixels), their difference
    and its RF_SMOOTH x RF_SMOOTH mean."""
    from scipy import ndimage

    zb = np.where(valid, reference._zscores(before, valid), 0.0)
    za = np.where(valid, reference._zscores(after, valid), 0.0)
    d = za - zb
    smooth = ndimage.uniform_filter(d, size=(1, RF_SMOOTH, RF_SMOOTH), mode="nearest")
    f = np.concatenate([zb, za, d, smooth]).astype(np.float32)
    return f.reshape(f.shape[0], -1).T


def burn_marks(path: Path, grid) -> np.ndarray:
    """uint8 (H, W) on ``grid``: each mark's ``change`` where its polygon holds the pixel's centre (a
    point: the pixel it falls in), 255 elsewhere."""
    import geopandas as gpd
    import rasterio.features

    gdf = gpd.read_file(path, engine="pyogrio").to_crs(grid.crs)
    return rasterio.features.rasterize(zip(gdf.geometry, gdf["change"].astype(int)), out_shape=(grid.height, grid.width),
                                       transform=grid.transform, fill=255, dtype="uint8")


def run_rf(scene: dict, seed: int, negatives: int) -> dict:
    """The random forest on each pair with marks, scored on the right halves, pooled."""
    from rasterio.windows import Window
    from sklearn.ensemble import RandomForestClassifier

    from geochange.io.pair import RasterPair

    tally = ba.Tally()
    t0 = time.perf_counter()
    fit_s = inference_s = 0.0
    for k, part in enumerate(scene["parts"]):
        with RasterPair.open(str(part["before"]), str(part["after"])) as pair:
            wp = pair.read_raw(Window(0, 0, pair.grid.width, pair.grid.height))
            grid = pair.grid
            truth = ba._truth_on(grid, part["truth"])
        valid = wp.valid
        marked = burn_marks(part["marks"], grid)
        t = time.perf_counter()
        x = rf_features(wp.before.astype(np.float64), wp.after.astype(np.float64), valid)
        train = np.flatnonzero((marked != 255).ravel() & valid.ravel())
        y = marked.ravel()[train]
        if negatives:
            pool = np.flatnonzero(valid.ravel() & (marked == 255).ravel())
            rng = np.random.default_rng([seed, k])
            cheap = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
            train, y = np.concatenate([train, cheap]), np.concatenate([y, np.zeros(len(cheap), np.uint8)])
        forest = RandomForestClassifier(RF_TREES, n_jobs=2, random_state=seed, class_weight="balanced")
        forest.fit(x[train], y)
        fit_s += time.perf_counter() - t
        t = time.perf_counter()
        score = np.zeros(valid.size)
        score[valid.ravel()] = forest.predict_proba(x[valid.ravel()])[:, list(forest.classes_).index(1)]
        score = score.reshape(valid.shape)
        inference_s += time.perf_counter() - t
        tally.add((score > 0.5) & valid, score, truth, valid)
    tally.extra = {"seconds": time.perf_counter() - t0, "fit_s": fit_s, "inference_s": inference_s}
    return tally.row()


# -- running and reporting --------------------------------------------------------------------------

def parse_params(items: list[str], models: list[str]) -> dict[str, dict]:
    """``[MODEL:]KEY=VALUE`` items -> model -> {key: value} (no MODEL: every label model)."""
    out: dict[str, dict] = {m: {} for m in models}
    for item in items:
        head, _, value = item.partition("=")
        model, _, key = head.rpartition(":")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        for m in ([model] if model else models):
            out.setdefault(m, {})[key] = value
    return out


def labels_supported() -> bool:
    """Whether this geochange's DetectOptions takes ``labels`` (issue 13)."""
    from geochange.detect import DetectOptions

    return any(f.name == "labels" for f in dataclasses.fields(DetectOptions))


def _cell(r: dict | None) -> str:
    return f"{r['kappa']:.3f}/{r['f1']:.3f}/{100 * r['flagged']:.1f}" if r else "-"


def _mean_kappa(rows: dict, members: list[str], m: str, key: str = "kappa") -> float | None:
    ks = [rows[(n, m)][key] for n in members if (n, m) in rows]
    return float(np.mean(ks)) if ks and len(ks) == len(members) else None


def print_tables(rows: dict, marks: dict, names: list[str], methods: list[str]) -> list[str]:
    """Per scene: marks drawn (changed / unchanged), true % of the scored pixels, and kappa / F1 / % flagged
    per method; mean kappa by group; then seconds per method."""
    w = 20
    lines = ["kappa / F1 / % flagged on the right halves (marks from the left halves: changed/unchanged)"]
    hdr = f"{'scene':<22} {'marks':>7} {'true%':>6} " + " ".join(f"{m:>{w}}" for m in methods)
    lines += [hdr, "-" * len(hdr)]
    for n in names:
        true = next((rows[(n, m)]["true"] for m in methods if (n, m) in rows), float("nan"))
        mk = f"{marks[n]['changed']}/{marks[n]['unchanged']}"
        lines.append(f"{n:<22} {mk:>7} {100 * true:>6.2f} " + " ".join(f"{_cell(rows.get((n, m))):>{w}}" for m in methods))
    for g, members in ba.groups(names).items():
        cells = [_mean_kappa(rows, members, m) for m in methods]
        lines.append(f"{f'mean kappa, {g} ({len(members)})':<37} "
                     + " ".join(f"{'-' if c is None else f'{c:.3f}':>{w}}" for c in cells))
    lines += ["", "seconds per scene (total; fit + inference where the method trains)"]
    hdr = f"{'scene':<22} " + " ".join(f"{m:>{w}}" for m in methods)
    lines += [hdr, "-" * len(hdr)]
    for n in names:
        cells = []
        for m in methods:
            r = rows.get((n, m))
            if r is None:
                cells.append("-")
            elif m == LABEL_FREE or "fit_s" not in r:
                cells.append(f"{r['seconds']:.1f}")
            else:
                cells.append(f"{r['seconds']:.1f} ({r['fit_s']:.1f}+{r['inference_s']:.1f})")
        lines.append(f"{n:<22} " + " ".join(f"{c:>{w}}" for c in cells))
    for line in lines:
        print(line)
    return lines


def markdown(rows: dict, marks: dict, names: list[str], methods: list[str]) -> str:
    """The table as markdown: one row per scene, kappa / F1 / % flagged per method, then the mean kappas."""
    out = ["| scene | marks (changed / unchanged) | true % | " + " | ".join(methods) + " |",
           "|---|---|---|" + "---|" * len(methods)]
    for n in names:
        true = next((rows[(n, m)]["true"] for m in methods if (n, m) in rows), float("nan"))
        cells = [_cell(rows.get((n, m))).replace("/", " / ") for m in methods]
        out.append(f"| {n} | {marks[n]['changed']} / {marks[n]['unchanged']} | {100 * true:.2f} | "
                   + " | ".join(cells) + " |")
    for g, members in ba.groups(names).items():
        cells = [_mean_kappa(rows, members, m) for m in methods]
        out.append(f"| mean kappa, {g} ({len(members)}) | | | "
                   + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(out) + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary_lines(rows: dict, names: list[str], label_models: list[str], others: list[str]) -> list[str]:
    """``[GROUP] labels default (M) mean kappa X; label-free cva Y (gain Z); rf W; ...`` per group, then
    the mean kappa of each method of ``others``."""
    lines = []
    best = DEFAULT_LABEL_MODEL if DEFAULT_LABEL_MODEL in label_models else (label_models[0] if label_models else None)
    for g, members in ba.groups(names).items():
        if g not in ("OSCD", "real", "synthetic"):
            continue
        cva, rf = _mean_kappa(rows, members, LABEL_FREE), _mean_kappa(rows, members, "rf")
        lab = _mean_kappa(rows, members, best) if best else None
        gain = f" (gain {lab - cva:+.3f})" if lab is not None and cva is not None else ""
        lines.append(f"[{g}] labels default ({best or 'none run'}) mean kappa {_fmt(lab)}; "
                     f"label-free {LABEL_FREE} {_fmt(cva)}{gain}; rf {_fmt(rf)}"
                     + "".join(f"; {m} {_fmt(_mean_kappa(rows, members, m))}" for m in others))
        methods = [LABEL_FREE, *label_models, "rf", *others]
        lines.append(f"[{g}] at each scene's kappa-best threshold (an oracle: the ranking's worth): "
                     + "; ".join(f"{m} {_fmt(_mean_kappa(rows, members, m, 'kappa_best'))}" for m in methods))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None, help="scenes, marks and runs (reused) [a temporary folder]")
    p.add_argument("--data", type=Path, default=sc.DATA, help=f"the shared sample data [{sc.DATA}]")
    p.add_argument("--scenes", nargs="+", choices=sc.SCENES, default=None, help="scenes [all]")
    p.add_argument("--models", nargs="*", default=None,
                   help=f"label models trained on the marks [{' '.join(LABEL_MODELS)}]; none (or nothing): no label model")
    p.add_argument("--param", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                   help="a label model's parameter (DetectOptions.model_params), e.g. cdcluster:epochs=5")
    p.add_argument("--references", nargs="*", choices=list(reference.REFERENCES), default=["cva+otsu"],
                   help="label-free reference methods (reference.py) scored on the same right halves [cva+otsu]")
    p.add_argument("--marks", type=int, default=10,
                   help="changed and unchanged marks per pair, each [10]; 0: all of the left half's truth (a ceiling)")
    p.add_argument("--unchanged", choices=["squares", "false-alarms"], default="squares",
                   help="where the unchanged marks go: random unchanged squares, or the false alarms of a first "
                        "label-free run (cva) in the left half, as an analyst marks them [squares]")
    p.add_argument("--square", type=int, default=SQUARE, metavar="PX",
                   help=f"side of the unchanged squares, px: a small patch, or a block an analyst outlines [{SQUARE}]")
    p.add_argument("--corrections", type=int, default=0, metavar="K",
                   help="an analyst's second round: --marks minus K marks of each class at random, then the K largest "
                        "false alarms and misses in the left half of the label default's map on them [0: none]")
    p.add_argument("--negatives", type=int, default=CHEAP_NEGATIVES, help=f"rf's cheap negatives [{CHEAP_NEGATIVES}]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="smoke run: illumination; cva, rf, rf-nonneg and logistic (or --models, trained briefly)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the marks to this JSON file")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    if args.square < 1:
        p.error(f"--square {args.square}: give a side of at least 1 px")
    if args.corrections and not 0 < args.corrections < args.marks:
        p.error(f"--corrections {args.corrections}: give 0 < K < --marks ({args.marks})")
    if args.models is None:
        args.models = [DEFAULT_LABEL_MODEL] if args.tiny else list(LABEL_MODELS)
    models = [m for m in args.models if m.lower() != "none"]
    if args.tiny:
        args.scenes = ["illumination"]
        args.param = [f"{m}:{k}={json.dumps(v)}" for m in models for k, v in TINY_PARAMS.get(m, {}).items()] + args.param
    params = parse_params(args.param, models)
    names = args.scenes or list(sc.SCENES)
    if not (args.data / "oscd").exists() and any(n in sc.REAL for n in names):
        print(f"{args.data}: no shared data; running the synthetic scenes only", flush=True)
        names = [n for n in names if n in sc.SYNTHETIC]
    if models and not labels_supported():
        print(f"note: geochange.detect.DetectOptions has no `labels` yet (issue 13): label models "
              f"{' '.join(models)} not run", flush=True)
        models = []

    from rasterio.errors import NodataShadowWarning

    from geochange.errors import GeochangeError
    from geochange.progress import set_quiet

    set_quiet(True)
    warnings.filterwarnings("ignore", category=NodataShadowWarning)   # the crs scene's AFTER: nodata and alpha
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="geochange-labels-")) if temp else args.workdir
    methods = [LABEL_FREE] + models + list(RF_METHODS) + list(args.references)
    trained = set(models) | set(RF_METHODS)
    failed: set[str] = set()
    rows: dict = {}
    marks: dict = {}
    t_all = time.perf_counter()
    try:
        for n in names:
            scene = split_scene({**sc.prepare(n, workdir, args.data, args.seed), "name": n}, workdir,
                                args.marks, args.seed, args.unchanged, args.corrections, args.square)
            bare = [q["name"] for q in scene["parts"] if q["marks"] is None]
            labelled = len(bare) < len(scene["parts"])
            if bare and labelled:
                print(f"note: {n}: no changed component in the left half of {', '.join(bare)}: "
                      "left out of the scene for every method", flush=True)
                scene["parts"] = [q for q in scene["parts"] if q["marks"] is not None]
            elif bare:
                print(f"note: {n}: no changed component in the left half: label methods skipped", flush=True)
            counts = [q["counts"] for q in scene["parts"]]
            marks[n] = {key: sum(c[key] for c in counts) for key in counts[0]}
            marks[n]["pairs"] = len(counts)
            print(f"  {n:<15} marks: {marks[n]['changed']} changed ({marks[n]['cut']} cut to {MAX_MARK_PX} px; "
                  f"{marks[n]['components']} components of >= {MIN_COMPONENT_PX} px), {marks[n]['unchanged']} "
                  f"unchanged ({marks[n]['points']} points) over {len(counts)} pair(s)", flush=True)
            for m in methods:
                if (m in trained and not labelled) or m in failed:
                    continue
                if m == LABEL_FREE:
                    r = ba.run_detect(scene, LABEL_FREE, workdir, args.seed, tag=f"halves-{m}")
                elif m in reference.REFERENCES:
                    r = ba.run_reference(scene, m)
                elif m in RF_METHODS:
                    r = run_rf(scene, args.seed, args.negatives if m == "rf" else 0)
                else:
                    with_marks = {**scene, "parts": [{**q, "options": {"labels": str(q["marks"]), "label_field": "change"}}
                                                     for q in scene["parts"]]}
                    try:
                        r = ba.run_detect(with_marks, m, workdir, args.seed, params.get(m), tag=f"halves-{m}")
                    except GeochangeError as exc:       # e.g. a model that does not learn from marks
                        print(f"note: {n}: {m}: {exc}: not run on the following scenes", flush=True)
                        failed.add(m)
                        continue
                rows[(n, m)] = r
                split = f" (fit {r['fit_s']:.1f} s, inference {r['inference_s']:.1f} s)" if "fit_s" in r else ""
                print(f"  {n:<15} {m:<11} kappa {r['kappa']:.3f} (best {r['kappa_best']:.3f}) F1 {r['f1']:.3f} "
                      f"AUC {r['auc']:.3f} "
                      f"flagged {100 * r['flagged']:.2f} % (true {100 * r['true']:.2f} %, {r['scored']} px) "
                      f"{r['seconds']:.1f} s{split}", flush=True)
        methods = [m for m in methods if m not in failed or any((n, m) in rows for n in names)]
        models = [m for m in models if m in methods]
        print()
        print_tables(rows, marks, names, methods)
        if args.json:
            args.json.write_text(json.dumps({"rows": [{"scene": n, "method": m, **r} for (n, m), r in rows.items()],
                                             "marks": marks, "params": params, "seed": args.seed}, indent=1))
        if args.markdown:
            args.markdown.write_text(markdown(rows, marks, names, methods))
        print()
        for line in summary_lines(rows, names, models, [m for m in methods if m not in (LABEL_FREE, "rf", *models)]):
            print(line)
        print(f"benchmark wall time: {time.perf_counter() - t_all:.0f} s")
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
