#!/usr/bin/env python3
"""One-class AUC of VAE, Recode VAE, RSC-VAE_o, RSC-VAE_d and RSC-VAE_e on digits (RSC-VAE paper, Table 1).

The paper's MNIST protocol (Sec. 4.1, after Ganomaly) on the digits we can have offline
(``geochange.data.digits``: scikit-learn's 8x8 digits upsampled into 28x28 MNIST-like frames,
split into train and test sources by a seeded stratified draw):

* for each normal class k: train on the train-split images of digit k; test on the test-split
  images of k (normal) and a random half of the test-split images of the other digits (anomalies);
  score = the outlier score of Eqs. 15-16 (alpha = 0.5), AUC with ``sklearn.metrics.roc_auc_score``;
* the five columns, all the same network (``geochange.models.rscvae``, paper defaults: four 3x3
  conv + BN + LeakyReLU blocks, input 32x32, Adam lr 0.01, cosine annealing T_max = 50 epochs,
  batch 32), trained by the shared trainer (``geochange.train.train``):

  - ``VAE``: ``l_recon + l_enc1`` only (``lam=0``), scored by the reconstruction error (``alpha=0``);
  - ``Recode``: the same trained VAE scored with Eq. 15 (``alpha=0.5``): the paper's "Recode VAE";
  - ``RSC_o``: one-class mode (Eq. 10, lambda = 0.1);
  - ``RSC_d``: shifted mode, DSA (1-3 of hflip / vflip / rot90) on ``--dsa-p`` of the samples (Eq. 12);
  - ``RSC_e``: imbalanced mode, ``round(--anomaly-share x n_normal)`` (>= 1) train-split images of
    the other digits added as real anomalies (Eq. 14).

A second table scores the same RSC-VAE models by one term of Eq. 15 only (alpha = 0: the reconstruction
error; alpha = 1: ``l_mut``), to see which term carries the detection. A sample is one digit: the trainer's items are pairs, so each image is given as both dates (BEFORE =
AFTER, two identical channels) and DSA transforms the whole sample (``dsa_dates="both"``), as the
paper transforms its images. Images are standardised by the mean and std of the normal training
images (``standardize=False`` in the trainer, the same transform at test time).

Reduced CPU defaults (about 5 minutes on a 2-core machine): 50 epochs (one cosine half-period),
all ten classes, one seed. ``--full`` gives the paper's 500 epochs (run it on a GPU:
``--device cuda``). Differences to the paper's data: 1,797 source digits instead of 70,000, so
about 125 training images per class instead of ~6,000, and 1 % of them as real anomalies is one
image (``--anomaly-share``).

    nice -n 10 python3 benchmarks/bench_rscvae.py [--classes 0 1 2] [--epochs 50] [--full --device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

COLUMNS = ("VAE", "Recode", "RSC_o", "RSC_d", "RSC_e")
#: the paper's Table 1 (MNIST), for reference: Recode VAE, RSC-VAE_o, _d, _e per digit
PAPER = {0: (0.996, 0.999, 0.997, 0.999), 1: (0.999, 0.999, 0.999, 0.999), 2: (0.958, 0.972, 0.978, 0.999),
         3: (0.957, 0.942, 0.963, 0.999), 4: (0.972, 0.978, 0.984, 0.999), 5: (0.974, 0.982, 0.977, 0.999),
         6: (0.996, 0.998, 0.996, 0.999), 7: (0.970, 0.971, 0.983, 0.999), 8: (0.957, 0.941, 0.942, 0.998),
         9: (0.983, 0.981, 0.988, 0.998)}


def one_class_split(images: np.ndarray, labels: np.ndarray, splits: dict, k: int, anomaly_share: float,
                    seed: int) -> dict:
    """Ganomaly's division for normal digit ``k``: train normals, a few train anomalies (RSC-VAE_e), test set."""
    rng = np.random.default_rng([seed, k])
    train, test = splits["train"], splits["test"]
    normal = train[labels[train] == k]
    others = train[labels[train] != k]
    n_anom = max(1, int(round(anomaly_share * len(normal))))
    anomalies = rng.choice(others, n_anom, replace=False)
    test_normal = test[labels[test] == k]
    test_other = test[labels[test] != k]
    test_anom = rng.choice(test_other, len(test_other) // 2, replace=False)
    mean, std = float(images[normal].mean()), float(images[normal].std())
    x = (images - mean) / std
    return {"x": x, "normal": normal, "anomalies": anomalies,
            "test": np.r_[test_normal, test_anom], "y": np.r_[np.zeros(len(test_normal)), np.ones(len(test_anom))]}


def items_of(x: np.ndarray, positions: np.ndarray, changed: bool) -> list[dict]:
    """Trainer items: each image as both dates; label all 1 for anomalies, all 0 for normals."""
    label = np.full(x.shape[-2:], int(changed), np.uint8)
    return [{"before": x[i], "after": x[i], "label": label} for i in positions]


def auc_of(model, split: dict, normal_items: list[dict]) -> float:
    """Fit the score statistics on the normal training items, then the AUC on the test set."""
    from sklearn.metrics import roc_auc_score

    model.fit_score_statistics(normal_items, standardize=False)
    xt = split["x"][split["test"]]
    return float(roc_auc_score(split["y"], model.score(xt, xt)))


def run_class(k: int, images, labels, splits, args) -> tuple[dict, dict]:
    """AUC of every column for normal class ``k``, and the training seconds of each trained model."""
    from geochange.models.rscvae import RSCVAE, RSCVAEConfig
    from geochange.train import TrainOptions, train

    split = one_class_split(images, labels, splits, k, args.anomaly_share, args.seed)
    normal = items_of(split["x"], split["normal"], False)
    anomalies = items_of(split["x"], split["anomalies"], True)
    base = dict(epochs=args.epochs, dsa_p=args.dsa_p, dsa_dates="both", anomaly_share=None)
    runs = {"VAE": (dict(lam=0.0, alpha=0.0), normal),
            "RSC_o": (dict(mode="one-class"), normal),
            "RSC_d": (dict(mode="shifted"), normal),
            "RSC_e": (dict(mode="imbalanced"), normal + anomalies)}
    aucs, seconds = {}, {}
    for column, (params, data) in runs.items():
        model = RSCVAE(RSCVAEConfig(**base, **params))
        t0 = time.perf_counter()
        train(model, data, TrainOptions(device=args.device, seed=args.seed, standardize=False))
        seconds[column] = time.perf_counter() - t0
        aucs[column] = auc_of(model, split, normal)
        if column == "VAE":  # the same trained VAE, scored with recoding (Eq. 15): "Recode VAE"
            model.config = dataclasses.replace(model.config, alpha=0.5)
            aucs["Recode"] = auc_of(model, split, normal)
        else:  # diagnostics: the same model scored by each term of Eq. 15 alone
            for alpha, name in ((0.0, "recon"), (1.0, "mut")):
                model.config = dataclasses.replace(model.config, alpha=alpha)
                aucs[f"{column}_{name}"] = auc_of(model, split, normal)
    return aucs, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=50, help="training epochs (paper: 500; default 50)")
    parser.add_argument("--dsa-p", type=float, default=0.01, help="DSA probability (paper: 0.01)")
    parser.add_argument("--anomaly-share", type=float, default=0.01,
                        help="real anomalies per normal training image for RSC-VAE_e (paper: 0.01)")
    parser.add_argument("--variant", default="plain", help="digits variant: plain, R, B, R-B (paper: plain MNIST)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="the paper's 500 epochs (for a GPU)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.full:
        args.epochs = 500

    from geochange.data.digits import digit_images, split_sources
    from geochange.progress import set_quiet

    set_quiet(True)
    images, labels = digit_images(args.variant, seed=args.seed)
    splits = split_sources(args.seed)
    print(f"digits-{args.variant}: {len(splits['train'])} train / {len(splits['test'])} test sources; "
          f"{args.epochs} epochs, dsa_p {args.dsa_p}, anomaly share {args.anomaly_share}, seed {args.seed}")
    print(f"{'class':>5} " + " ".join(f"{c:>7}" for c in COLUMNS) + "   | paper: Recode  RSC_o  RSC_d  RSC_e"
          + " | train s (VAE, o, d, e)")
    results, t_start = {}, time.perf_counter()
    for k in args.classes:
        aucs, seconds = run_class(k, images, labels, splits, args)
        results[k] = {"auc": aucs, "train_s": seconds}
        paper = "  ".join(f"{v:.3f}" for v in PAPER[k])
        print(f"{k:>5} " + " ".join(f"{aucs[c]:7.3f}" for c in COLUMNS) + f"   |        {paper}"
              + " | " + " ".join(f"{seconds[c]:.0f}" for c in ("VAE", "RSC_o", "RSC_d", "RSC_e")), flush=True)
    mean = {c: float(np.mean([results[k]["auc"][c] for k in args.classes])) for c in results[args.classes[0]]["auc"]}
    paper_mean = [float(np.mean([PAPER[k][i] for k in args.classes])) for i in range(4)]
    print(f"{'mean':>5} " + " ".join(f"{mean[c]:7.3f}" for c in COLUMNS) + "   |        "
          + "  ".join(f"{v:.3f}" for v in paper_mean))
    terms = [f"{c}_{t}" for c in ("RSC_o", "RSC_d", "RSC_e") for t in ("recon", "mut")]
    print("\nthe same models scored by one term of Eq. 15 (alpha = 0: l_recon only; alpha = 1: l_mut only)")
    print(f"{'class':>5} " + " ".join(f"{c:>11}" for c in terms))
    for k in args.classes:
        print(f"{k:>5} " + " ".join(f"{results[k]['auc'][c]:11.3f}" for c in terms))
    print(f"{'mean':>5} " + " ".join(f"{np.mean([results[k]['auc'][c] for k in args.classes]):11.3f}" for c in terms))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results, "mean": mean}, fh, indent=1)


if __name__ == "__main__":
    main()
