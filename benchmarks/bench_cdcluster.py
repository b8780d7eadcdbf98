#!/usr/bin/env python3
"""CDCluster: warm-up fraction against F1 and kappa (the paper's Table 2), Initial Alignment (Fig. 3),
and FAISS k-means against scikit-learn's KMeans on the same features (issue 5).

Data (real change pairs with full ground truth, ../shared/data), cut into ``--size`` patches in memory:

* DSIFN samples (10 RGB pairs of 256 x 256, 0/255 masks): the last ``--dsifn-test`` pairs (by file
  name) are test pairs, the others train.
* OSCD bercy and paris (Sentinel-2, 10 m bands B04, B03, B02 of each date; ``<city>-cm_georef_01.tif``):
  the bottom ``--oscd-test`` share of each city's rows is test, the rows above it train; patches never
  straddle the cut.

Every patch is standardised by its pair's statistics as ``geochange train`` / ``detect`` do (each DSIFN
pair and each OSCD city is one pair). Training runs through ``geochange.train.train`` with the paper's
lr 1e-3 and k = 20, ``--warmup-epochs`` supervised epochs, then ``--unsup-epochs`` unsupervised ones
(clustering every 5 epochs on 75 % of the training patches). For each warm-up setting the test pixels
are scored at the end of the warm-up and at the end of training (accuracy, F1, MSE, kappa, specificity,
recall), on one seed. Settings: random 1 %, 5 %, 10 %, 30 % of the labelled training patches, and the
paper's sampled variant (pairs with >= 3 % changed pixels) at 6 % (Table 2) and at 30 % (Table 1).

k-means timing: the 16-d features of the last trained model on ``--kmeans-pixels`` training pixels,
k = 20, 20 Lloyd iterations, k-means++ seeding, one thread each: ``geochange.cluster.kmeans`` (FAISS) on
all points and as CDCluster calls it (FAISS trains on 256 k of them), against
``sklearn.cluster.KMeans(n_init=1, max_iter=20, tol=0)``; best of ``--repeats``; ratios in one run.

    nice -n 10 python3 benchmarks/bench_cdcluster.py [--size 64] [--warmup-epochs 15] [--unsup-epochs 10]

``--data DIR`` reads ``DIR/dsifn_samples`` and ``DIR/oscd`` instead of ../shared/data. ``--tiny`` is a smoke
run (seconds; the test suite runs it on a synthetic data root): 16 px patches, 1 warm-up + 1 unsupervised
epoch, one setting (random 30 %), 1 IA seed with k = 2, 4000 k-means pixels, 1 repeat; any option given
explicitly still wins.
"""

from __future__ import annotations

import argparse
import glob
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
OSCD_RGB = ("B04", "B03", "B02")
SETTINGS = (("random 1 %", 0.01, 0.0), ("random 5 %", 0.05, 0.0), ("random 10 %", 0.10, 0.0),
            ("random 30 %", 0.30, 0.0), ("sampled 6 %", 0.06, 0.03), ("sampled 30 %", 0.30, 0.03))
TINY = {"size": 16, "warmup_epochs": 1, "unsup_epochs": 1, "dsifn_test": 1, "settings": ["random 30 %"],
        "ia_seeds": 1, "ia_ks": [2], "kmeans_pixels": 4000, "repeats": 1}


def _patches(before: np.ndarray, after: np.ndarray, label: np.ndarray, size: int, pair: str, split: str,
             rows: tuple[int, int]) -> list[dict]:
    """Non-overlapping ``size`` patches of the rows ``rows`` of one pair (a remainder is dropped)."""
    out = []
    for r in range(rows[0], rows[1] - size + 1, size):
        for c in range(0, before.shape[2] - size + 1, size):
            out.append({"before": before[:, r:r + size, c:c + size], "after": after[:, r:r + size, c:c + size],
                        "label": label[r:r + size, c:c + size], "meta": {"pair": pair, "split": split}})
    return out


def load_items(size: int, dsifn_test: int, oscd_test: float, data: Path = DATA) -> tuple[list[dict], list[dict], int]:
    """Train and test patches of the DSIFN samples and the two OSCD cities under ``data``, and the
    number of DSIFN pairs."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from geochange.data.patches import LevirDataset

    train, test = [], []
    dsifn = LevirDataset(data / "dsifn_samples")
    for i in range(len(dsifn)):
        item = dsifn[i]
        split = "test" if i >= len(dsifn) - dsifn_test else "train"
        (test if split == "test" else train).extend(
            _patches(item["before"], item["after"], item["label"], size, f"dsifn/{item['meta']['id']}", split,
                     (0, item["label"].shape[0])))
    for city in ("bercy", "paris"):
        dates = []
        for folder in ("imgs_1", "imgs_2"):
            bands = []
            for band in OSCD_RGB:
                path = glob.glob(str(data / "oscd" / "images" / city / folder / f"*_{band}.tif"))[0]
                with rasterio.open(path) as ds:
                    bands.append(ds.read(1))
            dates.append(np.stack(bands).astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(data / "oscd" / "train_labels" / city / "cm" / f"{city}-cm_georef_01.tif") as ds:
                label = (ds.read(1) > 0).astype(np.uint8)
        height = label.shape[0]
        cut = height - size * max(1, round(oscd_test * height / size))
        train += _patches(dates[0], dates[1], label, size, f"oscd/{city}", "train", (0, cut))
        test += _patches(dates[0], dates[1], label, size, f"oscd/{city}", "test", (cut, height))
    return train, test, len(dsifn)


def standardised(items: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from geochange.train.data import PairStandardizer, item_groups

    std = PairStandardizer(items, item_groups(items))
    before, after = (np.stack(d) for d in zip(*(std(i, item) for i, item in enumerate(items))))
    return before, after, np.stack([item["label"] for item in items])


def score(model, test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    from geochange.metrics import ConfusionMatrix

    before, after, label = test
    prob = model.predict(before, after, np.ones(label.shape, bool))
    cm = ConfusionMatrix()
    cm.update(prob >= 0.5, label == 1, label != 255)
    return {**cm.scores(), "normalized": cm.normalized().round(3).tolist()}


def run_setting(train_items, test, fraction: float, min_changed: float, args, workdir: Path) -> tuple[dict, dict, object]:
    from geochange.models import create_model
    from geochange.train import TrainOptions, load_model, train

    model = create_model("cdcluster", epochs=args.warmup_epochs + args.unsup_epochs, warmup_epochs=args.warmup_epochs,
                         warmup_fraction=fraction, min_changed=min_changed, batch_size=args.batch_size)
    out = Path(tempfile.mkdtemp(dir=workdir))
    t0 = time.perf_counter()
    summary = train(model, train_items, TrainOptions(device="cpu", seed=args.seed, out=out))
    seconds = time.perf_counter() - t0
    warm = load_model(out / f"epoch_{args.warmup_epochs:03d}.pt")
    history = summary["history"]
    info = {"seconds": seconds, "warmup_pairs": history[0]["samples"],
            "warmup_loss": (history[0]["loss"], history[args.warmup_epochs - 1]["loss"]),
            "unsup_loss": [round(r["loss"], 3) for r in history[args.warmup_epochs:]],
            "kmeans_s": sum(r.get("kmeans_s", 0.0) for r in history),
            "ami_truth": [round(r["ami_truth"], 4) for r in history if "ami_truth" in r]}
    return score(warm, test), {**score(model, test), **info}, model


def features_of(model, items: list[dict], n_pixels: int, seed: int) -> np.ndarray:
    """Per-pixel 16-d features of the trained network (BN on running averages) for a pixel sample."""
    import torch

    before, after, _ = standardised(items)
    rng = np.random.default_rng(seed)
    feats = []
    model.net.eval()
    with torch.no_grad():
        for i in range(0, len(before), 16):
            f, _ = model.forward(torch.as_tensor(before[i:i + 16]), torch.as_tensor(after[i:i + 16]))
            feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy())
    x = np.concatenate(feats)
    return x[rng.choice(len(x), min(n_pixels, len(x)), replace=False)]


def time_kmeans(x: np.ndarray, k: int, repeats: int) -> dict:
    import faiss
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from geochange.cluster import kmeans

    faiss.omp_set_num_threads(1)
    timings = {"faiss (all points)": [], "faiss (as CDCluster: 256 k points)": [], "sklearn KMeans": []}
    inertia = {}
    with threadpool_limits(1):
        for _ in range(repeats):
            t = time.perf_counter()
            c, lab = kmeans(x, k, seed=0, niter=20, gpu=False, max_points_per_centroid=len(x))
            timings["faiss (all points)"].append(time.perf_counter() - t)
            inertia["faiss (all points)"] = float(((x - c[lab]) ** 2).sum())
            t = time.perf_counter()
            c, lab = kmeans(x, k, seed=0, niter=20, gpu=False)
            timings["faiss (as CDCluster: 256 k points)"].append(time.perf_counter() - t)
            inertia["faiss (as CDCluster: 256 k points)"] = float(((x - c[lab]) ** 2).sum())
            t = time.perf_counter()
            km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=20, tol=0.0, random_state=0,
                        algorithm="lloyd").fit(x)
            timings["sklearn KMeans"].append(time.perf_counter() - t)
            inertia["sklearn KMeans"] = float(km.inertia_)
    return {name: (min(ts), inertia[name]) for name, ts in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA,
                        help="data root holding dsifn_samples/ and oscd/ (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run in seconds: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in TINY.items())
                        .replace("%", "%%"))
    parser.add_argument("--size", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--warmup-epochs", type=int, default=15)
    parser.add_argument("--unsup-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dsifn-test", type=int, default=2, help="DSIFN pairs held out for test")
    parser.add_argument("--oscd-test", type=float, default=0.3, help="share of each OSCD city's rows held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="*", default=[s[0] for s in SETTINGS])
    parser.add_argument("--ia-seeds", type=int, default=3)
    parser.add_argument("--ia-ks", type=int, nargs="*", default=[2, 5, 10, 20, 50])
    parser.add_argument("--kmeans-pixels", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    if parser.parse_known_args()[0].tiny:
        parser.set_defaults(**TINY)  # explicit options still win
    args = parser.parse_args()
    if not (args.data / "dsifn_samples").is_dir() or not (args.data / "oscd").is_dir():
        sys.exit(f"bench_cdcluster: {args.data} holds no dsifn_samples/ and oscd/ (point --data at the data root)")

    import torch

    from geochange.models.cdcluster import initial_alignment
    from geochange.progress import set_quiet

    set_quiet(True)
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    train_items, test_items, n_dsifn = load_items(args.size, args.dsifn_test, args.oscd_test, args.data)
    test = standardised(test_items)
    changed = lambda items: np.mean([np.mean(i["label"] == 1) for i in items])  # noqa: E731
    print(f"data: {len(train_items)} train / {len(test_items)} test patches of {args.size} px "
          f"(DSIFN {n_dsifn - args.dsifn_test}/{args.dsifn_test} pairs, OSCD bercy+paris RGB, bottom "
          f"{args.oscd_test:.0%} of rows for test); changed pixels {changed(train_items):.1%} train, "
          f"{changed(test_items):.1%} test")
    print(f"schedule: {args.warmup_epochs} warm-up + {args.unsup_epochs} unsupervised epochs, k = 20, lr 1e-3, "
          f"batch {args.batch_size}, clustering every 5 epochs on 75 %, seed {args.seed}, CPU, 1 thread\n")

    t = time.perf_counter()
    ia = initial_alignment(train_items, seeds=range(args.ia_seeds), ks=args.ia_ks, max_pixels=100_000)
    table = ia.pivot(index="seed", columns="k", values="ia")
    print(f"Initial Alignment (adjusted NMI, untrained network, train pixels; {time.perf_counter() - t:.0f} s)")
    print(table.round(4).to_string())
    print("mean  " + "  ".join(f"{v:.4f}" for v in table.mean(axis=0)) + "\n")

    header = (f"{'warm-up':<13}{'pairs':>6} | {'after warm-up':^33} | {'after unsupervised phase':^33} | {'s':>5}")
    print(header)
    print(f"{'':<19} | {'acc':>6} {'F1':>6} {'kappa':>6} {'spec':>6} {'rec':>6} | "
          f"{'acc':>6} {'F1':>6} {'kappa':>6} {'spec':>6} {'rec':>6} |")
    last = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, fraction, min_changed in SETTINGS:
            if name not in args.settings:
                continue
            warm, final, model = run_setting(train_items, test, fraction, min_changed, args, Path(tmp))
            last = model
            cells = lambda s: " ".join(f"{s[key]:6.3f}" for key in ("accuracy", "f1", "kappa", "specificity",  # noqa: E731
                                                                    "recall"))
            print(f"{name:<13}{final['warmup_pairs']:>6} | {cells(warm)} | {cells(final)} | {final['seconds']:5.0f}",
                  flush=True)
            print(f"{'':<19}   warm-up loss {final['warmup_loss'][0]:.3f} -> {final['warmup_loss'][1]:.3f}; "
                  f"unsupervised loss {final['unsup_loss']}; AMI(clusters, truth) {final['ami_truth']}; "
                  f"MSE {warm['mse']:.3f} -> {final['mse']:.3f}; confusion (rows truth) {final['normalized']}")

    if last is not None:
        x = features_of(last, train_items, args.kmeans_pixels, args.seed)
        res = time_kmeans(x, 20, args.repeats)
        sk = res["sklearn KMeans"][0]
        print(f"\nk-means on {len(x)} x {x.shape[1]} features of the last model, k = 20, 20 iterations, 1 thread, "
              f"best of {args.repeats}:")
        for name, (seconds, inertia) in res.items():
            print(f"  {name:<36} {seconds:8.3f} s   sklearn/this {sk / seconds:6.1f}x   inertia {inertia:.4g}")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
