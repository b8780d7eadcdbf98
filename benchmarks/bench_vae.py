#!/usr/bin/env python3
"""Tables 3 and 2 of Hamaguchi et al. (CVPR 2019) in miniature: change detection on digit pairs.

Digits-R (``geochange.data.digits``: scikit-learn's 8x8 digits upsampled into 28x28 MNIST-like
frames, each image of a pair rotated by its own uniform random angle; the source digits split into
train and test sets that share no image). A pair is positive when its two digits differ.

* **Representation** (Sec. 3.3, Enc-MNIST, paper defaults otherwise: Adam lr 1e-3, weight decay
  5e-4, batch 100, lambda2 = 1, s = 0.5): learned on ``--negatives`` same-digit pairs, twice:
  *VAE w/ sim.* (``lambda_sim``, Modified-L2) and *VAE w/o sim.* (``lambda_sim = 0``).
* **Table 3**: for each number of labels P (positives) in ``--labels`` and each of ``--runs`` runs
  (a different draw of the P positives and another seed), three models are fine-tuned on the P
  positives plus the negatives, undersampled to P negatives per epoch (Sec. 3.4):
  *Under samp.* (the same Enc-MNIST encoder and 100-100-2 classifier trained from scratch at the full
  lr: the paper's under-sampled siamese CNN, Table 7), *VAE w/o sim.* and *VAE w/ sim.* (classifier on
  ``[mu_c(A), mu_c(B)]``, encoder lr x0.1). Accuracy on ``--test-pairs`` balanced held-out pairs,
  mean and std over the runs.
* **Table 2** (anomaly mode): no labels at all; k-means (k = 2) on the Modified-L2 distance
  between the common features of the test pairs; accuracy of the cluster assignment (and the
  AUC of the distance, which needs no clustering).

Every model is trained by the shared trainer (``geochange.train.train``). Images are standardised
with the mean and std of the training negatives (``standardize=False`` in the trainer).

Reduced CPU defaults (about 10-15 minutes on a 2-core machine), printed with the table:
10,000 negatives (paper 100,000), 6 representation epochs (paper 30), 5 runs (paper 10), 2,000
test pairs (paper 100,000); fine-tuning keeps the paper's 30 epochs. ``--full`` sets the paper's
sizes (run it on a GPU: ``--device cuda``). The representation is learned once per model (seed 0);
the runs differ in the labelled subset, as the paper's "different training subsets".

    nice -n 10 python3 benchmarks/bench_vae.py [--variant R] [--labels 50 500] [--runs 5] [--full --device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np

#: the paper's Table 3 (MNIST-R) and Table 2 (MNIST-R), for reference
PAPER_T3 = {50: {"Under samp.": "50.63(0.31)", "VAE w/o sim.": "51.55(0.43)", "VAE w/ sim.": "79.65(4.42)"},
            500: {"Under samp.": "60.05(3.10)", "VAE w/o sim.": "64.74(1.31)", "VAE w/ sim.": "89.73(0.56)"}}
PAPER_T2 = {"VAE w/o sim.": "54.95", "VAE w/ sim.": "71.66"}
METHODS = ("Under samp.", "VAE w/o sim.", "VAE w/ sim.")


def standardiser(items: list[dict]):
    """One mean and std from the BEFORE images of ``items``, applied to both dates of any items."""
    x = np.stack([it["before"] for it in items])
    mean, std = float(x.mean()), float(x.std())

    def apply(batch: list[dict]) -> list[dict]:
        return [{**it, "before": (it["before"] - mean) / std, "after": (it["after"] - mean) / std} for it in batch]

    return apply


def arrays(items: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([it["before"] for it in items]), np.stack([it["after"] for it in items]),
            np.array([int(it["label"][0, 0]) for it in items]))


def fmt(values: list[float]) -> str:
    return f"{100 * np.mean(values):.2f}({100 * np.std(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="R", help="digits variant: plain, R, B, R-B (default R)")
    ap.add_argument("--labels", type=int, nargs="+", default=[50, 500], help="numbers of positives (Table 3 rows)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=10_000, help="negative pairs (representation, and the pool "
                    "fine-tuning undersamples)")
    ap.add_argument("--rep-epochs", type=int, default=6, help="representation epochs (paper 30)")
    ap.add_argument("--ft-epochs", type=int, default=30, help="fine-tuning epochs (paper 30)")
    ap.add_argument("--test-pairs", type=int, default=2000)
    ap.add_argument("--lambda-sim", type=float, default=None, help="lambda1 of VAE w/ sim. (default: the config's, 1)")
    ap.add_argument("--recon-sigma", type=float, default=None, help="std of p(x|z) (default: the config's)")
    ap.add_argument("--distance", default="modified-l2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="paper sizes: 100,000 negatives, 30 epochs, 10 runs, "
                    "100,000 test pairs")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if args.full:
        args.negatives, args.rep_epochs, args.runs, args.test_pairs = 100_000, 30, 10, 100_000

    from sklearn.metrics import roc_auc_score

    from geochange.data.digits import digit_pairs
    from geochange.models.vae import DisentangledVAE, VAEConfig
    from geochange.progress import set_quiet
    from geochange.train import TrainOptions, train

    set_quiet(True)
    t_start = time.perf_counter()
    raw_negatives = digit_pairs(args.variant, args.negatives, seed=1, positive_fraction=0.0, split="train")
    z = standardiser(raw_negatives)
    negatives = z(raw_negatives)
    test = z(digit_pairs(args.variant, args.test_pairs, seed=2, positive_fraction=0.5, split="test"))
    tb, ta, ty = arrays(test)
    opts = dict(standardize=False, device=args.device)
    overrides = {k: v for k, v in (("lambda_sim", args.lambda_sim), ("recon_sigma", args.recon_sigma)) if v is not None}
    base = VAEConfig(arch="mnist", epochs=args.rep_epochs, distance=args.distance, **overrides)
    print(f"digits-{args.variant}: {len(negatives)} negative training pairs, {len(test)} test pairs "
          f"({int(ty.sum())} positive); representation {args.rep_epochs} epochs (paper 30), fine-tuning "
          f"{args.ft_epochs} epochs, {args.runs} runs (paper 10); lambda_sim {base.lambda_sim}, "
          f"recon_sigma {base.recon_sigma}, distance {base.distance}", flush=True)

    # -- representations (negatives only) ---------------------------------------------------------------
    reps: dict[str, dict] = {}
    anomaly: dict[str, dict] = {}
    for name, lam in (("VAE w/o sim.", 0.0), ("VAE w/ sim.", base.lambda_sim)):
        t0 = time.perf_counter()
        model = DisentangledVAE(dataclasses.replace(base, lambda_sim=lam))
        summary = train(model, negatives, TrainOptions(seed=0, **opts))
        last = summary["history"][-1]
        reps[name] = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
        d = model.common_distance(tb, ta)
        info = model.fit_anomaly(tb, ta, seed=0)
        acc = float(((model.anomaly_probability(d) >= 0.5) == ty).mean())
        anomaly[name] = {"accuracy": acc, "auc": float(roc_auc_score(ty, d)), "events": info["events"]}
        print(f"  representation {name}: {time.perf_counter() - t0:.0f} s; last epoch loss {last['loss']:.1f} "
              f"(recon {last['recon']:.1f}, kl {last['kl']:.1f}, sim {last['sim']:.3f}, act {last['act']:.3f}); "
              f"anomaly accuracy {100 * acc:.2f}, distance AUC {anomaly[name]['auc']:.3f}", flush=True)

    # -- fine-tuning (Table 3) ----------------------------------------------------------------------------
    results: dict[int, dict[str, list[float]]] = {n: {m: [] for m in METHODS} for n in args.labels}
    for n_labels in args.labels:
        for run in range(args.runs):
            positives = z(digit_pairs(args.variant, n_labels, seed=1000 + run, positive_fraction=1.0, split="train"))
            for method in METHODS:
                t0 = time.perf_counter()
                cfg = dataclasses.replace(base, stage="finetune", epochs=args.ft_epochs,
                                          encoder_lr_factor=1.0 if method == "Under samp." else base.encoder_lr_factor)
                model = DisentangledVAE(cfg)
                if method != "Under samp.":
                    model.build(1)
                    model.net.load_state_dict(reps[method])
                train(model, negatives + positives, TrainOptions(seed=run, **opts))
                acc = float(((model.score_pairs(tb, ta) >= 0.5) == ty).mean())
                results[n_labels][method].append(acc)
                print(f"  {n_labels} labels, run {run + 1}, {method}: accuracy {100 * acc:.2f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)

    minutes = (time.perf_counter() - t_start) / 60
    print()
    print(f"Table 3 (digits-{args.variant}): accuracy %, mean(std) over {args.runs} runs; paper (MNIST-R) in []")
    print(f"{'#labels':>8} | " + " | ".join(f"{m:>24}" for m in METHODS))
    for n in args.labels:
        paper = PAPER_T3.get(n, {})
        cells = [f"{fmt(results[n][m])} [{paper.get(m, '-')}]" for m in METHODS]
        print(f"{n:>8} | " + " | ".join(f"{c:>24}" for c in cells))
    print()
    print(f"Table 2 (digits-{args.variant}, no labels; k-means k=2 on the common-feature distance): accuracy %")
    for name in ("VAE w/o sim.", "VAE w/ sim."):
        a = anomaly[name]
        print(f"  {name:>13}: {100 * a['accuracy']:.2f} [paper {PAPER_T2[name]}]  (distance AUC {a['auc']:.3f}, "
              f"{a['events']} of {len(ty)} pairs in the event cluster)")
    print(f"\n{minutes:.1f} min in all; reduced settings as stated in the first line")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "table3": {str(k): v for k, v in results.items()}, "table2": anomaly,
                       "minutes": minutes}, fh, indent=1)


if __name__ == "__main__":
    main()
