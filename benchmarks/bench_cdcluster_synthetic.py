#!/usr/bin/env python3
"""CDCluster on small synthetic pairs with planted change: what each phase and option adds (issue 13).

Data: ``tests/conftest.planted_patches`` (textured uint8 pairs, every other one with a bright 8x8 square
planted in AFTER; ``--size`` px, the test suite's 24 by default), ``--train`` training pairs and
``--test`` held-out pairs of another seed, standardised per pair set as the trainer does. Each setting
is a CDCluster config (a short schedule, as the tests use: lr 1e-2, batch 8) trained by the shared
trainer on the same data and seeds; printed per setting, mean over ``--seeds``:

* ``F1``, ``found`` (share of planted pixels >= 0.5) and ``kept`` (share of unchanged pixels < 0.5) of
  ``predict`` on the held-out pairs;
* ``purity``: F1 of the best binarisation of the last clustering's pseudo-labels against the truth
  (clusters whose pixels are mostly changed called changed; how well the clusters isolate the change);
* ``ami``: the adjusted mutual information of that clustering with the truth (logged ``ami_truth``).

``unsup_lr=0`` in a setting (not a config key) sets the learning rate of the unsupervised epochs to 0:
the phase still clusters, refits the output layer and votes, but no gradient step moves the network,
which separates what its learning adds from what its clustering does.

    nice -n 10 python3 benchmarks/bench_cdcluster_synthetic.py [--seeds 0 1 2] \\
        [--setting warmup:epochs=4,warmup_epochs=4 --setting both:epochs=10,warmup_epochs=4 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

BASE = dict(warmup_fraction=0.5, lr=1e-2, batch_size=8)
DEFAULT_SETTINGS = ("warm-up only:epochs=4,warmup_epochs=4",
                    "+ unsupervised, raw:epochs=10,warmup_epochs=4,recluster_every=2,whiten=false",
                    "+ unsupervised, whitened:epochs=10,warmup_epochs=4,recluster_every=2,whiten=true")


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        key, value = kv.split("=")
        params[key] = {"true": True, "false": False}.get(value.lower(), None)
        if params[key] is None:
            params[key] = float(value) if "." in value or "e-" in value else int(value)
    return name, params


def freeze_after_warmup(model, lr: float) -> None:
    """Set the optimiser's learning rate to ``lr`` for the unsupervised epochs (``unsup_lr=0``: the phase
    clusters, refits the output layer and votes, but no gradient step moves the network)."""
    made, make, start = [], model.make_optimizer, model.start_epoch

    def make_optimizer():
        made.append(make())
        return made[-1]

    def start_epoch(epoch, data):
        if epoch >= model.config.warmup_epochs:
            for group in made[-1].param_groups:
                group["lr"] = lr
        return start(epoch, data)

    model.make_optimizer, model.start_epoch = make_optimizer, start_epoch


def scores(model, items: list[dict]) -> tuple[float, float, float]:
    from geochange.train.data import PairStandardizer, item_groups

    std = PairStandardizer(items, item_groups(items))
    before, after = (np.stack(d) for d in zip(*(std(i, item) for i, item in enumerate(items))))
    label = np.stack([item["label"] for item in items])
    changed = model.predict(before, after, np.ones(label.shape, bool)) >= 0.5
    truth = label == 1
    tp = np.sum(changed & truth)
    f1 = 2 * tp / max(1, 2 * tp + np.sum(changed & ~truth) + np.sum(~changed & truth))
    return float(f1), float(changed[truth].mean()), float((~changed[~truth]).mean())


def purity(model, items: list[dict]) -> float:
    """F1 of the best binarisation of the pseudo-labels (NaN without an unsupervised phase)."""
    if not model.pseudo:
        return float("nan")
    k = model.config.k
    table = np.zeros((k, 2), np.int64)
    for position, labels in model.pseudo.items():
        for v in (0, 1):
            table[:, v] += np.bincount(labels[items[position]["label"] == v], minlength=k)
    best = table[:, 1] > table[:, 0]
    return float(2 * table[best, 1].sum() / max(1, table[:, 1].sum() + table[best].sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=32)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--setting", action="append", help="NAME:key=value,... (CDCluster settings over the base "
                    f"{BASE}); repeatable")
    args = ap.parse_args()

    import torch

    from conftest import planted_patches
    from geochange.models.cdcluster import CDCluster, CDClusterConfig
    from geochange.progress import set_quiet
    from geochange.train import TrainOptions, train

    set_quiet(True)
    torch.set_num_threads(1)
    settings = [parse_setting(s) for s in (args.setting or DEFAULT_SETTINGS)]
    test = planted_patches(args.test, size=args.size, seed=99)
    print(f"{args.train} training pairs, {args.test} held-out pairs of {args.size} px; seeds {args.seeds}; "
          f"base {BASE}")
    print(f"{'setting':>32} | {'F1':>12} {'found':>6} {'kept':>6} | {'purity':>6} {'ami':>6} | {'s':>4}")
    for name, params in settings:
        rows = []
        for seed in args.seeds:
            items = planted_patches(args.train, size=args.size, seed=seed)
            config = {k: v for k, v in params.items() if k != "unsup_lr"}
            model = CDCluster(CDClusterConfig(**{**BASE, **config}))
            if "unsup_lr" in params:
                freeze_after_warmup(model, float(params["unsup_lr"]))
            t0 = time.perf_counter()
            summary = train(model, items, TrainOptions(device="cpu", seed=seed))
            amis = [row["ami_truth"] for row in summary["history"] if "ami_truth" in row]
            rows.append((*scores(model, test), purity(model, items), amis[-1] if amis else float("nan"),
                         time.perf_counter() - t0))
        r = np.array(rows)
        f1 = r[:, 0]
        print(f"{name:>32} | {f1.mean():.3f}±{f1.std():.3f} {r[:, 1].mean():6.3f} {r[:, 2].mean():6.3f} | "
              f"{np.nanmean(r[:, 3]) if np.isfinite(r[:, 3]).any() else float('nan'):6.3f} "
              f"{np.nanmean(r[:, 4]) if np.isfinite(r[:, 4]).any() else float('nan'):6.3f} | {r[:, 5].mean():4.0f}"
              f"   per seed F1 {' '.join(f'{v:.3f}' for v in f1)}", flush=True)


if __name__ == "__main__":
    main()
