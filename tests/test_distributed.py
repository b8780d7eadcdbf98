"""Distributed training: two processes launched by torchrun (gloo, CPU) train together and agree.

One launch trains the tiny test model (``train`` joins and leaves the process group itself, as under
``geochange train --ddp``), another, side by side, every trainable model of ``geochange.models`` for a
few steps in one group the script holds (a process cannot join a second group under torchrun: the
rendezvous hangs). Each rank saves what it ended with and the tests compare them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from geochange.errors import GeochangeError
from geochange.models import MODELS, model_class
from geochange.models.base import TrainableModel
from geochange.train.distributed import Dist, setup

TESTS = Path(__file__).resolve().parent

# A few steps of each trainable model on 16 planted pairs of 28 px (the VAE's MNIST architecture takes 28).
PAIRS = 16
CONFIGS = {
    "vae": dict(epochs=3, batch_size=4),
    # 8 of the pairs are unchanged: a threshold at their 0.8 quantile needs 5 (the default 0.99 needs 100)
    "rscvae": dict(size=16, widths=(8, 16), latent=8, epochs=3, batch_size=4, cosine_t_max=0, lr=0.01,
                   threshold_quantile=0.8),
    # two warm-up epochs, then two clusterings of 12 pairs (75 %) in 3 batches: rank 0 extracts 2, rank 1 one
    "cdcluster": dict(epochs=4, warmup_epochs=2, warmup_fraction=0.5, recluster_every=1, batch_size=4, lr=1e-2,
                      cluster_points=800),
}

SCRIPT = textwrap.dedent("""
    import os, sys, numpy as np, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from conftest import TinyChangeNet, TinyConfig, planted_patches
    from geochange.models import create_model
    from geochange.train import TrainOptions, train
    from geochange.train.distributed import import_before_group

    def threads():  # this process's threads: gloo's workers live as long as the process group
        return len(os.listdir("/proc/self/task"))

    def record(model, summary):
        rows = [{{k: v for k, v in row.items() if k != "seconds"}} for row in summary["history"]]
        out = {{"state": model.net.state_dict(), "history": rows, "rank": summary["rank"],
               "world": summary["world_size"], "extra": model.extra_state()}}
        if model.name == "cdcluster":
            positions = sorted(model.pseudo)
            pseudo = torch.as_tensor(np.stack([model.pseudo[p] for p in positions]))
            out.update(pseudo_positions=positions, pseudo=pseudo,
                       class_weights=torch.as_tensor(model.class_weights), clustering=dict(model.clustering))
        return out

    out, launch = {out!r}, sys.argv[1]
    before = threads()
    if launch == "tiny":  # as `geochange train --ddp`: train() joins the process group and leaves it
        model = TinyChangeNet(TinyConfig())
        summary = train(model, planted_patches(21, seed=3), TrainOptions(device="cpu", epochs=6, seed=1,
                                                                          out=out + "/tiny", ddp=True))
        results = {{"tiny": record(model, summary)}}
    else:  # every real model in turn, in one group this script holds (torch cannot join a second one)
        import_before_group()
        dist.init_process_group("gloo")
        items = planted_patches({pairs}, size=28, seed=5)
        results = {{}}
        for name, params in {configs!r}.items():
            model = create_model(name, **params)
            summary = train(model, items, TrainOptions(device="cpu", seed=2, out=out + "/" + name, ddp=True))
            results[name] = record(model, summary)
        dist.barrier()
        dist.destroy_process_group()
    results[launch + "_threads"] = {{"before": before, "after": threads()}}
    torch.save(results, out + f"/{{launch}}_rank{{summary['rank']}}.pt")
""")


def _assert_same(a, b, where: str) -> None:
    """Equal values, tensors bit for bit, through dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[dict, dict, Path]:
    """Two torchrun launches of 2 CPU processes each, side by side: the tiny model, and the real models;
    what each rank ended with, and the run folder."""
    out = tmp_path_factory.mktemp("ddp") / "runs"
    out.mkdir()
    script = out.parent / "ddp_train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(out), pairs=PAIRS, configs=CONFIGS))
    launches = {launch: subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc-per-node", "2", str(script), launch],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         start_new_session=True)
                for launch in ("tiny", "models")}
    try:
        for launch, proc in launches.items():
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{launch}: {err[-6000:]}"
    finally:
        for proc in launches.values():  # a hung launch: end its workers too (their own process group)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    r0, r1 = ({**torch.load(out / f"tiny_rank{r}.pt", weights_only=True),
               **torch.load(out / f"models_rank{r}.pt", weights_only=True)} for r in (0, 1))
    return r0, r1, out


def test_two_ranks_train_together_and_end_with_identical_weights(ranks):
    r0, r1, out = ranks
    tiny = (r0["tiny"], r1["tiny"])
    assert [r["rank"] for r in tiny] == [0, 1] and [r["world"] for r in tiny] == [2, 2]
    _assert_same(tiny[0]["state"], tiny[1]["state"], "tiny.state")
    losses = [row["loss"] for row in tiny[0]["history"]]
    assert losses == [row["loss"] for row in tiny[1]["history"]] and losses[-1] < 0.6 * losses[0]  # averaged, falling
    assert (out / "tiny" / "last.pt").is_file() and len((out / "tiny" / "metrics.csv").read_text().splitlines()) == 7


def test_the_process_group_ends_with_its_threads(ranks):
    # gloo's worker threads end with the group. Left running (a group held for good by a default argument
    # in torch.distributed.nn.functional), freeing a collective's work on one of them while the
    # interpreter finalises aborted a rank now and then: see distributed.import_before_group
    r0, r1, _ = ranks
    for r in (r0, r1):
        assert r["tiny_threads"]["after"] == r["tiny_threads"]["before"], r["tiny_threads"]  # train() left the group
        assert r["models_threads"]["after"] == r["models_threads"]["before"], r["models_threads"]


def test_every_trainable_model_trains_under_ddp_and_the_ranks_agree(ranks):
    r0, r1, out = ranks
    # every model the trainer trains (logistic learns from marks only, in one fit: no epochs to spread)
    trainable = {name for name in MODELS if issubclass(model_class(name), TrainableModel)
                 and model_class(name).trains_on_datasets}
    assert trainable == set(CONFIGS), "give every trainable model a tiny configuration in CONFIGS"
    for name in CONFIGS:
        a, b = r0[name], r1[name]
        assert (a["rank"], b["rank"], a["world"]) == (0, 1, 2), name
        # weights, fitted state (anomaly clustering, score statistics, centroids, change table) and the
        # logged history (losses averaged over the ranks) agree bit for bit
        for key in a:
            if key not in ("rank", "clustering"):  # what each rank did itself (next test)
                _assert_same(a[key], b[key], f"{name}.{key}")
        assert (out / name / "last.pt").is_file()  # rank 0 wrote the run
        # it learns: the loss falls (CDCluster: over its supervised warm-up; each clustering sets new targets)
        losses = [row["loss"] for row in a["history"] if row.get("warmup", 1) == 1]
        assert len(losses) >= 2 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], (name, losses)


def test_cdcluster_clusters_the_gathered_features_of_both_ranks_on_rank_0(ranks):
    r0, r1, _ = ranks
    a, b = r0["cdcluster"], r1["cdcluster"]
    clustered = round(0.75 * PAIRS)                                 # cluster_fraction of the pairs
    per_pair = -(-CONFIGS["cdcluster"]["cluster_points"] // clustered)  # pixels sampled per pair
    # the last clustering: 3 batches of 4 pairs, rank 0 extracted two, rank 1 one; rank 0 clustered all
    assert (a["clustering"]["pairs_here"], b["clustering"]["pairs_here"]) == (8, 4)
    assert (a["clustering"]["rows_here"], b["clustering"]["rows_here"]) == (8 * per_pair, 4 * per_pair)
    assert a["clustering"]["rows"] == b["clustering"]["rows"] == clustered * per_pair
    unsupervised = [row for row in a["history"] if row["warmup"] == 0]
    assert [row["cluster_rows"] for row in unsupervised] == [clustered * per_pair] * 2
    assert all(row["clustered"] == clustered and row["samples"] == clustered for row in unsupervised)
    # every rank holds the pseudo-labels of every clustered pair, the ones computed on either rank
    assert len(a["pseudo_positions"]) == clustered and a["pseudo"].shape == (clustered, 28, 28)
    assert len(torch.unique(a["pseudo"])) > 2  # k-means clusters, not the warm-up's two classes
    assert a["extra"]["centroids"].shape == (20, 16)


def test_shards_cover_every_sample_with_equal_steps():
    positions = np.arange(11)
    shards = [Dist(rank=r, world=3).shard(positions) for r in range(3)]
    assert {len(s) for s in shards} == {4}
    assert set(np.concatenate(shards)) == set(range(11))
    assert Dist().shard(positions) is positions


def test_whole_batches_go_round_the_ranks_without_repeats():
    positions = np.arange(100, 111)  # 11 positions in batches of 3: [100-102] [103-105] [106-108] [109, 110]
    parts = [Dist(rank=r, world=3).batches(positions, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[100, 101, 102, 109, 110], [103, 104, 105], [106, 107, 108]]
    assert Dist(rank=4, world=5).batches(positions[:6], 3).size == 0  # more ranks than batches
    assert Dist().batches(positions, 3).tolist() == positions.tolist()


def test_ddp_outside_torchrun_is_a_clear_error(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(GeochangeError, match="torchrun"):
        setup(True, "cpu")
