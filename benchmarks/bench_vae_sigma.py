#!/usr/bin/env python3
"""The disentangled VAE's ``recon_sigma`` (the fixed std of p(x|z), not given by the paper), by measurement.

Digit pairs (``geochange.data.digits``; the variants of bench_vae.py, ``plain`` is what tests/test_vae.py
uses), standardised with one mean and std of the training negatives as bench_vae.py does. For each
``--sigmas`` x ``--lambdas`` (lambda1 of Eq. 3; 0 = "VAE w/o sim.") and seed, the Enc-MNIST
representation is trained on ``--negatives`` same-digit pairs (``--epochs``, paper defaults otherwise)
by the shared trainer, then measured on held-out pairs of other source digits:

* ``KL``: KL(q(z|x) || N(0, I)) per image in nats, of the common and the specific latents (how much
  each group carries about the image; a VAE whose KL is near 0 has collapsed to the prior);
* ``AU``: active units (Burda et al. 2016): latent units whose posterior mean varies over the test
  images (variance > 0.01), common / specific; a unit below that is the prior whatever the image;
* ``probe``: accuracy of a logistic regression (scikit-learn, on the train images' posterior means)
  predicting the digit class of test images from the common means, and from the specific means. The
  paper's Fig. 5 (t-SNE): the common features are "more informative about digit classes" than the
  specific ones, so ``probe_c > probe_s`` is the paper's split;
* ``AUC``: of the common-feature distance (Modified-L2) between the two images of a test pair for
  "the digits differ" (Table 2's anomaly mode, before its k-means), and ``km``: the accuracy of that
  k-means (k = 2) assignment.

    nice -n 10 python3 benchmarks/bench_vae_sigma.py [--variant plain R] [--sigmas 1 0.5 0.25 0.1] [--lambdas 0 1 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


def standardiser(items: list[dict]):
    x = np.stack([it["before"] for it in items])
    mean, std = float(x.mean()), float(x.std())
    return lambda batch: [{**it, "before": (it["before"] - mean) / std, "after": (it["after"] - mean) / std}
                          for it in batch]


def posterior(model, images: np.ndarray):
    """Common and specific posterior means and log-variances, flattened, for (N, 1, 28, 28) images."""
    import torch

    with torch.no_grad():
        (mu_c, lv_c, mu_s, lv_s), = model.net.encode(torch.as_tensor(images))
    return [t.flatten(1).numpy().astype(np.float64) for t in (mu_c, lv_c, mu_s, lv_s)]


def kl_nats(mu: np.ndarray, lv: np.ndarray) -> float:
    return float((0.5 * (mu ** 2 + np.exp(lv) - 1.0 - lv)).sum(1).mean())


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scale.transform(train_x), train_y)
    return float((clf.predict(scale.transform(test_x)) == test_y).mean())


def measure(variant: str, sigma: float, lam: float, seed: int, args) -> dict:
    from sklearn.metrics import roc_auc_score

    from geochange.data.digits import digit_pairs
    from geochange.models.vae import DisentangledVAE, VAEConfig
    from geochange.train import TrainOptions, train

    raw = digit_pairs(variant, args.negatives, seed=1, positive_fraction=0.0, split="train")
    z = standardiser(raw)
    negatives = z(raw)
    test = z(digit_pairs(variant, args.test_pairs, seed=2, positive_fraction=0.5, split="test"))
    model = DisentangledVAE(VAEConfig(arch="mnist", epochs=args.epochs, recon_sigma=sigma, lambda_sim=lam))
    t0 = time.perf_counter()
    summary = train(model, negatives, TrainOptions(seed=seed, standardize=False, device="cpu"))
    seconds = time.perf_counter() - t0
    tr_img = np.stack([it["before"] for it in negatives[:args.probe_train]])
    tr_y = np.array([it["meta"]["digit_before"] for it in negatives[:args.probe_train]])
    te_img = np.stack([it["before"] for it in test])
    te_y = np.array([it["meta"]["digit_before"] for it in test])
    mu_c, lv_c, mu_s, lv_s = posterior(model, te_img)
    tr_c, _, tr_s, _ = posterior(model, tr_img)
    tb, ta = te_img, np.stack([it["after"] for it in test])
    y = np.array([int(it["label"][0, 0]) for it in test])
    d = model.common_distance(tb, ta)
    try:
        info = model.fit_anomaly(tb, ta, seed=0)
        km = float(((model.anomaly_probability(d) >= 0.5) == y).mean())
    except Exception as exc:  # a degenerate split is a result too
        info, km = {"error": str(exc)}, float("nan")
    last = summary["history"][-1]
    return {"variant": variant, "sigma": sigma, "lambda_sim": lam, "seed": seed, "seconds": round(seconds, 1),
            "kl_c": kl_nats(mu_c, lv_c), "kl_s": kl_nats(mu_s, lv_s),
            "au_c": int((mu_c.var(0) > 0.01).sum()), "au_s": int((mu_s.var(0) > 0.01).sum()),
            "probe_c": probe(tr_c, tr_y, mu_c, te_y), "probe_s": probe(tr_s, tr_y, mu_s, te_y),
            "auc": float(roc_auc_score(y, d)), "km": km, "events": info.get("events"),
            "loss": last["loss"], "recon": last["recon"], "sim": last["sim"], "act": last["act"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", default=["plain", "R"])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--negatives", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--test-pairs", type=int, default=1000)
    ap.add_argument("--probe-train", type=int, default=2000, help="training images for the digit probe")
    ap.add_argument("--json", help="write every row to this file")
    args = ap.parse_args()

    import torch

    from geochange.progress import set_quiet

    set_quiet(True)
    torch.set_num_threads(1)
    print(f"{args.negatives} negatives, {args.epochs} epochs, {args.test_pairs} test pairs, seeds {args.seeds}")
    print(f"{'variant':>7} {'sigma':>5} {'lam1':>4} | {'KL_c':>6} {'KL_s':>6} | {'probe_c':>7} {'probe_s':>7} | "
          f"{'AUC':>5} {'km':>5} | {'AU_c':>4} {'AU_s':>4} | {'s':>4}")
    rows = []
    for variant in args.variant:
        for sigma in args.sigmas:
            for lam in args.lambdas:
                for seed in args.seeds:
                    r = measure(variant, sigma, lam, seed, args)
                    rows.append(r)
                    print(f"{variant:>7} {sigma:>5g} {lam:>4g} | {r['kl_c']:6.1f} {r['kl_s']:6.1f} | "
                          f"{r['probe_c']:7.3f} {r['probe_s']:7.3f} | {r['auc']:5.3f} {r['km']:5.3f} | "
                          f"{r['au_c']:4d} {r['au_s']:4d} | {r['seconds']:4.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
