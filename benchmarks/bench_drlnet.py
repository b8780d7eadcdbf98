#!/usr/bin/env python3
"""DRLnet against the cva baseline (the paper's Raw+KM), scored against ground truth (issue 3).

As the DRLnet paper's Table 1 (Zhang et al., IJCAI 2017): overall accuracy and kappa of ``cva`` and
``drlnet`` on the same scenes, each run through ``geochange.detect.detect`` (same normalisation,
same scene sample, same seed) and scored with ``geochange.evaluate.evaluate`` on its change_mask.tif.

Scenes (prepared into ``--workdir`` once and reused):

* ``bercy``, ``paris``: OSCD Sentinel-2 L1C pairs (../shared/data/oscd), the four 10 m bands
  B02, B03, B04, B08 of each date stacked into one 4-band GeoTIFF; full 0/1 change masks
  (``<city>-cm_georef_01.tif``); every pixel scored.
* ``taizhou``: Landsat 7 ETM+ 6-band pair (../shared/data/landsat_taizhou/geotiff); SPARSE
  reference samples made into one truth raster, 1 = change sample, 0 = unchanged sample,
  255 = unlabelled (nodata): only labelled pixels are scored.
* ``illumination``, ``misregistration``, ``seasonal``: synthetic 512 x 512 4-band (blue, green,
  red, NIR) uint8 pairs with the same planted changes (new bright roofs, new asphalt, cleared
  vegetation, new vegetation, demolished buildings; unchanged buildings on both dates) plus one
  trivial event each: a global per-band gain/offset of AFTER; AFTER shifted by one pixel along
  each axis; a seasonal tint (per-band gains plus NIR down / red up in proportion to a smooth
  vegetation cover). Truth: the planted changes only, every pixel scored.

Part 2 (unless ``--skip-big``): a synthetic ``--big`` x ``--big`` 3-band pair (written strip by
strip, by ``bench_detect.make_pair``), ``python3 -m geochange detect`` with ``--model cva`` and
``--model drlnet``, each in its own wrapper subprocess that reports its child's peak RSS
(``getrusage(RUSAGE_CHILDREN)``), with fit and inference times from summary.json; plus the peak
RSS of a bare interpreter that only imports torch and geochange's drlnet (what loading torch costs).

Part 1c (``--superpixels``, instead of part 1): detect's scene sample of each scene segmented as
``drlnet.superpixels`` did before issue 15 (SLIC always given ``mask=valid``) and as it does now (a
mask only where some pixel is invalid): boundary recall and undersegmentation error against the
truth, superpixels per window and SLIC seconds.

    python3 benchmarks/bench_drlnet.py --workdir /tmp/gcd [--scenes bercy taizhou] [--drlnet-param max_samples=5000]
    python3 benchmarks/bench_drlnet.py --workdir /tmp/gcd --superpixels --scenes bercy paris illumination
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_accuracy import oracle_kappa  # noqa: E402
from scenes import DATA, prepare as _prepare_scene  # noqa: E402  (the scenes of every accuracy benchmark)

REAL = ("bercy", "paris", "taizhou")
SYNTHETIC = ("illumination", "misregistration", "seasonal")
SCENES = REAL + SYNTHETIC


def prepare(name: str, workdir: Path, data: Path, seed: int) -> dict:
    """One scene, prepared by scenes.py into ``workdir/scenes/name``."""
    return _prepare_scene(name, workdir, data, seed)


# --------------------------------------------------------------------------------------------------
# part 1: accuracy and kappa
# --------------------------------------------------------------------------------------------------

def _params_tag(params: dict) -> str:
    if not params:
        return ""
    return "-" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def run_scene(name: str, scene: dict, method: str, params: dict, workdir: Path, seed: int) -> dict:
    from geochange.detect import DetectOptions, detect
    from geochange.evaluate import evaluate

    out = workdir / "runs" / name / f"{method}{_params_tag(params)}"
    opts = DetectOptions(model=method, model_params=dict(params), seed=seed, overwrite=True)
    t = time.perf_counter()
    summary = detect(str(scene["before"]), str(scene["after"]), out, opts)
    wall = time.perf_counter() - t
    scores = evaluate(str(out / "change_mask.tif"), str(scene["truth"]), change_values=[1])["scores"]
    tm = summary["timings_s"]
    return {"scene": name, "method": method, "params": params, "scores": scores,
            "fit_s": tm.get("fit", 0.0), "inference_s": tm.get("inference", 0.0), "total_s": tm.get("total", wall),
            "changed_fraction": summary.get("changed_fraction"),
            "model": {k: v for k, v in summary["model"].items() if k not in ("config",)}}


def print_table(rows: list[dict], scenes: dict) -> None:
    print("\nTable 1 (as in Zhang et al. 2017): OA and kappa against ground truth")
    hdr = (f"{'scene':<16} {'method':<7} {'OA':>7} {'kappa':>7} {'F1':>7} {'prec':>6} {'recall':>6} "
           f"{'pred%':>6} {'true%':>6} {'scored':>8} {'fit s':>7} {'infer s':>7} {'total s':>7}")
    print(hdr)
    print("-" * len(hdr))
    by_scene: dict[str, list[dict]] = {}
    for r in rows:
        by_scene.setdefault(r["scene"], []).append(r)
    for name, rs in by_scene.items():
        for r in rs:
            s = r["scores"]
            true_pct = 100.0 * (s["tp"] + s["fn"]) / max(s["n_pixels"], 1)
            pred_pct = 100.0 * (s["tp"] + s["fp"]) / max(s["n_pixels"], 1)
            print(f"{name:<16} {r['method']:<7} {s['accuracy']:>7.4f} {s['kappa']:>7.4f} {s['f1']:>7.4f} "
                  f"{s['precision']:>6.3f} {s['recall']:>6.3f} {pred_pct:>6.2f} {true_pct:>6.2f} "
                  f"{s['n_pixels']:>8d} {r['fit_s']:>7.1f} {r['inference_s']:>7.1f} {r['total_s']:>7.1f}")
        k = {r["method"]: r["scores"]["kappa"] for r in rs}
        if "cva" in k and "drlnet" in k:
            d = k["drlnet"] - k["cva"]
            winner = "drlnet" if d > 0 else ("cva" if d < 0 else "tie")
            print(f"{'':<16} -> kappa: {winner} wins ({'+' if d >= 0 else ''}{d:.4f} drlnet - cva)"
                  f"   [{scenes[name]['kind']}]")
    print("(pred%: pixels predicted changed; true%: truly changed; scored: pixels compared "
          "(taizhou: labelled samples only); times from detect's summary timings_s)")


# --------------------------------------------------------------------------------------------------
# part 1b (--quality): threshold-free quality of the change score
# --------------------------------------------------------------------------------------------------

def _score_fn(model):
    """The model's change score before its threshold: cva's magnitude, DRLnet's change intensity."""
    if model.name == "cva":
        return lambda b, a, v: model.magnitude(b[None], a[None])[0]
    return lambda b, a, v: model._maps(b[None], a[None], v[None], with_types=False)[0][0]


def _kappa_at(score: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    from geochange.metrics import ConfusionMatrix

    cm = ConfusionMatrix()
    cm.update(score > threshold, truth, np.ones(truth.shape, bool))
    return float(cm.scores()["kappa"])


def score_quality(name: str, scene: dict, method: str, params: dict, workdir: Path, seed: int) -> dict:
    """Fit ``method`` as detect does (same normalisation, scene sample and seed), then score its change
    score on every scored pixel: AUC, the oracle (best-threshold) kappa and the kappa at its GGKI threshold."""
    import rasterio
    from rasterio.windows import Window
    from sklearn.metrics import roc_auc_score

    from geochange.detect import DetectOptions
    from geochange.evaluate import _RasterTruth
    from geochange.io.pair import RasterPair
    from geochange.models import create_model

    opts = DetectOptions()
    grid_ref = workdir / "runs" / name / "quality-grid.tif"
    t = time.perf_counter()
    with RasterPair.open(str(scene["before"]), str(scene["after"])) as pair:
        samples = pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size,
                                         seed=seed)
        model = create_model(method, device="cpu", **params)
        model.fit([(s.before, s.after, s.valid) for s in samples], seed=seed)
        fit_s = time.perf_counter() - t
        score = _score_fn(model)
        h, w = pair.shape
        grid_ref.parent.mkdir(parents=True, exist_ok=True)
        g = pair.grid
        with rasterio.open(grid_ref, "w", driver="GTiff", width=g.width, height=g.height, count=1,
                           dtype="uint8", crs=g.crs, transform=g.transform):
            pass  # an empty raster on the pair's grid: what the truth is warped onto
        xs, ys = [], []
        with rasterio.open(grid_ref) as ref, rasterio.open(str(scene["truth"])) as tds:
            truth = _RasterTruth(ref, str(grid_ref), tds, str(scene["truth"]), [1])
            for row in range(0, h, 1024):
                for col in range(0, w, 1024):
                    win = Window(col, row, min(1024, w - col), min(1024, h - row))
                    wp = pair.read(win)
                    sc = score(wp.before, wp.after, wp.valid)
                    changed, tvalid = truth.read(win)
                    m = tvalid & wp.valid
                    xs.append(sc[m].astype(np.float64))
                    ys.append(changed[m])
    x, y = np.concatenate(xs), np.concatenate(ys)
    okappa, othr = oracle_kappa(x, y)
    thr = float(model.fitted.threshold)
    return {"scene": name, "method": method, "auc": float(roc_auc_score(y, x)), "oracle_kappa": okappa,
            "oracle_pred_pct": 100.0 * float((x > othr).mean()), "ggki_kappa": _kappa_at(x, y, thr),
            "ggki_pred_pct": 100.0 * float((x > thr).mean()), "true_pct": 100.0 * float(y.mean()),
            "n": int(x.size), "fit_s": fit_s}


def print_quality(rows: list[dict]) -> None:
    print("\nChange-score quality (before thresholding): AUC, best kappa over all thresholds (oracle), "
          "kappa at the GGKI threshold")
    hdr = (f"{'scene':<16} {'method':<7} {'AUC':>7} {'oracle k':>8} {'pred%':>6} {'GGKI k':>7} {'pred%':>6} "
           f"{'true%':>6} {'scored':>8} {'fit s':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['scene']:<16} {r['method']:<7} {r['auc']:>7.4f} {r['oracle_kappa']:>8.4f} "
              f"{r['oracle_pred_pct']:>6.2f} {r['ggki_kappa']:>7.4f} {r['ggki_pred_pct']:>6.2f} "
              f"{r['true_pct']:>6.2f} {r['n']:>8d} {r['fit_s']:>6.1f}")
    print("(scored pixels as in Table 1; pred%: pixels over the threshold; oracle: the threshold that "
          "maximises kappa against the truth, which an unsupervised method cannot know)")


# --------------------------------------------------------------------------------------------------
# part 1c (--superpixels): SLIC with and without a mask where every pixel is valid (issue 15)
# --------------------------------------------------------------------------------------------------

def _slic_masked(before: np.ndarray, after: np.ndarray, valid: np.ndarray, n_segments: int,
                 compactness: float) -> np.ndarray:
    """``drlnet.superpixels`` as it was before issue 15: SLIC always given ``mask=valid``."""
    from skimage.segmentation import slic

    labels = [slic(np.moveaxis(img, 0, -1).astype(np.float64), n_segments=n_segments, compactness=compactness,
                   mask=valid, convert2lab=False, start_label=1, channel_axis=-1).astype(np.int64)
              for img in (before, after)]
    joint = labels[0] * (int(labels[1].max()) + 1) + labels[1]
    out = np.zeros(valid.shape, np.int64)
    out[valid] = np.unique(joint[valid], return_inverse=True)[1].reshape(-1) + 1
    return out


def _segment_scores(labels: np.ndarray, changed: np.ndarray, scored: np.ndarray, tol: int = 2) -> dict:
    """Boundary recall (truth change boundaries within ``tol`` px of a superpixel boundary), the
    undersegmentation error (pixels in the minority class of their superpixel, share of scored pixels;
    1 - achievable segmentation accuracy) and the number of superpixels."""
    from scipy import ndimage

    lab = np.where(scored, labels, 0)
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    near = ndimage.binary_dilation(edge, iterations=tol)
    truth_edge = (changed ^ ndimage.binary_erosion(changed)) & scored
    recall = float(near[truth_edge].mean()) if truth_edge.any() else float("nan")
    n = int(lab.max()) + 1
    total = np.bincount(lab.ravel(), minlength=n)[1:]
    pos = np.bincount(lab.ravel(), weights=(changed & scored).ravel().astype(np.float64), minlength=n)[1:]
    leak = float(np.minimum(pos, total - pos).sum()) / max(int(scored.sum()), 1)
    return {"boundary_recall": recall, "boundary_px": int(truth_edge.sum()), "underseg": leak,
            "segments": int(np.count_nonzero(total))}


def superpixel_quality(name: str, scene: dict, workdir: Path, seed: int, params: dict) -> dict:
    """The scene sample of detect (its 256 x 256 windows, normalised), segmented both ways."""
    import rasterio

    from geochange.detect import DetectOptions
    from geochange.evaluate import _RasterTruth
    from geochange.io.pair import RasterPair
    from geochange.models.drlnet import _SLIC_AREA, DRLnetConfig, superpixels

    cfg = DRLnetConfig(**params)
    opts = DetectOptions()
    grid_ref = workdir / "runs" / name / "superpixel-grid.tif"
    acc = {"masked": [], "unmasked": []}
    secs = {"masked": 0.0, "unmasked": 0.0}
    with RasterPair.open(str(scene["before"]), str(scene["after"])) as pair:
        samples = pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size,
                                         seed=seed)
        g = pair.grid
        grid_ref.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(grid_ref, "w", driver="GTiff", width=g.width, height=g.height, count=1,
                           dtype="uint8", crs=g.crs, transform=g.transform):
            pass
        with rasterio.open(grid_ref) as ref, rasterio.open(str(scene["truth"])) as tds:
            truth = _RasterTruth(ref, str(grid_ref), tds, str(scene["truth"]), [1])
            for smp in samples:
                valid = np.asarray(smp.valid, bool)
                changed, tvalid = truth.read(smp.window)
                scored = valid & tvalid
                n_seg = max(1, int(round(cfg.n_segments * int(valid.sum()) / _SLIC_AREA)))
                for how, fn in (("masked", _slic_masked), ("unmasked", superpixels)):
                    t = time.perf_counter()
                    labels = fn(smp.before, smp.after, valid, n_seg, cfg.compactness)
                    secs[how] += time.perf_counter() - t
                    acc[how].append(_segment_scores(labels, changed & scored, scored))
    row = {"scene": name, "windows": len(samples),
           "full_windows": int(sum(bool(np.asarray(s.valid).all()) for s in samples))}
    for how, rows in acc.items():
        px = np.array([r["boundary_px"] for r in rows], float)
        rec = np.array([r["boundary_recall"] for r in rows], float)
        row[how] = {"boundary_recall": float(np.nansum(rec * px) / max(px.sum(), 1)),
                    "underseg": float(np.mean([r["underseg"] for r in rows])),
                    "segments": float(np.mean([r["segments"] for r in rows])), "seconds": secs[how]}
    return row


def print_superpixels(rows: list[dict]) -> None:
    print("\nSuperpixels of the scene sample, SLIC with mask=valid (before issue 15) and without a mask where "
          "every pixel is valid (now)")
    hdr = (f"{'scene':<16} {'windows':>7} {'full':>5} | {'BR masked':>9} {'BR now':>7} | {'UE masked':>9} "
           f"{'UE now':>7} | {'segs masked':>11} {'segs now':>8} | {'s masked':>8} {'s now':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        m, u = r["masked"], r["unmasked"]
        print(f"{r['scene']:<16} {r['windows']:>7} {r['full_windows']:>5} | {m['boundary_recall']:>9.4f} "
              f"{u['boundary_recall']:>7.4f} | {m['underseg']:>9.5f} {u['underseg']:>7.5f} | {m['segments']:>11.0f} "
              f"{u['segments']:>8.0f} | {m['seconds']:>8.1f} {u['seconds']:>6.1f}")
    print("(BR: boundary recall, share of the truth's change-boundary pixels within 2 px of a superpixel boundary; "
          "UE: undersegmentation error, pixels in the minority class of their superpixel; segs: superpixels per "
          "window; s: SLIC seconds for the whole sample; full: windows with every pixel valid)")


# --------------------------------------------------------------------------------------------------
# part 2: big pair, peak RSS and runtime
# --------------------------------------------------------------------------------------------------

_IMPORTS = "import torch, geochange.detect, geochange.models.drlnet, geochange.models.cva"


def _wrapped(cmd: list[str], what: str) -> tuple[float, float, str]:
    from bench_detect import run_for_peak_rss

    return run_for_peak_rss(cmd, what)


def bench_big(n: int, workdir: Path, params: dict, seed: int) -> list[dict]:
    sys.path.insert(0, str(HERE))
    from bench_detect import make_pair

    before, after = make_pair(workdir, n)
    rows = []
    mib, wall, _ = _wrapped([sys.executable, "-c", _IMPORTS], "the import baseline")
    rows.append({"what": "import torch + geochange (no detect)", "peak_mib": mib, "wall": wall})
    for method in ("cva", "drlnet"):
        out = workdir / f"out_big_{method}_{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "geochange", "detect", str(before), str(after), "--out", str(out),
               "--quiet", "--overwrite", "--model", method, "--seed", str(seed), "--device", "cpu"]
        if method == "drlnet":
            for k, v in params.items():
                cmd += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        print(f"  {method} on the {n}x{n} pair ...", flush=True)
        mib, wall, _ = _wrapped(cmd, f"detect --model {method} on the {n}x{n} pair")
        summary = json.loads((out / "summary.json").read_text())
        tm = summary["timings_s"]
        rows.append({"what": f"detect --model {method}", "peak_mib": mib, "wall": wall, "fit": tm.get("fit"),
                     "inference": tm.get("inference"), "model": tm.get("model"), "total": tm.get("total"),
                     "windows": summary["engine"]["windows"], "changed_fraction": summary["changed_fraction"],
                     "n_samples": summary["model"].get("n_samples")})
        print(f"    peak {mib:.0f} MiB, fit {tm.get('fit', 0):.1f} s, inference {tm.get('inference', 0):.1f} s, "
              f"total {tm.get('total', 0):.1f} s", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def _model_mib(params: dict) -> float:
    """Size of DRLnet's weights for a 3-band input (float32), in MiB."""
    from geochange.models.drlnet import DRLnetConfig, _build_network

    cfg = DRLnetConfig(**params)
    net = _build_network(3 * cfg.window ** 2, cfg, cfg.schedule[-1])
    return sum(p.numel() for p in net.parameters()) * 4 / 2**20


def print_big(rows: list[dict], n: int, params: dict) -> None:
    print(f"\nBig pair {n}x{n}x3 (uint8), `python3 -m geochange detect` in a fresh subprocess each, CPU")
    print(f"{'run':<38} {'peak RSS MiB':>12} {'fit s':>7} {'infer s':>8} {'model s':>8} {'total s':>8} {'wall s':>7}")
    for r in rows:
        f = lambda k: f"{r[k]:.1f}" if r.get(k) is not None else "-"  # noqa: E731
        print(f"{r['what']:<38} {r['peak_mib']:>12.0f} {f('fit'):>7} {f('inference'):>8} {f('model'):>8} "
              f"{f('total'):>8} {r['wall']:>7.1f}")
    by = {r["what"]: r["peak_mib"] for r in rows}
    cva, drl = by.get("detect --model cva"), by.get("detect --model drlnet")
    imp = by.get("import torch + geochange (no detect)")
    if cva and drl and imp:
        print(f"drlnet - cva: {drl - cva:+.0f} MiB; the torch import alone: {imp:.0f} MiB; "
              f"DRLnet weights: {_model_mib(params) * 1024:.1f} KiB")


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

def _parse_param(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{item}: expected KEY=VALUE, e.g. max_samples=5000")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None,
                   help="where scenes are prepared (and reused) and outputs go [default: a temporary folder, removed]")
    p.add_argument("--data", type=Path, default=DATA, help=f"the shared sample data [{DATA}]")
    p.add_argument("--scenes", nargs="+", choices=SCENES, default=list(SCENES), help="scenes to run [all]")
    p.add_argument("--drlnet-param", action="append", type=_parse_param, default=[], metavar="KEY=VALUE",
                   help="override a DRLnetConfig field (repeatable; value read as JSON when it parses), "
                        "e.g. --drlnet-param max_samples=5000 --drlnet-param predict_unit=superpixel")
    p.add_argument("--seed", type=int, default=0, help="seed of detect (scene sample, model) and of the synthetic scenes [0]")
    p.add_argument("--big", type=int, default=4096, help="side of the big synthetic pair for part 2 [4096]")
    p.add_argument("--skip-big", action="store_true", help="skip part 2 (peak RSS and runtime on the big pair)")
    p.add_argument("--skip-cva", action="store_true", help="part 1: run drlnet only (for sweeps of --drlnet-param)")
    p.add_argument("--quality", action="store_true",
                   help="instead of part 1: AUC, oracle kappa and GGKI kappa of each method's change score "
                        "(cva's magnitude, drlnet's change intensity) on the scored pixels")
    p.add_argument("--superpixels", action="store_true",
                   help="instead of part 1: the superpixels of detect's scene sample with SLIC always masked (before "
                        "issue 15) and unmasked where every pixel is valid (now): boundary recall, undersegmentation")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    params = dict(args.drlnet_param)

    from geochange.models import create_model
    from geochange.progress import set_quiet

    create_model("drlnet", **params)  # fail early on a bad override
    set_quiet(True)
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="geochange-drlnet-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    results: dict = {"params": params, "seed": args.seed, "scenes": [], "big": []}
    try:
        print(f"workdir: {workdir}  (cpus: {os.cpu_count()}; drlnet overrides: {params or 'none (paper defaults)'};"
              f" seed {args.seed})", flush=True)
        scenes = {}
        for name in args.scenes:
            scenes[name] = prepare(name, workdir, args.data, args.seed)
            print(f"  {name}: {scenes[name]['kind']}; " + "; ".join(scenes[name]["notes"]), flush=True)
        if args.superpixels:
            srows = []
            for name in args.scenes:
                r = superpixel_quality(name, scenes[name], workdir, args.seed, params)
                print(f"  {name:<16} boundary recall {r['masked']['boundary_recall']:.4f} -> "
                      f"{r['unmasked']['boundary_recall']:.4f}, undersegmentation {r['masked']['underseg']:.5f} -> "
                      f"{r['unmasked']['underseg']:.5f}", flush=True)
                srows.append(r)
            results["superpixels"] = srows
            print_superpixels(srows)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            return 0
        if args.quality:
            qrows = []
            for name in args.scenes:
                for method in (("drlnet",) if args.skip_cva else ("cva", "drlnet")):
                    r = score_quality(name, scenes[name], method, params if method == "drlnet" else {},
                                      workdir, args.seed)
                    print(f"  {name:<16} {method:<7} AUC {r['auc']:.4f} oracle kappa {r['oracle_kappa']:.4f} "
                          f"GGKI kappa {r['ggki_kappa']:.4f} (fit {r['fit_s']:.1f} s)", flush=True)
                    qrows.append(r)
            results["quality"] = qrows
            print_quality(qrows)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            return 0
        rows = []
        for name in args.scenes:
            for method in (("drlnet",) if args.skip_cva else ("cva", "drlnet")):
                r = run_scene(name, scenes[name], method, params if method == "drlnet" else {}, workdir, args.seed)
                s = r["scores"]
                print(f"  {name:<16} {method:<7} OA {s['accuracy']:.4f} kappa {s['kappa']:.4f} F1 {s['f1']:.4f} "
                      f"(fit {r['fit_s']:.1f} s, total {r['total_s']:.1f} s)", flush=True)
                rows.append(r)
        results["scenes"] = rows
        print_table(rows, scenes)
        if not args.skip_big:
            print(f"\npart 2: {args.big}x{args.big} pair", flush=True)
            results["big"] = bench_big(args.big, workdir, params, args.seed)
            print_big(results["big"], args.big, params)
        print(f"\nbenchmark wall time: {time.perf_counter() - t_all:.0f} s")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
