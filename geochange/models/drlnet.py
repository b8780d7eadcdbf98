"""DRLnet: difference representation learning with recurrent clustering (Zhang et al., IJCAI 2017).

Fully unsupervised and fitted on the scene itself. What the paper specifies, and how it is done here:

* **Unit of analysis** (Sec. 4.2): SLIC superpixels of each date, intersected into one finer
  segmentation; each superpixel is represented by the ``w x w`` window (w = 3) of both dates at its
  centre. ``fit`` runs this on every sampled scene window and pools the superpixel samples of all
  windows (capped at ``max_samples``), so the over-clustering, the GGKI thresholds and the k-means
  centres are fitted on a sample of the whole scene.
* **Network** (Sec. 3.1, Fig. 1): a feature extractor maps each date's patch to ``h^1``, ``h^2``; a
  merging layer on ``[h^1, h^2]``; the layers after it give the difference representation
  ``d(x)``; a classifier ``f(x)`` sits on ``d(x)`` (so ``f`` and ``d`` share all layers but the
  last). Fully connected sigmoid layers, as in the deeplearn-toolbox the paper was built with.
* **Loss** (Eq. 1/4): ``1/n sum ||f(x_i) - s^{t-1}_i||^2 + alpha 1/n sum lambda_i ||d(x_i) - M s^t_i||^2``
  plus the toolbox's sparse-activation penalty ``beta * sum_j KL(rho || rho_hat_j)`` on every hidden
  layer (``rho = 0.05``). ``lambda_i`` (Eq. 2) is 1 where ``||h^1_i - h^2_i||`` exceeds the GGKI
  threshold (geochange.threshold) fitted on all samples. Optional, off by default (not in the paper,
  see below): a separation term ``gamma * 1/n sum [(1 - lambda_i) ||h^1_i - h^2_i||^2 + lambda_i max(0, m -
  ||h^1_i - h^2_i||)^2]`` in each timestep, ``m`` = the timestep's GGKI threshold.
* **Algorithm 1** per mini-batch: an SGD step on theta (Eq. 7), nearest-centre assignment of the
  batch's changed samples (Eq. 8), online centre update with step ``1/count`` (Eq. 9).
* **Algorithm 2**: over-cluster the stacked raw patches into ``K0`` classes (FAISS k-means) for the
  first pseudo-labels ``s^0``; pre-train; then for each ``K_t`` of the schedule (25 -> 15 -> 8 -> 5):
  lambda by GGKI on the learned features, ``1 + K_t`` centres (all unchanged samples share label 0
  and one centre, the changed ones are k-means-clustered into ``K_t``), Algorithm 1, and the
  reassignment of step 7 (k-means on the fine-tuned DRs of the changed samples).
* **Outputs**: the change intensity ``CI = ||h^1 - h^2||`` of the final features, thresholded by
  a GGKI fitted on the training samples at the end of ``fit``; ``predict`` returns a probability
  that ranks as CI does (0.5 at the threshold, never saturating, like cva's); ``predict_types`` the change-type map:
  0 unchanged, ``1..K_T`` the nearest of the final changed centres in DR space. For the engine
  (``n_types = K_T``), ``predict_with_types`` gives the probability and every pixel's type if changed.

Paper defaults are the defaults: w = 3, lr 0.005, momentum 0.5, batch 10, sparsity target 0.05,
alpha = 0.1, schedule (25, 15, 8, 5) with its first entry ``K0``, variant ``DRLnet2`` (every layer
fine-tuned; ``DRLnet1`` fine-tunes only the layers after the merging layer).

Choices the paper leaves open, or where this implementation departs from it:

* Layer sizes (Fig. 1 gives none in the text): ``extractor_sizes``, ``merge_size``, ``dr_sizes``.
  The extractor's weights are shared by both dates (siamese), since Eq. 2 compares ``h^1`` and
  ``h^2`` as points of one feature space. Weights use the toolbox's sigmoid initialisation
  ``U(+-4 sqrt(6 / (fan_in + fan_out)))``, biases 0.
* Input scaling is not given. The toolbox's sigmoid nets (and its examples) take inputs in [0, 1];
  fed the engine's standardised bands instead, the toolbox initialisation (weights up to
  ``4 sqrt(6 / (fan_in + fan_out))``, about 1 for the first layer) drives the extractor's units
  into saturation and ``||h1 - h2||`` ranks changed pixels barely better than chance (OSCD bercy:
  AUC 0.52 against cva's 0.77; ``bench_drlnet.py --quality``). ``input_scale="unit"`` (default)
  maps each band to [0, 1] by the minimum and maximum of the pooled training patches of both dates
  (``input_percentile`` > 0 uses those percentiles instead; values outside are not clipped), the
  same map for both dates and at prediction; ``input_scale="none"`` feeds the standardised values.
* The sparsity weight ``beta`` is not given (the toolbox's default is 0, "off"; its default target
  is the paper's 0.05): ``sparsity_weight`` = 0.001. Larger weights (0.01, 0.1) squeeze the
  extractor's units toward 0.05 and visibly weakened the change intensity on synthetic scenes.
  ``rho_hat`` is the batch mean of each unit (the toolbox keeps a running mean instead).
* Number of epochs of pre-training and of Algorithm 1 per stage are not given: ``pretrain_epochs``,
  ``stage_epochs``. The pre-training optimises the classification (+ sparsity) loss only. With the
  paper's lr, sigmoid units and squared error, learning is slow: over 20 epochs the classification
  term on the K0 over-clustering classes mostly learns the class prior, so the change intensity
  rests largely on the siamese extractor near its initialisation (on synthetic scenes a 20x larger
  lr did fit the pseudo-labels, but saturated units then made the CI histogram spiky and GGKI
  failed). The loss is summed over outputs and averaged over the batch, as Eq. 1.
* Training does not improve the change map, and an optional separation term did not fix it
  (``separation_weight`` gamma, default 0 = Eq. 4 as printed; ``separation_margin`` 1). Nothing in Eq. 4 acts on the change intensity
  ``||h^1 - h^2||`` that GGKI thresholds: the classifier and clustering terms shape ``d(x)``, and the
  extractor moves only through them. Measured (issue 12 item 7, ``bench_drlnet.py --quality``), the
  network as initialised scored about as well as the trained one (better on taizhou and OSCD bercy).
  The term states the paper's aim for the CI ("enhances the CI of changed points and suppresses that
  of unchanged ones", Sec. 4.4) with the paper's own pseudo-labels lambda: pseudo-unchanged pairs are
  pulled together in feature space (the siamese extractor learns to ignore the radiometric
  differences of unchanged ground), pseudo-changed ones are kept at least at the threshold that
  flagged them (so the features cannot collapse). At the paper's lr the term at weight 1 moved the CI
  too little to show (synthetic mixed-band pair: AUC 0.912 at gamma 1, 0.923 at 20 and 50, 0.911
  untrained); at gamma 20 it wins on that pair (tests/test_drlnet.py) and raises the GGKI kappa on
  OSCD bercy, but loses on Landsat taizhou (AUC 0.986 against 0.995 untrained: it learns the noisy
  stage-1 pseudo-labels, pulling the true changes GGKI missed toward 0) and is even elsewhere, so it
  stays off (figures in benchmarks/README.md). It acts only where the extractor is fine-tuned (DRLnet2).
* k-means (over-clustering, centre initialisation, step 7) is FAISS's, seeded with k-means++
  (geochange.cluster; MATLAB's kmeans, the likely tool of the paper, seeds the same way).
* The classifier's targets at timestep t are the labels of timestep t-1 (Eq. 4), whose number of
  classes changes: at each timestep after the first the last layer is re-initialised with one
  output per class of ``s^{t-1}``.
* Eq. 8 for a changed sample looks only at the ``K_t`` changed centres (unchanged samples keep
  label 0; their clustering term has ``lambda = 0``). Eq. 9's counts start at the size of each
  cluster of the initialising k-means; the sequential ``1/count`` updates of a mini-batch are
  applied at once, which is exactly the same running mean.
* lambda is fixed during a timestep and reused by its step 7.
* GGKI (for lambda and for the final threshold) is fitted on the distance ``||h^1 - h^2||``, not on
  Eq. 2's squared distance: the decision ``||.||^2 > tau`` is the same rule, but the squared values
  crowd the unchanged class into the first few histogram bins and GGKI then cuts too low.
  ``ci_squared=True`` restores Eq. 2 as printed.
* SLIC works on the normalised bands (no Lab conversion); ``n_segments`` is per 256 x 256 pixels of
  valid window area, and the intersection of the two segmentations is by label pairs. The centre
  of a superpixel is its member pixel nearest to its centroid; windows at image borders are edge
  padded.
* Dense prediction: the paper labels each superpixel by its centre window; by default ``predict``
  evaluates every pixel's own ``w x w`` neighbourhood instead (the first layer as a ``w x w``
  convolution), which needs no segmentation at inference but widens each change by ``w // 2``
  pixels. ``predict_unit="superpixel"`` is the paper's way: SLIC on each predicted window (slower,
  and the superpixels depend on the window, so they can differ across window seams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from geochange.cluster import kmeans
from geochange.device import torch_threads
from geochange.errors import GeochangeError
from geochange.models.base import ChangeModel, Sample
from geochange.progress import task
from geochange.threshold import GGKIResult, ggki_threshold

VARIANTS = ("DRLnet1", "DRLnet2")
INPUT_SCALES = ("unit", "none")
PREDICT_UNITS = ("pixel", "superpixel")
SLIC_MASKS = ("invalid", "always")
_SLIC_AREA = 256 * 256   # n_segments is per this many valid pixels
_EPS = 1e-6


@dataclass
class DRLnetConfig:
    """Hyper-parameters of DRLnet (paper defaults where the paper gives one)."""

    window: int = 3                                   # w: patch side (paper: 3)
    schedule: tuple[int, ...] = (25, 15, 8, 5)        # K0 (over-clustering), K1 .. KT (paper Fig. 2)
    types: int | None = None                          # K_T (--types): ends the schedule there if given
    variant: str = "DRLnet2"                          # DRLnet2: fine-tune all layers; DRLnet1: after merging only
    alpha: float = 0.1                                # weight of the clustering term (paper: 0.1)
    separation_weight: float = 0.0                    # CI separation term gamma (not in the paper; 0, off: Eq. 4 as printed)
    separation_margin: float = 1.0                    # pseudo-changed CI kept above this many GGKI thresholds tau
    lr: float = 0.005                                 # SGD learning rate (paper)
    momentum: float = 0.5                             # SGD momentum (paper)
    batch_size: int = 10                              # paper
    sparsity: float = 0.05                            # target mean activation rho (paper)
    sparsity_weight: float = 0.001                    # beta of the KL sparsity penalty (not in the paper)
    extractor_sizes: tuple[int, ...] = (50, 25)       # per-date (shared) feature extractor -> h
    merge_size: int = 25                              # merging layer on [h1, h2]
    dr_sizes: tuple[int, ...] = (10,)                 # layers after merging; the last one is d(x)
    pretrain_epochs: int = 20                         # pre-training on the over-clustering labels
    stage_epochs: int = 10                            # Algorithm 1 epochs per timestep
    max_samples: int = 20_000                         # superpixel samples pooled over the scene sample
    n_segments: int = 1000                            # SLIC segments per 256x256 valid pixels, each date
    compactness: float = 0.1                          # SLIC compactness (data in std units)
    slic_mask: str = "always"                         # SLIC's mask: "always" (k-means seeds: bench_accuracy); "invalid" (fast)
    kmeans_niter: int = 20                            # FAISS k-means iterations
    ggki_bins: int = 512                              # histogram bins of the GGKI fits
    ci_squared: bool = False                          # GGKI on ||h1-h2||^2 (Eq. 2) instead of ||h1-h2||
    predict_unit: str = "pixel"                       # "pixel": every pixel's window; "superpixel": paper's
    predict_chunk: int = 32                           # rows of a window per forward pass in predict (memory)
    input_scale: str = "unit"                         # "unit": each band to [0, 1] (toolbox); "none": as given
    input_percentile: float = 0.0                     # unit scaling: band range between these percentiles (0: min-max)

    def __post_init__(self) -> None:
        self.schedule = tuple(int(k) for k in self.schedule)
        if self.types is not None:
            # keep the schedule's steps above K_T and end at K_T: 3 -> (25, 15, 8, 3), 10 -> (25, 15, 10)
            if int(self.types) < 1:
                raise GeochangeError(f"--types must be >= 1, got {self.types}")
            kept = [k for k in self.schedule[:-1] if k > int(self.types)] or [2 * int(self.types)]
            self.schedule = (*kept, int(self.types))
        self.extractor_sizes = tuple(int(s) for s in self.extractor_sizes)
        self.dr_sizes = tuple(int(s) for s in self.dr_sizes)
        if self.window < 1 or self.window % 2 == 0:
            raise GeochangeError(f"drlnet window must be odd and >= 1, got {self.window}")
        if len(self.schedule) < 2 or any(k < 1 for k in self.schedule) or any(
                a <= b for a, b in zip(self.schedule, self.schedule[1:])):
            raise GeochangeError(f"drlnet schedule must be K0 > K1 > ... > KT >= 1, got {self.schedule}")
        if self.variant not in VARIANTS:
            raise GeochangeError(f"drlnet variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if not self.extractor_sizes or not self.dr_sizes or self.merge_size < 1 or min(
                self.extractor_sizes + self.dr_sizes) < 1:
            raise GeochangeError("drlnet layer sizes must be positive and non-empty")
        if self.predict_unit not in PREDICT_UNITS:
            raise GeochangeError(f"drlnet predict_unit must be one of {', '.join(PREDICT_UNITS)}, "
                                 f"got {self.predict_unit!r}")
        if self.batch_size < 1 or self.max_samples < 2 or self.n_segments < 1 or self.predict_chunk < 1:
            raise GeochangeError("drlnet batch_size, max_samples, n_segments and predict_chunk must be positive")
        if self.slic_mask not in SLIC_MASKS:
            raise GeochangeError(f"drlnet slic_mask must be one of {', '.join(SLIC_MASKS)}, got {self.slic_mask!r}")
        if self.input_scale not in INPUT_SCALES:
            raise GeochangeError(f"drlnet input_scale must be one of {', '.join(INPUT_SCALES)}, "
                                 f"got {self.input_scale!r}")
        if not 0.0 <= self.input_percentile < 50.0:
            raise GeochangeError(f"drlnet input_percentile must be in [0, 50), got {self.input_percentile}")
        if not 0.0 < self.sparsity < 1.0:
            raise GeochangeError(f"drlnet sparsity target must be in (0, 1), got {self.sparsity}")
        if self.separation_weight < 0 or self.separation_margin < 0:
            raise GeochangeError("drlnet separation_weight and separation_margin must be >= 0")

    @property
    def k0(self) -> int:
        return self.schedule[0]


# ----------------------------------------------------------------------------------------------
# superpixel samples


def _patches(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, w: int) -> np.ndarray:
    """``(n, C*w*w)`` windows of ``img`` (C, h, w) centred at (rows, cols), edge padded.

    The flattening order is channel, row, column: that of ``torch.nn.functional.unfold`` and of a
    conv kernel ``(out, C, w, w)``, so the first layer doubles as a ``w x w`` convolution.
    """
    r = w // 2
    padded = np.pad(img, ((0, 0), (r, r), (r, r)), mode="edge")
    off = np.arange(w)
    win = padded[:, rows[:, None, None] + off[None, :, None], cols[:, None, None] + off[None, None, :]]
    return np.ascontiguousarray(win.transpose(1, 0, 2, 3).reshape(rows.size, -1), dtype=np.float32)


def superpixels(before: np.ndarray, after: np.ndarray, valid: np.ndarray, n_segments: int,
                compactness: float, always_mask: bool = False) -> np.ndarray:
    """SLIC on each date, intersected: ``(h, w)`` int labels, 0 outside ``valid``, 1.. inside.

    SLIC gets a mask only where some pixel is invalid: with a mask, skimage places its seeds by
    k-means on the mask's pixel coordinates (0.9 s for a 256 x 256 window against 0.08 s on its
    regular grid, 40 % of a fit), and a full mask adds nothing. ``bench_drlnet.py --superpixels``
    compares both on scenes with truth (boundary recall, undersegmentation: as good).
    On a date without spatial structure (pure noise) the grid-seeded SLIC collapses into a few
    segments (2 for 1000 asked on white noise), the k-means-seeded one does not: a date that comes
    out with fewer than a quarter of ``n_segments`` is segmented again with the mask.
    ``always_mask``: give SLIC the mask everywhere (as before issue 15; ``slic_mask="always"``).
    """
    from skimage.segmentation import slic

    valid = np.asarray(valid, bool)
    labels = []
    for img in (before, after):
        image = np.moveaxis(img, 0, -1).astype(np.float64)
        kw = dict(n_segments=n_segments, compactness=compactness, convert2lab=False, start_label=1, channel_axis=-1)
        full = valid.all() and not always_mask
        lab = slic(image, mask=None if full else valid, **kw)
        if full and lab.max() < n_segments // 4:
            lab = slic(image, mask=valid, **kw)
        labels.append(lab.astype(np.int64))
    l1, l2 = labels
    joint = l1 * (int(l2.max()) + 1) + l2
    out = np.zeros(valid.shape, np.int64)
    _, inverse = np.unique(joint[valid], return_inverse=True)
    out[valid] = inverse.reshape(-1) + 1
    return out


def superpixel_centres(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every superpixel (label >= 1), the member pixel nearest to its centroid: (rows, cols)."""
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)
    cr = np.bincount(lab, rr, n + 1) / np.maximum(count, 1)
    ccen = np.bincount(lab, cc, n + 1) / np.maximum(count, 1)
    dist = (rr - cr[lab]) ** 2 + (cc - ccen[lab]) ** 2
    order = np.lexsort((dist, lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    return rr[first], cc[first]


def superpixel_samples(before: np.ndarray, after: np.ndarray, valid: np.ndarray, window: int,
                       n_segments: int, compactness: float,
                       always_mask: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``w x w`` patches of both dates at the centres of the intersected superpixels of one window."""
    n_valid = int(valid.sum())
    if n_valid == 0:
        empty = np.empty((0, before.shape[0] * window * window), np.float32)
        return empty, empty
    n_seg = max(1, int(round(n_segments * n_valid / _SLIC_AREA)))
    labels = superpixels(before, after, valid, n_seg, compactness, always_mask)
    rows, cols = superpixel_centres(labels)
    return _patches(before, rows, cols, window), _patches(after, rows, cols, window)


# ----------------------------------------------------------------------------------------------
# the network


def _build_network(in_dim: int, cfg: DRLnetConfig, n_classes: int):
    import torch
    from torch import nn

    def layer(n_in: int, n_out: int) -> nn.Linear:
        lin = nn.Linear(n_in, n_out)
        bound = 4.0 * math.sqrt(6.0 / (n_in + n_out))  # deeplearn-toolbox's init for sigmoid units
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound)
            lin.bias.zero_()
        return lin

    class DRLNetwork(nn.Module):
        """Shared extractor -> h per date; merging layer on [h1, h2]; DR layers -> d; classifier f on d."""

        def __init__(self) -> None:
            super().__init__()
            sizes = (in_dim,) + cfg.extractor_sizes
            self.extractor = nn.ModuleList(layer(a, b) for a, b in zip(sizes, sizes[1:]))
            self.merge = layer(2 * cfg.extractor_sizes[-1], cfg.merge_size)
            sizes = (cfg.merge_size,) + cfg.dr_sizes
            self.dr = nn.ModuleList(layer(a, b) for a, b in zip(sizes, sizes[1:]))
            self.classifier = layer(cfg.dr_sizes[-1], n_classes)

        def new_classifier(self, n: int) -> None:
            self.classifier = layer(cfg.dr_sizes[-1], n).to(self.merge.weight.device)

        def extract(self, x, acts: list | None = None):
            for lin in self.extractor:
                x = torch.sigmoid(lin(x))
                if acts is not None:
                    acts.append(x)
            return x

        def represent(self, h1, h2, acts: list | None = None):
            z = torch.sigmoid(self.merge(torch.cat([h1, h2], dim=-1)))
            if acts is not None:
                acts.append(z)
            for lin in self.dr:
                z = torch.sigmoid(lin(z))
                if acts is not None:
                    acts.append(z)
            return z

        def forward(self, x1, x2, acts: list | None = None):
            h = self.extract(torch.cat([x1, x2]), acts)
            h1, h2 = h[: x1.shape[0]], h[x1.shape[0]:]
            d = self.represent(h1, h2, acts)
            f = torch.sigmoid(self.classifier(d))
            return h1, h2, d, f

        def dense(self, img, window: int, pad: bool = True):
            """Extractor features of every pixel of ``img`` (N, C, H, W): (N, hidden, H, W).

            With ``pad=False`` the input already carries a halo of ``window // 2`` pixels on each side
            (and the output is that much smaller)."""
            import torch.nn.functional as F

            r = window // 2
            x = F.pad(img, (r, r, r, r), mode="replicate") if r and pad else img
            first = self.extractor[0]
            w = first.weight.view(first.out_features, img.shape[1], window, window)
            x = torch.sigmoid(F.conv2d(x, w, first.bias))
            for lin in self.extractor[1:]:
                x = torch.sigmoid(torch.einsum("nchw,oc->nohw", x, lin.weight) + lin.bias[:, None, None])
            return x

        def dense_dr(self, h1, h2):
            """DRs of every pixel from dense features (N, hidden, H, W) -> (N, D, H, W)."""
            z = torch.cat([h1, h2], dim=1)
            for lin in [self.merge, *self.dr]:
                z = torch.sigmoid(torch.einsum("nchw,oc->nohw", z, lin.weight) + lin.bias[:, None, None])
            return z

    return DRLNetwork()


def _kl_sparsity(acts: list, rho: float):
    """Sparse-autoencoder penalty: sum over hidden units of KL(rho || batch mean activation)."""
    import torch

    total = 0.0
    for a in acts:
        rho_hat = a.mean(dim=0).clamp(_EPS, 1.0 - _EPS)
        total = total + (rho * torch.log(rho / rho_hat)
                         + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))).sum()
    return total


def _separation(h1, h2, lam, margin: float):
    """Separation of the change intensity (not in the paper): pseudo-unchanged samples (lambda 0) pull
    ``||h1 - h2||^2`` to 0, pseudo-changed ones (lambda 1) pay ``max(0, margin - ||h1 - h2||)^2``; mean
    over the batch. This is the one term that acts on the CI that GGKI thresholds."""
    import torch

    sq = ((h1 - h2) ** 2).sum(1)
    hinge = torch.relu(margin - (sq + _EPS).sqrt()) ** 2
    return ((1.0 - lam) * sq + lam * hinge).mean()


@dataclass
class _Stage:
    """What one timestep of Algorithm 2 did (for params() and the tests)."""

    k: int
    tau: float
    n_changed: int
    n_labels: int
    labels: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        tau = None if math.isnan(self.tau) else self.tau  # timestep 0 has no lambda (strict JSON)
        return {"k": self.k, "tau": tau, "n_changed": self.n_changed, "n_labels": self.n_labels}


class DRLnet(ChangeModel):
    """DRLnet (Zhang et al. 2017): recurrent clustering of learned difference representations."""

    name = "drlnet"
    config_class = DRLnetConfig

    def __init__(self, config: DRLnetConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or DRLnetConfig(), device)
        self.net = None
        self.fitted: GGKIResult | None = None         # GGKI on the final change intensity
        self.unchanged_centre: np.ndarray | None = None
        self.change_centres: np.ndarray | None = None  # (K_T, D) final changed centres in DR space
        self.history: list[dict] = []                  # one entry per epoch: losses (mean over batches)
        self.stages: list[_Stage] = []                 # timestep 0 = over-clustering, then 1..T
        self.n_samples = 0
        self.n_types = 0                               # K_T after fit (fewer if fewer changed samples)
        self.input_offset: np.ndarray | None = None    # per band: x -> (x - offset) * gain ("unit" scaling)
        self.input_gain: np.ndarray | None = None

    # -- fit -------------------------------------------------------------------------------------

    def collect_samples(self, samples: Sequence[Sample], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Superpixel patches of both dates pooled over the sampled windows, capped at ``max_samples``."""
        cfg = self.config
        x1s, x2s = [], []
        for before, after, valid in samples:
            valid = np.asarray(valid, bool)
            if not valid.any():
                continue
            a, b = superpixel_samples(np.asarray(before, np.float32), np.asarray(after, np.float32), valid,
                                      cfg.window, cfg.n_segments, cfg.compactness, cfg.slic_mask == "always")
            x1s.append(a)
            x2s.append(b)
        if not x1s:
            raise GeochangeError("drlnet: no valid pixels in the scene sample")
        x1, x2 = np.concatenate(x1s), np.concatenate(x2s)
        if x1.shape[0] > cfg.max_samples:
            keep = np.sort(np.random.default_rng(seed).choice(x1.shape[0], cfg.max_samples, replace=False))
            x1, x2 = x1[keep], x2[keep]
        bands = x1.shape[1] // cfg.window ** 2
        self._fit_input_scale(x1.reshape(x1.shape[0], bands, -1), x2.reshape(x2.shape[0], bands, -1))
        return self._scale_patches(x1), self._scale_patches(x2)

    def _fit_input_scale(self, p1: np.ndarray, p2: np.ndarray) -> None:
        """Per-band map to [0, 1] from the pooled patches of both dates, ``(n, C, w*w)`` each: the
        ``input_percentile`` and ``100 - input_percentile`` percentiles go to 0 and 1 (not clipped)."""
        bands = p1.shape[1]
        if self.config.input_scale == "none":
            self.input_offset, self.input_gain = np.zeros(bands, np.float32), np.ones(bands, np.float32)
            return
        both = np.concatenate([p1, p2]).transpose(1, 0, 2).reshape(bands, -1)
        q = self.config.input_percentile
        lo, hi = np.percentile(both, [q, 100.0 - q], axis=1)
        self.input_offset = lo.astype(np.float32)
        self.input_gain = (1.0 / np.maximum(hi - lo, _EPS)).astype(np.float32)

    def _scale_patches(self, x: np.ndarray) -> np.ndarray:
        """Scale flattened patches ``(n, C*w*w)`` (channel-major) band by band."""
        n, w2 = x.shape[0], self.config.window ** 2
        v = x.reshape(n, -1, w2)
        v = (v - self.input_offset[None, :, None]) * self.input_gain[None, :, None]
        return np.ascontiguousarray(v.reshape(n, -1), dtype=np.float32)

    def _scale_image(self, img: np.ndarray) -> np.ndarray:
        """Scale ``(N, C, h, w)`` band by band (float32)."""
        v = (np.asarray(img, np.float32) - self.input_offset[None, :, None, None]) * self.input_gain[None, :, None, None]
        return np.ascontiguousarray(v, dtype=np.float32)

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        """Algorithm 2 on superpixel samples pooled over the scene sample (one CPU thread: see torch_threads)."""
        with torch_threads(1, self.device):
            self._fit(samples, seed)

    def _fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        import torch

        cfg = self.config
        x1_np, x2_np = self.collect_samples(samples, seed)
        n = x1_np.shape[0]
        if n <= cfg.k0:
            raise GeochangeError(f"drlnet: {n} superpixels in the scene sample, needs more than K0 = {cfg.k0} to "
                                 "over-cluster; a larger scene sample, more superpixels (-p n_segments) or a smaller K0 "
                                 "(-p schedule)")
        self.n_samples = n
        self.history, self.stages = [], []
        self.fitted = self.net = self.unchanged_centre = self.change_centres = None
        self.n_types = 0
        rng = np.random.default_rng(seed)
        use_gpu_kmeans = False if str(self.device).startswith("cpu") else None
        dev = torch.device(self.device)

        epochs = cfg.pretrain_epochs + cfg.stage_epochs * (len(cfg.schedule) - 1)
        with torch.random.fork_rng(devices=[]), task("training drlnet", epochs, unit="epochs") as advance:
            torch.manual_seed(seed)
            # 1: initial pseudo-labels by over-clustering the stacked raw data ("all changed")
            _, s0 = kmeans(np.concatenate([x1_np, x2_np], axis=1), cfg.k0, seed=seed,
                           niter=cfg.kmeans_niter, gpu=use_gpu_kmeans)
            self.stages.append(_Stage(cfg.k0, float("nan"), n, len(np.unique(s0)), s0))
            net = _build_network(x1_np.shape[1], cfg, cfg.k0).to(dev)
            self.net = net
            x1 = torch.from_numpy(x1_np).to(dev)
            x2 = torch.from_numpy(x2_np).to(dev)
            prev = torch.from_numpy(s0).to(dev)
            # 2: pre-training on the over-clustering labels
            self._train(x1, x2, prev, None, rng, cfg.pretrain_epochs, stage=0,
                        params=list(net.parameters()), advance=advance)
            for t, k_t in enumerate(cfg.schedule[1:], start=1):
                # 4: lambda by GGKI on ||h1 - h2|| of the learned features (Eq. 2)
                h1, h2, d = self._features(x1, x2)
                ci = self._ci(h1, h2).cpu().numpy()
                gg = self._ggki(ci, f"timestep {t}")
                lam = ci > gg.threshold
                # 5: 1 + K_t centres, unchanged samples share label 0
                d_np = d.cpu().numpy()
                centres, labels, k_eff = self._init_centres(d_np, lam, k_t, seed + t, use_gpu_kmeans)
                if t > 1:  # targets s^{t-1}: one output per class of the previous timestep
                    net.new_classifier(int(prev.max().item()) + 1)
                # 6: Algorithm 1
                if cfg.variant == "DRLnet1":
                    params = [p for m in [*net.dr, net.classifier] for p in m.parameters()]
                else:
                    params = list(net.parameters())
                clus = _Clustering(torch.from_numpy(centres).to(dev), torch.from_numpy(labels).to(dev),
                                   torch.from_numpy(lam).to(dev), self._margin(gg.threshold))
                self._train(x1, x2, prev, clus, rng, cfg.stage_epochs, stage=t, params=params, advance=advance)
                # 7: reassignment: unchanged share label 0, changed samples k-means-clustered into K_t
                _, _, d = self._features(x1, x2)
                d_np = d.cpu().numpy()
                centres, labels, k_eff = self._init_centres(d_np, lam, k_t, seed + 1000 + t, use_gpu_kmeans)
                self.stages.append(_Stage(k_t, float(gg.threshold), int(lam.sum()), len(np.unique(labels)),
                                          labels))
                prev = torch.from_numpy(labels).to(dev)
            # the change intensity of the final features, and its GGKI threshold
            h1, h2, _ = self._features(x1, x2)
            ci = self._ci(h1, h2).cpu().numpy()
            self.fitted = self._ggki(ci, "the final change intensity")
        self.unchanged_centre = centres[0]
        self.change_centres = centres[1:1 + k_eff]
        self.n_types = int(k_eff)

    def _ci(self, h1, h2, dim: int = -1):
        """Change intensity: ``||h1 - h2||`` (or its square, Eq. 2 as printed, with ``ci_squared``)."""
        sq = ((h1 - h2) ** 2).sum(dim)
        return sq if self.config.ci_squared else sq.sqrt()

    def _margin(self, tau: float) -> float:
        """The separation term's margin on ``||h1 - h2||``: ``separation_margin`` times the GGKI threshold
        (taken back from the squared scale with ``ci_squared``)."""
        tau = math.sqrt(max(tau, 0.0)) if self.config.ci_squared else float(tau)
        return self.config.separation_margin * tau

    def _ggki(self, ci: np.ndarray, what: str) -> GGKIResult:
        try:
            return ggki_threshold(ci, bins=self.config.ggki_bins)
        except GeochangeError as exc:
            raise GeochangeError(f"drlnet: cannot split changed from unchanged on {what}: {exc}") from None

    def _init_centres(self, d: np.ndarray, lam: np.ndarray, k: int, seed: int, gpu) -> tuple:
        """(1 + k, D) centres (row 0 unchanged), labels (0 unchanged, 1..k changed), effective k."""
        labels = np.zeros(d.shape[0], np.int64)
        centres = np.zeros((1 + k, d.shape[1]), np.float32)
        if (~lam).any():
            centres[0] = d[~lam].mean(axis=0)
        n_changed = int(lam.sum())
        k_eff = min(k, n_changed)
        if k_eff > 0:
            c, lab = kmeans(d[lam], k_eff, seed=seed, niter=self.config.kmeans_niter, gpu=gpu)
            centres[1:1 + k_eff] = c
            labels[lam] = lab + 1
        return centres[:1 + k_eff], labels, k_eff

    def _features(self, x1, x2, chunk: int = 65536):
        """h1, h2 and d of all samples (no grad), concatenated."""
        import torch

        out = [], [], []
        with torch.no_grad():
            for i in range(0, x1.shape[0], chunk):
                h1, h2, d, _ = self.net(x1[i:i + chunk], x2[i:i + chunk])
                for lst, v in zip(out, (h1, h2, d)):
                    lst.append(v)
        return tuple(torch.cat(v) for v in out)

    def _train(self, x1, x2, prev, clus: "_Clustering | None", rng: np.random.Generator,
               epochs: int, stage: int, params: list, advance=lambda n=1, note=None: None) -> None:
        """SGD epochs on Eq. 4 (Algorithm 1 when ``clus`` is given, plain pre-training otherwise);
        ``advance(1, note)`` after each epoch (a progress bar).

        On the CPU the steps run in NumPy with hand-written gradients (:class:`_NumpyStep`): a batch
        of 10 through layers of 25-50 units is all per-call overhead, which torch's autograd and
        optimiser pay about 1.4 ms a step for against about 0.2 ms here (100,000 steps with the
        defaults). The same sample order, initialisation and arithmetic (float32), so the two agree
        to float rounding (tests/test_drlnet.py); torch's autograd runs the steps on a GPU."""
        if str(x1.device) == "cpu":
            step = _NumpyStep(self.net, self.config, params, clus)
            try:
                self._sgd_epochs(step, x1.numpy(), x2.numpy(), prev.numpy(), rng, epochs, stage, advance)
            finally:
                step.store(self.net)
            return
        self._torch_train(x1, x2, prev, clus, rng, epochs, stage, params, advance)

    def _sgd_epochs(self, step: "_NumpyStep", x1: np.ndarray, x2: np.ndarray, prev: np.ndarray,
                    rng: np.random.Generator, epochs: int, stage: int, advance) -> None:
        n, bs = x1.shape[0], self.config.batch_size
        for epoch in range(epochs):
            perm = rng.permutation(n)
            sums = np.zeros(5)
            batches = 0
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                sums += step(x1[idx], x2[idx], prev[idx], idx)
                if step.clus is not None:
                    step.update_centres(x1, x2, idx)
                batches += 1
            self._log_epoch(sums / max(batches, 1), stage, epoch)
            advance(1, f"timestep {stage}")

    def _log_epoch(self, mean: np.ndarray, stage: int, epoch: int) -> None:
        self.history.append({"stage": stage, "k": self.config.schedule[stage], "epoch": epoch,
                             "loss": float(mean[0]), "classification": float(mean[1]), "clustering": float(mean[2]),
                             "sparsity": float(mean[3]), "separation": float(mean[4])})

    def _torch_train(self, x1, x2, prev, clus: "_Clustering | None", rng: np.random.Generator,
                     epochs: int, stage: int, params: list, advance=lambda n=1, note=None: None) -> None:
        """:meth:`_train` with torch's autograd and SGD (any device)."""
        import torch

        cfg = self.config
        net = self.net
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        eye = torch.eye(net.classifier.out_features, device=x1.device)
        n = x1.shape[0]
        for epoch in range(epochs):
            perm = torch.from_numpy(rng.permutation(n)).to(x1.device)
            sums = np.zeros(5)
            batches = 0
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                acts: list = []
                h1, h2, d, f = net(x1[idx], x2[idx], acts)
                cls = ((f - eye[prev[idx]]) ** 2).sum(1).mean()
                loss = cls
                clu = torch.zeros((), device=x1.device)
                sep = torch.zeros((), device=x1.device)
                if clus is not None:
                    lam = clus.lam[idx]
                    clu = (lam * ((d - clus.centres[clus.labels[idx]]) ** 2).sum(1)).mean()
                    loss = loss + cfg.alpha * clu
                    if cfg.separation_weight > 0:
                        sep = _separation(h1, h2, lam, clus.margin)
                        loss = loss + cfg.separation_weight * sep
                sp = _kl_sparsity(acts, cfg.sparsity) if cfg.sparsity_weight > 0 else torch.zeros(())
                loss = loss + cfg.sparsity_weight * sp
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if clus is not None:
                    clus.update(net, x1, x2, idx)
                sums += [float(loss.detach()), float(cls.detach()), float(clu.detach()), float(sp.detach()),
                         float(sep.detach())]
                batches += 1
            self._log_epoch(sums / max(batches, 1), stage, epoch)
            advance(1, f"timestep {stage}")

    # -- predict -----------------------------------------------------------------------------------

    def _dense(self, before: np.ndarray, after: np.ndarray, with_dr: bool):
        """CI (1, rows, W) and, if asked, the DRs (1, D, rows, W) as torch tensors, a block of
        ``predict_chunk`` rows of one window at a time (with a halo), so memory stays small:
        yields ``(window index, first row, stop row, ci, dr)``."""
        import torch
        import torch.nn.functional as F

        if self.net is None or self.fitted is None:
            raise GeochangeError("the drlnet model must be fitted on the scene before predicting")
        dev = torch.device(self.device)
        self.net.eval()
        w = self.config.window
        r = w // 2
        rows = self.config.predict_chunk
        with torch.no_grad():
            for i in range(before.shape[0]):
                b = torch.from_numpy(self._scale_image(before[i:i + 1])).to(dev)
                a = torch.from_numpy(self._scale_image(after[i:i + 1])).to(dev)
                if r:
                    b = F.pad(b, (r, r, r, r), mode="replicate")
                    a = F.pad(a, (r, r, r, r), mode="replicate")
                height = before.shape[2]
                for y0 in range(0, height, rows):
                    y1 = min(height, y0 + rows)
                    h1 = self.net.dense(b[:, :, y0:y1 + 2 * r], w, pad=False)
                    h2 = self.net.dense(a[:, :, y0:y1 + 2 * r], w, pad=False)
                    ci = self._ci(h1, h2, dim=1)
                    yield i, y0, y1, ci, (self.net.dense_dr(h1, h2) if with_dr else None)

    def change_intensity(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """CI ``||h^1 - h^2||`` of every pixel's ``w x w`` neighbourhood: ``(N, C, H, W) -> (N, H, W)``."""
        return self._maps(before, after, None, with_types=False)[0]

    def _maps(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None,
              with_types: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """CI (N, H, W) float32 and, if asked, the type each pixel has if changed (N, H, W) uint8 in
        1..n_types (the nearest changed centre in DR space), per pixel or, with
        ``predict_unit="superpixel"`` and a ``valid`` mask, those of each superpixel's centre."""
        import torch

        self.fitted_or_raise()
        shape = (before.shape[0],) + before.shape[2:]
        ci_out = np.empty(shape, np.float32)
        types_out = np.ones(shape, np.uint8) if with_types else None
        centres = torch.from_numpy(np.asarray(self.change_centres, np.float32)).to(self.device)
        with_types = with_types and centres.shape[0] > 0
        for i, y0, y1, ci, d in self._dense(before, after, with_dr=with_types):
            ci_out[i, y0:y1] = ci[0].cpu().numpy()
            if with_types:
                # squared distance to each centre up to the per-pixel ||d||^2, which argmin ignores
                dist = (centres ** 2).sum(1)[None, :, None, None] - 2.0 * torch.einsum("ndhw,kd->nkhw", d, centres)
                types_out[i, y0:y1] = (dist.argmin(1)[0] + 1).to(torch.uint8).cpu().numpy()
        if self.config.predict_unit == "superpixel" and valid is not None:
            cfg = self.config
            for n in range(shape[0]):
                v = np.asarray(valid[n], bool)
                if not v.any():
                    continue
                n_seg = max(1, int(round(cfg.n_segments * int(v.sum()) / _SLIC_AREA)))
                labels = superpixels(before[n], after[n], v, n_seg, cfg.compactness, cfg.slic_mask == "always")
                rows, cols = superpixel_centres(labels)
                inside = labels > 0
                for arr in (ci_out, types_out) if types_out is not None else (ci_out,):
                    lut = np.zeros(rows.size + 1, arr.dtype)
                    lut[1:] = arr[n][rows, cols]
                    arr[n][inside] = lut[labels[inside]]
        return ci_out, types_out

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """P(changed | CI) that ranks as CI does: 0.5 at the GGKI threshold, never saturating
        (``GGKIResult.probability``; the paper gives only the hard threshold)."""
        ci, _ = self._maps(before, after, valid, with_types=False)
        return self.fitted_or_raise().probability(ci).astype(np.float32, copy=False)

    def predict_with_types(self, before: np.ndarray, after: np.ndarray,
                           valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The engine's typed-model call: probability as :meth:`predict`, and for every pixel the
        type it has if changed, ``1..n_types`` (the nearest final changed centre in DR space)."""
        ci, types = self._maps(before, after, valid, with_types=True)
        return self.fitted_or_raise().probability(ci).astype(np.float32, copy=False), types

    def predict_types(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change-type map ``(N, H, W)`` uint8: 0 unchanged (or invalid), ``1..K_T`` the nearest
        changed centre in DR space, wherever :meth:`predict` gives ``>= 0.5``."""
        ci, types = self._maps(before, after, valid, with_types=True)
        types[(ci <= self.fitted_or_raise().threshold) | ~np.asarray(valid, bool)] = 0
        return types

    def fitted_or_raise(self) -> GGKIResult:
        if self.fitted is None or self.net is None:
            raise GeochangeError("the drlnet model must be fitted on the scene before predicting")
        return self.fitted

    def params(self) -> dict:
        out = super().params()
        if self.fitted is not None:
            out["ggki"] = self.fitted.as_dict()
            out["ci_threshold"] = float(self.fitted.threshold)
            out["n_samples"] = self.n_samples
            out["input_offset"] = [round(float(v), 4) for v in self.input_offset]
            out["input_gain"] = [round(float(v), 4) for v in self.input_gain]
            out["stages"] = [s.as_dict() for s in self.stages]
            out["change_types"] = int(0 if self.change_centres is None else len(self.change_centres))
            if self.history:
                out["final_loss"] = float(self.history[-1]["loss"])
        return out


class _Clustering:
    """Centres M^t (row 0 unchanged), assignments s^t and lambda^t of one timestep (Eq. 8, 9)."""

    def __init__(self, centres, labels, lam, margin: float = 0.0) -> None:
        import torch

        self.margin = float(margin)
        self.centres = centres.clone()
        self.labels = labels.clone()
        self.lam = lam.to(centres.dtype)
        self.changed = lam.clone()
        k = centres.shape[0]
        # Eq. 9's counts start at the size of each initial cluster
        self.counts = torch.bincount(labels, minlength=k).to(centres.dtype)

    def update(self, net, x1, x2, idx) -> None:
        """Eq. 8 for the batch's changed samples with the updated theta, then Eq. 9 (running means)."""
        import torch

        sel = idx[self.changed[idx]]
        if sel.numel() == 0 or self.centres.shape[0] < 2:
            return
        with torch.no_grad():
            _, _, d, _ = net(x1[sel], x2[sel])
            m = self.centres[1:]
            a = ((d[:, None, :] - m[None]) ** 2).sum(2).argmin(1) + 1
            self.labels[sel] = a
            k = self.centres.shape[0]
            cnt = torch.bincount(a, minlength=k).to(d.dtype)
            sums = torch.zeros_like(self.centres).index_add_(0, a, d)
            self.counts += cnt
            hit = cnt > 0
            self.centres[hit] += (sums[hit] - cnt[hit, None] * self.centres[hit]) / self.counts[hit, None]


class _NumpyStep:
    """One SGD step of Eq. 4 on DRLnet's network in NumPy (float32), with hand-written gradients.

    Mirrors ``DRLnet._torch_train``: the forward pass of ``DRLNetwork.forward``, the classification,
    clustering, separation and sparsity terms, torch's SGD with momentum (``buf = m buf + g``,
    ``p -= lr buf``; the buffer starts at 0, which equals torch's first ``buf = g``). All parameters
    live in one flat vector (layers in the order extractor, merge, DR, classifier, each weight
    ``(out, in)`` then bias), so the update is three array operations; ``params`` (the trained
    subset, DRLnet1: DR and classifier) is a tail of it.
    """

    def __init__(self, net, cfg: DRLnetConfig, params: list, clus: "_Clustering | None") -> None:
        from scipy.special import expit

        self.expit = expit  # the logistic sigmoid, one ufunc call (float32 in, float32 out)
        layers = [*net.extractor, net.merge, *net.dr, net.classifier]
        sizes = [(lin.out_features, lin.in_features) for lin in layers]
        total = sum(o * i + o for o, i in sizes)
        self.flat = np.empty(total, np.float32)
        self.grad = np.zeros(total, np.float32)
        self.buf = np.zeros(total, np.float32)
        self.w, self.b, self.gw, self.gb = [], [], [], []
        pos = 0
        trained = {id(p) for p in params}
        start = total
        for lin, (o, i) in zip(layers, sizes):
            for arr, grads, shape, param in ((self.w, self.gw, (o, i), lin.weight), (self.b, self.gb, (o,), lin.bias)):
                size = int(np.prod(shape))
                view = self.flat[pos:pos + size].reshape(shape)
                view[...] = param.detach().cpu().numpy()
                arr.append(view)
                grads.append(self.grad[pos:pos + size].reshape(shape))
                if id(param) in trained:
                    start = min(start, pos)
                pos += size
        self.trained = slice(start, total)  # the parameters the optimiser steps (a tail of the vector)
        self.n_ext = len(net.extractor)
        self.n_dr = len(net.dr)
        self.cfg = cfg
        self.clus = None
        if clus is not None:
            self.clus = {"centres": clus.centres.cpu().numpy().copy(), "labels": clus.labels.cpu().numpy().copy(),
                         "lam": clus.lam.cpu().numpy().astype(np.float32), "changed": clus.changed.cpu().numpy().copy(),
                         "counts": clus.counts.cpu().numpy().copy(), "margin": np.float32(clus.margin)}

    def store(self, net) -> None:
        """Write the trained parameters back into the torch network."""
        import torch

        layers = [*net.extractor, net.merge, *net.dr, net.classifier]
        with torch.no_grad():
            for lin, w, b in zip(layers, self.w, self.b):
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))

    def _forward(self, x1: np.ndarray, x2: np.ndarray) -> tuple[list, list]:
        """Activations of every layer: extractor layers on both dates stacked ``(2B, .)``, then merge, DR
        layers and classifier ``(B, .)``; and the inputs of each layer."""
        expit = self.expit
        a = np.concatenate([x1, x2])
        ins, acts = [], []
        for k in range(self.n_ext):
            ins.append(a)
            a = expit(a @ self.w[k].T + self.b[k])
            acts.append(a)
        n = x1.shape[0]
        a = np.concatenate([a[:n], a[n:]], axis=1)
        for k in range(self.n_ext, len(self.w)):
            ins.append(a)
            a = expit(a @ self.w[k].T + self.b[k])
            acts.append(a)
        return ins, acts

    def __call__(self, x1: np.ndarray, x2: np.ndarray, prev: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """One step on the batch; returns (loss, classification, clustering, sparsity, separation)."""
        cfg = self.cfg
        ins, acts = self._forward(x1, x2)
        n = x1.shape[0]
        f = acts[-1]
        d = acts[-2]
        # classification (Eq. 1): mean over the batch of ||f - onehot(prev)||^2
        g = f.copy()
        g[np.arange(n), prev] -= 1.0
        cls = float((g * g).sum()) / n
        grads = [None] * len(acts)
        grads[-1] = g * (2.0 / n)
        clu = sep = sp = 0.0
        gh = None
        if self.clus is not None:
            c = self.clus
            lam = c["lam"][idx]
            diff = d - c["centres"][c["labels"][idx]]
            sq = (diff * diff).sum(1)
            clu = float((lam * sq).sum()) / n
            grads[-2] = diff * (lam * (2.0 * cfg.alpha / n))[:, None]
            if cfg.separation_weight > 0:
                h = acts[self.n_ext - 1]
                dh = h[:n] - h[n:]
                hsq = (dh * dh).sum(1)
                s = np.sqrt(hsq + _EPS)
                gap = np.maximum(c["margin"] - s, 0.0)
                sep = float(((1.0 - lam) * hsq + lam * gap * gap).mean())
                coef = (((1.0 - lam) - lam * gap / s) * (2.0 * cfg.separation_weight / n)).astype(np.float32)
                gh = dh * coef[:, None]
        if cfg.sparsity_weight > 0:
            rho = cfg.sparsity
            for k, a in enumerate(acts[:-1]):  # every hidden layer, not the classifier
                raw = a.mean(0)
                rh = np.clip(raw, _EPS, 1.0 - _EPS)
                sp += float((rho * np.log(rho / rh) + (1.0 - rho) * np.log((1.0 - rho) / (1.0 - rh))).sum())
                gk = ((1.0 - rho) / (1.0 - rh) - rho / rh) * (cfg.sparsity_weight / a.shape[0])
                gk[(raw < _EPS) | (raw > 1.0 - _EPS)] = 0.0
                grads[k] = gk[None, :].astype(np.float32) if grads[k] is None else grads[k] + gk.astype(np.float32)
        # backward, from the classifier down
        ga = grads[-1]
        for k in range(len(acts) - 1, -1, -1):
            a = acts[k]
            gz = ga * a * (1.0 - a)
            np.matmul(gz.T, ins[k], out=self.gw[k])
            gz.sum(0, out=self.gb[k])
            if k == 0:
                break
            gin = gz @ self.w[k]
            if k == self.n_ext:  # the merging layer's input is [h1, h2]: back to the stacked extractor rows
                h = gin.shape[1] // 2
                gin = np.concatenate([gin[:, :h], gin[:, h:]])
                if gh is not None:
                    gin = gin + np.concatenate([gh, -gh])
            below = grads[k - 1]
            ga = gin if below is None else gin + below
        t = self.trained
        self.buf[t] *= np.float32(cfg.momentum)
        self.buf[t] += self.grad[t]
        self.flat[t] -= np.float32(cfg.lr) * self.buf[t]
        loss = cls + cfg.alpha * clu + cfg.separation_weight * sep + cfg.sparsity_weight * sp
        return np.array([loss, cls, clu, sp, sep])

    def update_centres(self, x1: np.ndarray, x2: np.ndarray, idx: np.ndarray) -> None:
        """Eq. 8 for the batch's changed samples with the updated parameters, then Eq. 9 (running means)."""
        c = self.clus
        sel = idx[c["changed"][idx]]
        k = c["centres"].shape[0]
        if sel.size == 0 or k < 2:
            return
        d = self._forward(x1[sel], x2[sel])[1][-2]
        m = c["centres"][1:]
        a = ((d[:, None, :] - m[None]) ** 2).sum(2).argmin(1) + 1
        c["labels"][sel] = a
        onehot = (a[:, None] == np.arange(k)[None, :]).astype(np.float32)
        cnt = onehot.sum(0)
        sums = onehot.T @ d
        c["counts"] += cnt
        hit = cnt > 0
        c["centres"][hit] += (sums[hit] - cnt[hit, None] * c["centres"][hit]) / c["counts"][hit, None]
