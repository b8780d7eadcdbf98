"""CDCluster: DeepCluster for change detection with a supervised warm-up ("low supervision").

What the paper (``cdcluster-low-supervision.txt``) specifies, and how it is done here:

* **Input** (Sec. 2.1): RGB plus the Sobel magnitude, 4 channels per date. Other band counts: the Sobel
  magnitude of the mean of the first three bands (all bands when fewer), appended to every band.
* **Network** (Sec. 2.1, Fig. 1): two weight-shared encoders of three blocks (conv, BN, conv, max-pool)
  down to 1/4 resolution and 64 channels, subtracted (AFTER - BEFORE); at each block the difference of
  the two dates' features right after BN goes through CBAM (Woo et al., ECCV 2018: channel attention
  from the average- and max-pooled descriptors through one shared MLP, then spatial attention from a
  7x7 conv on the channel-wise average and max) into a skip connection of the decoder, which goes back
  to full resolution and 16 channels; a two-layer per-pixel MLP (1x1 convs) gives ``k`` outputs.
* **Pseudo-labels** (Sec. 2.2): FAISS k-means (``geochange.cluster.kmeans``: a GPU index when
  faiss-gpu sees a CUDA device, the CPU otherwise) on the 16-d per-pixel features, ``k = 20``,
  re-clustered every 5 epochs ("clustering halt") on a random 75 % of the samples; a cluster whose
  population drops below a threshold is refilled by splitting a random populous one
  (``geochange.cluster.refill_small_clusters``). Loss: categorical cross-entropy, Adam at lr 1e-3.
* **Schedule** (Sec. 2.3): a supervised warm-up on 30 % of the data drawn from the labelled pairs with
  at least 3 % changed pixels (``min_changed = 0``: from all labelled pairs, Table 2's plain columns),
  the targets being the labels themselves as classes 0 (unchanged) and 1 (changed) of the ``k``
  outputs; then the unsupervised phase on the pseudo-labels of all pairs.
* **Binary map** (Sec. 2.2: "the per-pixel maximum value has been taken and binarized"): the arg-max
  cluster of each pixel, binarised by a cluster -> change table. In the warm-up the table is {1}. At
  each clustering a cluster is "changed" when most of the labelled pixels of the warm-up pairs it
  holds are changed (a majority vote of the little ground truth the method has); a cluster without any
  such pixel follows the majority of the current binary map over its pixels.
  ``predict`` gives ``m_c / (m_c + m_u)`` with ``m_c`` / ``m_u`` the largest softmax output among
  the changed / unchanged clusters: it is >= 0.5 exactly where the arg-max cluster is a changed one,
  so the engine's 0.5 threshold reproduces the paper's map.
* **Initial Alignment** (Eq. 1): :func:`initial_alignment`, the adjusted NMI (scikit-learn's
  ``adjusted_mutual_info_score``, arithmetic normalisation) between the ground truth and the k-means
  pseudo-labels of the untrained network's features, per seed and ``k``.

Choices the paper leaves open, or where this implementation departs from it:

* Three pooling blocks would reach 1/8, not the paper's 64x64 from 256x256: the first two blocks pool
  2x2 and the third keeps its max-pool at stride 1 (3x3), so the encoder ends at 1/4 as the paper says.
  Pooling rounds up (``ceil_mode``) and the decoder upsamples (bilinear) to each skip's exact size, so
  any patch size works. Encoder widths (16, 32, 64), MLP hidden width 32, CBAM reduction 16 (at
  least one hidden unit): only 64 and 16 are given.
* Number of epochs, warm-up epochs and batch size are not given: ``epochs`` 30, ``warmup_epochs`` 10,
  ``batch_size`` 8. The refill threshold is not given: ``min_cluster_share`` (of the mean cluster
  population, 5 %).
* Clustering works on a sample of pixels (``cluster_points``; FAISS itself trains on at most 256 k of
  them), refilled, then every pixel of the sampled pairs is assigned to its nearest centroid in a
  second pass, so memory does not grow with the data. The unsupervised epochs train on those pairs.
* DeepCluster re-initialises its classifier after each clustering, as cluster ids are arbitrary. Here
  the MLP's output layer is re-initialised by fitting it (softmax regression) to the new pseudo-labels
  of the sampled pixels: with few steps per clustering a random layer's gradients wreck what the
  warm-up taught the backbone. The loss weighs each cluster by its inverse size (``balance``; DeepCluster
  samples images uniformly over clusters instead), so small changed clusters are not drowned.
* Features are clustered as the network computes them in training (BN on batch statistics), after
  the BN running averages were re-estimated for the current weights (``bn_samples`` pairs; "precise
  BN"): averages that lag behind a fast-learning network gave clusters that mixed the warm-up's classes.
* The cluster -> change table follows the network: during each unsupervised epoch, the labelled pixels
  of the warm-up pairs in its batches vote for the arg-max class they fall in.
* DeepCluster PCA-whitens and L2-normalises its features before the k-means; the paper does not say
  whether CDCluster does. ``whiten`` (off by default) does it on the 16-d features (every dimension
  kept; :func:`whitening`, :func:`embed_features`), the transform fitted with each clustering and kept
  with its centroids. Measured on planted changes (``benchmarks/bench_cdcluster_synthetic.py``, 32
  training pairs, seeds 0-5, held-out F1): after a 4-epoch warm-up, 6 unsupervised epochs reached
  0.747 on raw features and 0.627 whitened (cluster purity 0.86 / 0.79); after 12 warm-up epochs, 3
  unsupervised ones 0.955 raw, 0.857 whitened (purity 0.98 / 0.92).
* On those pairs the unsupervised phase raises the held-out F1 (0.30 -> 0.75 after a 4-epoch warm-up,
  0.92 -> 0.96 after 12), but through its clusterings of the warm-up's features (k-means, the refitted
  output layer, the vote), not its gradient steps: with their learning rate at 0, F1 was 0.86 and 0.98
  (docs/models.md).
* Pseudo-labels (uint8 per pixel) are not stored in checkpoints: a resumed run re-clusters at its
  first unsupervised epoch, so it does not end with exactly the uninterrupted run's weights.
* Under ``train --ddp`` (``geochange.train.distributed``) a clustering is split over the ranks: each
  extracts the features of its whole batches of the sample (the batches a single process forms, as BN
  uses batch statistics here), rank 0 gathers them, runs the k-means, the refill and the classifier
  refit, and broadcasts centroids, loss weights and the refitted layer; each rank then assigns its
  batches' pixels and the pseudo-labels and cluster votes are exchanged, so every rank trains on the
  same ones. The pixels sampled from a pair are drawn from a generator seeded by (clustering seed,
  pair), not from one stream, so the clustering does not depend on the number of ranks (>= 2); a single
  process keeps the one stream. The cluster -> change votes of an epoch are summed over the ranks
  before the next clustering and at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geochange.cluster import kmeans, refill_small_clusters
from geochange.errors import GeochangeError
from geochange.models.base import TrainableModel
from geochange.progress import warn
from geochange.train import distributed

UNKNOWN = 255


@dataclass
class CDClusterConfig:
    """Hyper-parameters of CDCluster (the paper's values where it gives one)."""

    k: int = 20                            # clusters = outputs of the MLP (Sec. 2.2, Fig. 3)
    epochs: int = 30                       # warm-up + unsupervised epochs (not given)
    warmup_epochs: int = 10                # supervised warm-up epochs (Sec. 2.3; number not given)
    warmup_fraction: float = 0.3           # share of the data in the warm-up (Sec. 2.3, Table 1)
    min_changed: float = 0.03              # warm-up draws pairs with >= 3 % changed pixels (Sec. 2.3); 0: any labelled
    recluster_every: int = 5               # "clustering halt" in epochs (Sec. 2.2)
    cluster_fraction: float = 0.75         # share of the pairs clustered (and trained on) each time (Sec. 2.2)
    min_cluster_share: float = 0.05        # refill clusters below this share of the mean population (not given)
    lr: float = 1e-3                       # Adam learning rate (Sec. 2.1)
    batch_size: int = 8                    # not given
    channels: tuple[int, ...] = (16, 32, 64)  # encoder blocks (Sec. 2.1 gives the last: 64)
    features: int = 16                     # decoder output, the clustered features (Sec. 2.1: 256x256x16)
    mlp_hidden: int = 32                   # hidden width of the two-layer MLP (not given)
    cbam_reduction: int = 16               # CBAM channel-MLP reduction r (Woo et al. 2018)
    cbam_kernel: int = 7                   # CBAM spatial conv (Woo et al. 2018)
    cluster_points: int = 65536            # pixels sampled per clustering for the centroid fit
    kmeans_niter: int = 20                 # FAISS k-means iterations
    balance: bool = True                   # weight the loss by inverse cluster size (DeepCluster's uniform sampling)
    bn_samples: int = 256                  # pairs whose batch statistics refresh BN before a clustering (not in the paper)
    warmup_balance: bool | None = None     # weigh warm-up loss and votes by inverse class size; None: with marks only
    prior_adjust: bool = False             # with a balanced warm-up: move the probability to the scene's prior (Saerens
    #                                        2002); off by bench_labels: mean kappa 0.382 off, 0.345 on (11 scenes)
    marks_patch: int = 64                  # detect --labels: side of the patches around marks and of cheap negatives
    marks_negatives: int = 96              # detect --labels: cheap negatives cropped from the scene
    whiten: bool = False                   # PCA-whiten + L2-normalise features before k-means (DeepCluster; off: measured)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel, then spatial attention; same shape."""

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = x * channel
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with the Sobel gradient magnitude of its first three bands' mean appended."""
    gray = x[:, :3].mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.cat([x, torch.sqrt((grad ** 2).sum(dim=1, keepdim=True) + 1e-6)], dim=1)


class _EncoderBlock(nn.Module):
    """conv, BN (the skip is tapped here), ReLU, conv, ReLU, max-pool."""

    def __init__(self, cin: int, cout: int, pool: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tap = self.bn(self.conv1(x))
        return self.pool(F.relu(self.conv2(F.relu(tap)))), tap


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CDClusterNet(nn.Module):
    """Siamese encoder, CBAM skips of the feature differences, decoder to ``features`` channels, MLP to ``k``.

    ``forward(before, after)`` takes (N, C, H, W) dates *with* their Sobel channel and returns the
    per-pixel features (N, features, H, W) and the cluster logits (N, k, H, W).
    """

    def __init__(self, in_channels: int, config: CDClusterConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        pools = [nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(3, 1, padding=1)]
        self.blocks = nn.ModuleList(_EncoderBlock(cin, cout, pool)
                                    for cin, cout, pool in zip((in_channels, c1, c2), (c1, c2, c3), pools))
        self.attention = nn.ModuleList(CBAM(c, config.cbam_reduction, config.cbam_kernel) for c in (c1, c2, c3))
        self.up3 = _conv_bn_relu(2 * c3, c3)
        self.up2 = _conv_bn_relu(c3 + c2, c2)
        self.up1 = _conv_bn_relu(c2 + c1, config.features)
        self.mlp = nn.Sequential(nn.Conv2d(config.features, config.mlp_hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(config.mlp_hidden, config.k, 1))

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = before.shape[0]
        x = torch.cat([before, after])  # one pass: shared weights and shared batch statistics
        skips = []
        for block, attend in zip(self.blocks, self.attention):
            x, tap = block(x)
            skips.append(attend(tap[n:] - tap[:n]))
        s1, s2, s3 = skips
        d = self.up3(torch.cat([x[n:] - x[:n], s3], dim=1))
        d = F.interpolate(d, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        d = self.up2(torch.cat([d, s2], dim=1))
        d = F.interpolate(d, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        features = self.up1(torch.cat([d, s1], dim=1))
        return features, self.mlp(features)


def _batch_norms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batch_statistics(net: nn.Module):
    """Make ``net``'s BN layers normalise by the batch's statistics, as in training, without touching
    their running averages (momentum 0); returns the function that undoes it."""
    saved = [(m, m.training, m.momentum) for m in _batch_norms(net)]
    for m, _, _ in saved:
        m.train()
        m.momentum = 0.0

    def restore() -> None:
        for m, training, momentum in saved:
            m.train(training)
            m.momentum = momentum

    return restore


def change_probability(logits: torch.Tensor, change_clusters: list[int]) -> torch.Tensor:
    """``m_c / (m_c + m_u)`` from (N, k, H, W) logits: >= 0.5 exactly where the arg-max cluster is changed."""
    k = logits.shape[1]
    is_change = torch.zeros(k, dtype=torch.bool, device=logits.device)
    is_change[[c for c in change_clusters if 0 <= c < k]] = True
    if not is_change.any():
        return torch.zeros_like(logits[:, 0])
    if is_change.all():
        return torch.ones_like(logits[:, 0])
    prob = torch.softmax(logits.float(), dim=1)
    m_c = prob[:, is_change].amax(dim=1)
    m_u = prob[:, ~is_change].amax(dim=1)
    return m_c / (m_c + m_u)


def whitening(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening fitted on the rows of ``x`` (n, d): ``(mean (d,), matrix (d, d))`` such that
    ``(x - mean) @ matrix`` has identity covariance (DeepCluster's faiss ``PCAMatrix`` with eigen power
    -1/2, keeping every dimension). A direction whose variance is below ``eps`` times the largest is
    scaled as if it had that variance, so that noise in a dead direction is not blown up."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.atleast_2d(np.cov(x - mean, rowvar=False)))
    vals = np.maximum(vals, eps * max(float(vals.max()), 0.0) + 1e-12)
    return mean.astype(np.float32), (vecs / np.sqrt(vals)).astype(np.float32)


def embed_features(features: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(N, d, H, W) features whitened (``(f - mean) @ matrix``) and L2-normalised per pixel, as DeepCluster
    feeds its k-means."""
    w = torch.einsum("ndhw,de->nehw", features.float() - mean[None, :, None, None], matrix)
    return F.normalize(w, dim=1)


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, d, H, W) features -> (N, H, W) index of the nearest centroid (squared Euclidean), on their device."""
    f = features.float()
    dist = (centroids ** 2).sum(dim=1)[None, :, None, None] - 2 * torch.einsum("ndhw,kd->nkhw", f, centroids)
    return dist.argmin(dim=1)


def cluster_change_table(votes: np.ndarray, predicted: np.ndarray, scale: np.ndarray | None = None) -> list[int]:
    """Clusters called changed: by the majority of their labelled warm-up pixels (``votes`` (k, 2):
    unchanged, changed counts; each column times ``scale`` (2,) when given: balanced votes), or, for a
    cluster without any, by the majority of the current binary map over its pixels (``predicted`` (k, 2):
    pixels mapped unchanged, changed)."""
    out = []
    for c in range(votes.shape[0]):
        v = (votes[c] * (1 if scale is None else scale)) if votes[c].sum() > 0 else predicted[c]
        if v[1] > v[0]:
            out.append(c)
    return out


class CDCluster(TrainableModel):
    """CDCluster (see the module docstring): warm-up on labels, then FAISS k-means pseudo-labels."""

    name = "cdcluster"
    config_class = CDClusterConfig

    def __init__(self, config: CDClusterConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or CDClusterConfig(), device)
        self.change_clusters: list[int] = [1]        # the warm-up's targets: class 1 is "changed"
        self.centroids: np.ndarray | None = None      # (k, features) of the last clustering
        self.whitener: tuple[np.ndarray, np.ndarray] | None = None  # (mean, matrix) of the last clustering (whiten)
        self.warmup_positions: np.ndarray | None = None
        self.pseudo: dict[int, np.ndarray] = {}       # position -> (H, W) uint8 pseudo-labels
        self.class_weights: np.ndarray | None = None  # (k,) loss weights of the pseudo-labels
        self._votes = np.zeros((self.config.k, 2), np.int64)  # this epoch's warm-up pixels per arg-max class
        self._calls_at_start: list[int] = [1]
        self._voting = False                          # an unsupervised epoch's votes are not yet summed over ranks
        self._warm = torch.zeros(0, dtype=torch.int64)
        self._warmup_weight: torch.Tensor | None = None  # (k,) warm-up loss weights when balanced
        self._pixel_counts: np.ndarray | None = None      # labelled (unchanged, changed) warm-up pixels
        self.scene_prior: float | None = None             # the scene's share of change (prior_adjust), or None
        #: what the last clustering did: ``pairs`` clustered, ``rows_here`` (pixel features this process
        #: extracted), ``rows`` (pixel features the k-means ran on: every rank's, gathered on rank 0)
        self.clustering: dict = {}

    # -- network -------------------------------------------------------------------------------------
    def build(self, in_bands: int) -> None:
        cfg = self.config
        if not 2 <= cfg.k <= 255:
            raise GeochangeError(f"cdcluster: k must be between 2 and 255, not {cfg.k}")
        if len(cfg.channels) != 3:
            raise GeochangeError(f"cdcluster: channels must give the three encoder blocks, not {cfg.channels}")
        if not (0 < cfg.warmup_fraction <= 1 and 0 < cfg.cluster_fraction <= 1 and cfg.recluster_every >= 1):
            raise GeochangeError("cdcluster: warmup_fraction and cluster_fraction must be in (0, 1], "
                                 "recluster_every >= 1")
        self.in_bands = int(in_bands)
        self.net = CDClusterNet(self.in_bands + 1, cfg)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and logits of standardised dates (the Sobel channel is added here)."""
        return self.net(sobel_magnitude(before), sobel_magnitude(after))

    def _warmup(self, epoch: int) -> bool:
        return epoch < self.config.warmup_epochs

    # -- trainer hooks ---------------------------------------------------------------------------------
    def select(self, epoch: int, index, rng: np.random.Generator) -> np.ndarray | None:
        if not self._warmup(epoch):
            return np.array(sorted(self.pseudo), dtype=np.int64)
        if self.warmup_positions is None:
            self.warmup_positions = warmup_sample(index, self.config.warmup_fraction, self.config.min_changed, rng)
        return self.warmup_positions

    def start_epoch(self, epoch: int, data) -> dict:
        self._settle_votes(distributed.context(data))
        if self._warmup(epoch):
            return {"warmup": 1}
        logged = {"warmup": 0}
        if self.warmup_positions is None:  # no warm-up at all: no labels to vote with
            self.warmup_positions = np.zeros(0, np.int64)
        if not self.pseudo or (epoch - self.config.warmup_epochs) % self.config.recluster_every == 0:
            logged.update(self.recluster(data))
        self._calls_at_start = list(self.change_clusters)
        self._votes = np.zeros((self.config.k, 2), np.int64)
        self._voting = True
        self._warm = torch.as_tensor(self.warmup_positions, dtype=torch.int64, device=data.device)
        return logged

    def finish(self, data) -> dict:
        self._settle_votes(distributed.context(data))
        return {}

    def training_step(self, batch: dict, epoch: int) -> dict:
        _, logits = self.forward(batch["before"], batch["after"])
        if self._warmup(epoch):
            target = batch["label"]
            if not (target != UNKNOWN).any():
                loss = logits.sum() * 0.0
            else:
                weight = None if self._warmup_weight is None else self._warmup_weight.to(logits.device)
                loss = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=UNKNOWN)
        else:
            target = torch.as_tensor(np.stack([self.pseudo[int(p)] for p in batch["position"].tolist()]),
                                     device=logits.device).long()
            weight = (torch.as_tensor(self.class_weights, dtype=torch.float32, device=logits.device)
                      if self.class_weights is not None else None)
            loss = F.cross_entropy(logits.float(), target, weight=weight)
            self._vote(logits, batch)
        with torch.no_grad():
            changed = (change_probability(logits, self.change_clusters) >= 0.5).float().mean()
        return {"loss": loss, "changed_share": changed}

    @torch.no_grad()
    def _vote(self, logits: torch.Tensor, batch: dict) -> None:
        """Keep the cluster -> change table in step with the network: the labelled pixels of the warm-up
        pairs in this epoch's batches vote for the arg-max class they fall in (a class without any vote
        this epoch keeps its call from the start of the epoch)."""
        k = self.config.k
        label = batch["label"]
        sel = torch.isin(batch["position"], self._warm)[:, None, None] & (label != UNKNOWN)
        if not sel.any():
            return
        idx = logits.argmax(dim=1)[sel] * 2 + label[sel]
        self._votes += torch.bincount(idx, minlength=2 * k).reshape(k, 2).cpu().numpy()
        self.change_clusters = cluster_change_table(self._votes, self._start_table(), self._vote_scale())

    def _start_table(self) -> np.ndarray:
        """The epoch's starting calls as a (k, 2) vote table (one vote each) for clusters without votes."""
        before = np.zeros((self.config.k, 2), np.int64)
        before[:, 0] = 1
        before[self._calls_at_start] = (0, 1)
        return before

    def _settle_votes(self, ctx: distributed.Dist) -> None:
        """Under DDP each rank votes on its own batches: after an unsupervised epoch every rank takes
        the table of the votes of all ranks (a single process already has it)."""
        if self._voting and ctx.world > 1:
            votes = sum(distributed.gather_all(self._votes, ctx))
            self.change_clusters = cluster_change_table(votes, self._start_table(), self._vote_scale())
        self._voting = False

    # -- clustering ----------------------------------------------------------------------------------
    @torch.no_grad()
    def recluster(self, data) -> dict:
        """New pseudo-labels for a random ``cluster_fraction`` of ``data`` (a TrainData): sample pixel
        features, FAISS k-means, refill small clusters, assign every pixel, match ids to the network's
        classes, rebuild the cluster -> change table. Returns scalars to log."""
        cfg = self.config
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # the trainer seeds torch per (seed, epoch)
        rng = np.random.default_rng(seed)
        n = len(data)
        positions = np.sort(rng.choice(n, max(1, round(cfg.cluster_fraction * n)), replace=False))
        was_training = self.net.training
        self.refresh_batchnorm(data, positions[:cfg.bn_samples])
        restore = _batch_statistics(self.net)
        try:
            return self._recluster(data, positions, rng, seed)
        finally:
            restore()
            self.net.train(was_training)

    def _recluster(self, data, positions: np.ndarray, rng: np.random.Generator, seed: int) -> dict:
        cfg = self.config
        ctx = distributed.context(data)
        mine = ctx.batches(positions, cfg.batch_size)  # all of them in a single process
        per_sample = max(1, math.ceil(cfg.cluster_points / len(positions)))
        feats, hidden, owner = self._sample_features(data, mine, per_sample, _pixel_draws(rng, seed, ctx, 0))
        self.clustering = {"pairs": len(positions), "pairs_here": len(mine), "rows_here": len(feats)}
        x, hidden, owner = (distributed.gather(a, ctx) for a in (feats, hidden, owner))
        fitted = None
        if ctx.main:
            order = np.argsort(owner, kind="stable")  # rows in pair order, as one process extracts them
            try:
                fitted = self._fit_clusters(x[order], hidden[order], rng, seed, data.device)
            except GeochangeError as exc:  # raised on every rank below, none left waiting
                fitted = {"error": str(exc)}
        fitted = distributed.broadcast(fitted, ctx)
        if "error" in fitted:
            raise GeochangeError(fitted["error"])
        self.centroids, self.class_weights = fitted["centroids"], fitted["class_weights"]
        self.whitener = fitted["whitener"]
        layer = self.net.mlp[2]
        layer.weight.copy_(torch.as_tensor(fitted["weight"], device=layer.weight.device)[:, :, None, None])
        layer.bias.copy_(torch.as_tensor(fitted["bias"], device=layer.bias.device))
        self.clustering["rows"] = fitted["rows"]

        pseudo, votes, mapped, truth, label = self._assign(data, mine, per_sample, _pixel_draws(rng, seed, ctx, 1))
        parts = distributed.gather_all((pseudo, votes, mapped), ctx)
        self.pseudo = pseudo if ctx.world == 1 else {p: lab for part in parts for p, lab in part[0].items()}
        votes, mapped = sum(part[1] for part in parts), sum(part[2] for part in parts)
        truth, label = distributed.gather(truth, ctx), distributed.gather(label, ctx)
        self.change_clusters = cluster_change_table(votes, mapped, self._vote_scale())
        logged = None
        if ctx.main:
            if not votes.any() and self.warmup_positions is not None and len(self.warmup_positions):
                warn("cdcluster: no labelled warm-up pixel among the clustered pairs; clusters follow the current map")
            logged = {"clustered": len(positions), "cluster_rows": fitted["rows"], "kmeans_s": fitted["seconds"],
                      "splits": fitted["splits"], "change_clusters": len(self.change_clusters)}
            if len(truth):
                from sklearn.metrics import adjusted_mutual_info_score

                logged["ami_truth"] = float(adjusted_mutual_info_score(truth, label))
        return distributed.broadcast(logged, ctx)

    def _sample_features(self, data, positions: np.ndarray, per_sample: int, draw
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``per_sample`` random pixels of each pair at ``positions`` (``draw(position)``: the
        generator to draw them with): their features (n, features), MLP hidden activations (n, hidden)
        and pair position (n,)."""
        feats, hidden, owner = [], [], []
        for batch in data.batches(positions, self.config.batch_size):
            f, _ = self.forward(batch["before"], batch["after"])
            h = self.net.mlp[1](self.net.mlp[0](f))
            for pos, fi, hi in zip(batch["position"].tolist(), f, h):
                pick = torch.as_tensor(draw(pos).choice(fi[0].numel(), min(per_sample, fi[0].numel()), replace=False),
                                       device=fi.device)
                feats.append(fi.flatten(1)[:, pick].t().float().cpu().numpy())
                hidden.append(hi.flatten(1)[:, pick].t().float().cpu().numpy())
                owner.append(np.full(len(pick), pos, np.int64))
        if not feats:  # a rank without a batch (fewer batches than ranks)
            return (np.zeros((0, self.config.features), np.float32), np.zeros((0, self.config.mlp_hidden), np.float32),
                    np.zeros(0, np.int64))
        return np.concatenate(feats), np.concatenate(hidden), np.concatenate(owner)

    def _fit_clusters(self, x: np.ndarray, hidden: np.ndarray, rng: np.random.Generator, seed: int,
                      device: str) -> dict:
        """FAISS k-means of the sampled features, refill, loss weights, classifier refit (rank 0 only)."""
        cfg = self.config
        if x.shape[0] < cfg.k:
            raise GeochangeError(f"cdcluster: {x.shape[0]} sampled pixels cannot make k = {cfg.k} clusters, needs at "
                                 f"least {cfg.k}; add pairs, raise -p cluster_points or lower -p k")
        whitener = None
        if cfg.whiten:  # DeepCluster: PCA-whitened, L2-normalised features
            whitener = whitening(x)
            x = embed_features(torch.as_tensor(x)[:, :, None, None], *map(torch.as_tensor, whitener))[:, :, 0, 0].numpy()
        t0 = time.perf_counter()
        centroids, labels = kmeans(x, cfg.k, seed=seed, niter=cfg.kmeans_niter)
        seconds = time.perf_counter() - t0
        min_size = math.ceil(cfg.min_cluster_share * x.shape[0] / cfg.k)
        refilled, labels, splits = refill_small_clusters(x, labels, cfg.k, min_size, rng)
        sizes = np.bincount(labels, minlength=cfg.k).astype(np.float64)
        weights = (sizes.sum() / (cfg.k * np.maximum(sizes, 1.0))).astype(np.float32) if cfg.balance else None
        w, b = self._refit_classifier(torch.as_tensor(hidden, device=device), torch.as_tensor(labels, device=device),
                                      weights)
        return {"centroids": refilled if splits else centroids, "class_weights": weights, "weight": w, "bias": b,
                "whitener": whitener,
                "rows": int(x.shape[0]), "seconds": seconds, "splits": splits}

    def _assign(self, data, positions: np.ndarray, per_sample: int, draw) -> tuple:
        """Every pixel of the pairs at ``positions`` to its nearest centroid: pseudo-labels (position ->
        (H, W) uint8), the votes of the labelled warm-up pixels and the current map's calls per cluster
        (both (k, 2)), and a sample of (truth, cluster) of labelled pixels for the logged AMI."""
        cfg = self.config
        cent = torch.as_tensor(self.centroids, device=data.device)
        whitener = (None if self.whitener is None else
                    tuple(torch.as_tensor(a, device=data.device) for a in self.whitener))
        is_change = torch.zeros(cfg.k, dtype=torch.int64, device=data.device)
        is_change[[c for c in self.change_clusters if c < cfg.k]] = 1
        votes = np.zeros((cfg.k, 2), np.int64)      # labelled warm-up pixels per cluster: unchanged, changed
        mapped = np.zeros((cfg.k, 2), np.int64)     # pixels per cluster the current map calls unchanged, changed
        warm = set(self.warmup_positions.tolist()) if self.warmup_positions is not None else set()
        truth_sample, label_sample = [np.zeros(0, np.int64)], [np.zeros(0, np.uint8)]
        pseudo = {}
        for batch in data.batches(positions, cfg.batch_size):
            f, logits = self.forward(batch["before"], batch["after"])
            assigned = nearest_centroid(f if whitener is None else embed_features(f, *whitener), cent)
            mapped += torch.bincount((assigned * 2 + is_change[logits.argmax(dim=1)]).flatten(),
                                     minlength=2 * cfg.k).reshape(cfg.k, 2).cpu().numpy()
            for pos, lab, truth in zip(batch["position"].tolist(), assigned.cpu().numpy().astype(np.uint8),
                                       batch["label"].cpu().numpy()):
                pseudo[int(pos)] = lab
                known = truth != UNKNOWN
                if pos in warm:
                    votes += np.stack([np.bincount(lab[known & (truth == v)], minlength=cfg.k) for v in (0, 1)], 1)
                if known.any():  # a diagnostic only (logged): how well clusters and truth agree
                    idx = draw(pos).choice(np.flatnonzero(known.ravel()), min(per_sample, int(known.sum())),
                                           replace=False)
                    truth_sample.append(truth.ravel()[idx])
                    label_sample.append(lab.ravel()[idx])
        return pseudo, votes, mapped, np.concatenate(truth_sample), np.concatenate(label_sample)

    @torch.enable_grad()
    def _refit_classifier(self, hidden: torch.Tensor, labels: torch.Tensor, class_weights: np.ndarray | None,
                          steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """A new MLP output layer (weight (k, hidden), bias (k,)) for the new pseudo-labels: DeepCluster
        re-initialises it at random after each clustering, as cluster ids are arbitrary; here it is
        fitted (softmax regression on the sampled pixels' hidden activations, Adam, full batch) so that
        the first batches do not push a random layer's gradients into the backbone."""
        layer = self.net.mlp[2]
        w = torch.zeros_like(layer.weight[:, :, 0, 0], requires_grad=True)
        b = torch.zeros_like(layer.bias, requires_grad=True)
        weight = torch.as_tensor(class_weights, device=hidden.device) if class_weights is not None else None
        opt = torch.optim.Adam([w, b], lr=0.1)
        hidden = hidden.detach()
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(hidden @ w.t() + b, labels, weight=weight).backward()
            opt.step()
        return w.detach().cpu().numpy(), b.detach().cpu().numpy()

    @torch.no_grad()
    def refresh_batchnorm(self, data, positions: np.ndarray) -> None:
        """Re-estimate every BN layer's running statistics for the current weights ("precise BN", Wu &
        Johnson 2021): the exponential averages lag far behind a network that learns fast, and features
        computed with stale statistics cluster badly. A pass over ``positions`` in training mode with a
        cumulative average (``momentum=None``)."""
        norms = _batch_norms(self.net)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.net.train()
        try:
            for batch in data.batches(positions, self.config.batch_size):
                self.forward(batch["before"], batch["after"])
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum

    # -- learning from marks ---------------------------------------------------------------------------
    def fit_marks(self, scene, seed: int = 0, options=None) -> dict:
        """``detect --labels``: the marks (and the scene's cheap negatives, labelled unchanged) are the
        warm-up's labelled pairs (Sec. 2.3), all of them; the unsupervised phase then clusters the same
        pairs. A handful of changed pixels against a scene of unchanged ones: the warm-up loss and the
        cluster votes weigh each class by the inverse of its pixel count (``warmup_balance``)."""
        import dataclasses

        from geochange.train.marks import marks_options
        from geochange.train.trainer import train

        items = scene.items()
        self.warmup_positions = np.arange(len(items), dtype=np.int64)
        if self.config.warmup_balance is None:
            self.config = dataclasses.replace(self.config, warmup_balance=True)
        self._set_warmup_weight(items)
        self.scene_prior = None
        summary = train(self, items, marks_options(options, self.device, seed))
        if self.config.warmup_balance and self.config.prior_adjust and scene.negatives:
            self.scene_prior = self._estimate_prior(scene.negatives)
        return summary

    def _estimate_prior(self, negatives) -> float:
        """The share of change in the scene (Saerens et al. 2002 EM) from the balanced model's probability
        over the cheap negatives: random crops of the scene, so a fair sample of it."""
        from geochange.threshold import estimate_prior

        b = np.stack([it["before"] for it in negatives]).astype(np.float32)
        a = np.stack([it["after"] for it in negatives]).astype(np.float32)
        p = self._balanced_probability(b, a)
        return estimate_prior(p.ravel())

    def _set_warmup_weight(self, items) -> None:
        """Loss weights of the warm-up classes 0 and 1 (the inverse of their labelled pixel counts,
        averaging 1), when ``warmup_balance``; the other classes are never warm-up targets."""
        if not self.config.warmup_balance:
            self._warmup_weight = None
            return
        counts = self._class_counts(items)
        w = torch.ones(self.config.k)
        w[:2] = torch.as_tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
        self._warmup_weight = w
        self._pixel_counts = counts

    @staticmethod
    def _class_counts(items) -> np.ndarray:
        labels = [np.asarray(items[i]["label"]) for i in range(len(items))]
        return np.array([sum(int((x == v).sum()) for x in labels) for v in (0, 1)], np.float64)

    def _vote_scale(self) -> np.ndarray | None:
        """(2,) factors that make the votes of the two classes count equally (balanced warm-up), or None."""
        counts = self._pixel_counts
        if not self.config.warmup_balance or counts is None:
            return None
        return counts.sum() / (2 * np.maximum(counts, 1))

    # -- state and inference -------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"change_clusters": [int(c) for c in self.change_clusters],
                "centroids": torch.as_tensor(self.centroids) if self.centroids is not None else None,
                "whitener": [torch.as_tensor(a) for a in self.whitener] if self.whitener is not None else None,
                "warmup_positions": (self.warmup_positions.tolist() if self.warmup_positions is not None else None),
                "scene_prior": self.scene_prior}

    def load_extra_state(self, state: dict) -> None:
        self.change_clusters = [int(c) for c in state.get("change_clusters", [1])]
        cent = state.get("centroids")
        self.centroids = cent.numpy() if cent is not None else None
        whitener = state.get("whitener")
        self.whitener = tuple(a.numpy() for a in whitener) if whitener is not None else None
        warm = state.get("warmup_positions")
        self.warmup_positions = np.asarray(warm, np.int64) if warm is not None else None
        prior = state.get("scene_prior")
        self.scene_prior = float(prior) if prior is not None else None

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change probability ``m_c / (m_c + m_u)`` (see :func:`change_probability`); after a balanced
        warm-up on marks, moved to the scene's share of change (:func:`~geochange.threshold.adjust_to_prior`)."""
        p = self._balanced_probability(before, after)
        if self.scene_prior is None:
            return p
        from geochange.threshold import adjust_to_prior

        return adjust_to_prior(p, self.scene_prior)

    def params(self) -> dict:
        return {**super().params(), "change_clusters": list(self.change_clusters), "scene_prior": self.scene_prior}

    def _balanced_probability(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """``m_c / (m_c + m_u)`` (see :func:`change_probability`), in chunks of a batch."""
        self.net.eval()
        out = np.empty((before.shape[0],) + before.shape[2:], np.float32)
        step = max(1, int(self.config.batch_size))
        with torch.no_grad():
            for i in range(0, before.shape[0], step):
                b = torch.as_tensor(np.ascontiguousarray(before[i:i + step]), device=self.device)
                a = torch.as_tensor(np.ascontiguousarray(after[i:i + step]), device=self.device)
                _, logits = self.forward(b, a)
                out[i:i + step] = change_probability(logits, self.change_clusters).cpu().numpy()
        return out


def _pixel_draws(rng: np.random.Generator, seed: int, ctx: distributed.Dist, stream: int):
    """``position -> generator`` for a clustering's pixel draws: the one stream ``rng`` in a single process
    (pairs come in order); under DDP one generator per (seed, stream, pair), whichever rank holds it."""
    if ctx.world == 1:
        return lambda position: rng
    return lambda position: np.random.default_rng([seed, stream, int(position)])


def warmup_sample(index, fraction: float, min_changed: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of the warm-up pairs (Sec. 2.3): ``round(fraction * len(index))`` (at least one) drawn
    from the labelled pairs, only from those with at least ``min_changed`` changed pixels when > 0."""
    labelled = index["label"].to_numpy() >= 0
    changed = np.nan_to_num(index["changed_fraction"].to_numpy(dtype=float))
    n_labelled = int(labelled.sum())
    if min_changed > 0:
        labelled &= changed >= min_changed
    pool = np.flatnonzero(labelled)
    if pool.size == 0:
        what = f" with >= {min_changed:.0%} changed pixels" if min_changed > 0 else ""
        raise GeochangeError(f"cdcluster: 0 labelled pairs{what} for the warm-up (of {n_labelled} labelled, "
                             f"{len(index)} in all), needs at least 1; add labelled pairs with change (-p min_changed=0 "
                             "samples any labelled pair; -p warmup_epochs=0 skips the warm-up)")
    wanted = max(1, round(fraction * len(index)))
    if pool.size < wanted:
        warn(f"cdcluster: warm-up wants {wanted} pairs, only {pool.size} qualify; using them all")
    picked = np.sort(rng.choice(pool, min(wanted, pool.size), replace=False)).astype(np.int64)
    # the warm-up's targets are its pixels' labels, and its pixels later decide which clusters are change:
    # without a changed (or an unchanged) pixel among them the map would silently hold one class
    for name, present in (("changed", changed[picked] > 0), ("unchanged", changed[picked] < 1)):
        if not present.any():
            raise GeochangeError(f"cdcluster: the {len(picked)} warm-up pair{'s' if len(picked) != 1 else ''} hold no "
                                 f"{name} pixel, needs at least 1 pair with {name} pixels to learn the class from; add "
                                 f"labelled pairs with {name} pixels (or raise -p warmup_fraction)")
    return picked


def initial_alignment(data, seeds, ks, *, config: CDClusterConfig | None = None, max_pixels: int = 200_000,
                      device: str = "cpu", split: str | None = "train", standardize: bool = True):
    """Initial Alignment (Eq. 1) of the untrained network: ``IA(k, seed)`` = adjusted NMI between the
    ground truth and the k-means pseudo-labels of the features of a network initialised with ``seed``.

    ``data`` is what the trainer takes (a dataset folder or item dicts); the labelled pixels are
    sampled (at most ``max_pixels``, the same pixels for every seed). Returns a pandas DataFrame with
    columns ``seed``, ``k``, ``ia``, one row per (seed, k).
    """
    import pandas as pd
    from sklearn.metrics import adjusted_mutual_info_score

    from geochange.device import resolve_device, torch_threads
    from geochange.train.data import TrainData, open_training_data

    cfg = config or CDClusterConfig()
    device = resolve_device(device)
    tdata = TrainData(open_training_data(data, split), standardize, device)
    known = [int((np.asarray(tdata.items[i]["label"]) != UNKNOWN).sum()) for i in range(len(tdata))]
    if sum(known) == 0:
        raise GeochangeError("initial alignment needs ground truth: the data has no labelled pixel")
    per_sample = max(1, math.ceil(max_pixels / max(1, sum(1 for k in known if k))))
    rows = []
    with torch_threads(1, device):
        for seed in seeds:
            torch.manual_seed(int(seed))
            model = CDCluster(cfg, device)
            model.build(tdata.in_bands)
            model.net.to(device).eval()
            rng = np.random.default_rng(0)  # the same pixels for every seed
            feats, truth = [], []
            with torch.no_grad():
                for batch in tdata.batches(batch_size=cfg.batch_size):
                    f, _ = model.forward(batch["before"], batch["after"])
                    f = f.permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1]).cpu().numpy()
                    for row, lab in zip(f, batch["label"].cpu().numpy().reshape(f.shape[0], -1)):
                        idx = np.flatnonzero(lab != UNKNOWN)
                        idx = rng.choice(idx, min(per_sample, idx.size), replace=False)
                        feats.append(row[idx])
                        truth.append(lab[idx])
            x, t = np.concatenate(feats), np.concatenate(truth)
            for k in ks:
                _, labels = kmeans(x, int(k), seed=int(seed), niter=cfg.kmeans_niter)
                rows.append({"seed": int(seed), "k": int(k), "ia": float(adjusted_mutual_info_score(t, labels))})
    return pd.DataFrame(rows, columns=["seed", "k", "ia"])
