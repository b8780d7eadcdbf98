"""RSC-VAE: recoding semantic-consistency VAE for one-class novelty detection (Zhang & Du, 2023).

Change detection as novelty detection: a *sample* is a co-registered patch pair with the channels
of both dates stacked (``2C`` channels, BEFORE first). Unchanged pairs (``patch_label`` 0) are the
normal class the model learns; changed pairs are the anomalies it should fail to reproduce.

What the paper specifies, and how it is done here:

* **Recoding** (Sec. 3.2, Fig. 1): one encoder ``F`` gives ``q(z|x) = N(mu, diag sigma^2)``; the
  decoder ``G`` reconstructs ``x_hat = G(z)`` from a sample ``z ~ q(z|x)``; the *same* encoder
  recodes it: ``q(z_hat|x_hat) = F(x_hat)``.
* **Losses** (Eqs. 4-9): ``l_recon = ||x - x_hat||_1`` (Eq. 4, summed over the sample's pixels and
  channels), ``l_enc1 = KL(q(z|x) || N(0, I))`` (Eq. 5), ``l_enc2 = KL(q(z_hat|x_hat) || N(0, I))``
  (Eq. 7), ``l_mut = JS(q(z|x) || q(z_hat|x_hat))`` (Eq. 8), ``l_consist = l_enc2 + l_mut`` (Eq. 9).
  Normal samples: ``l_normal = l_recon + l_enc1 + lambda l_consist`` (Eq. 10, lambda = 0.1).
* **Modes** (``RSCVAEConfig.mode``):

  - ``one-class`` (RSC-VAE_o, Sec. 3.2): trains on the normal samples only (Eq. 10);
  - ``shifted`` (RSC-VAE_d, Sec. 3.4): each normal sample of a batch is, with probability ``dsa_p``,
    a *pseudo anomaly*: a distributionally-shifted augmentation (DSA: 1 to 3 of horizontal flip,
    vertical flip, 90-degree rotation; or cutout) and the loss ``l_pseudo = l_enc1 + lambda
    l_consist`` of the shifted sample (Eq. 11, no ``l_recon``), weighted ``beta`` (Eq. 12);
  - ``imbalanced`` (RSC-VAE_e, Sec. 3.5): a few real anomalies (changed pairs, ``patch_label`` 1)
    take the place of the pseudo anomalies: ``l_anomalous = l_enc1 + lambda l_consist`` (Eq. 13),
    weighted ``beta`` (Eq. 14).
* **Outlier score** (Eqs. 15-16): ``s = alpha l_mut / E[l_mut] + (1 - alpha) l_recon / E[l_recon]``
  (alpha = 0.5), then min-max normalised.
* **Network and optimiser** (Sec. 4.1, MNIST): four 3x3 convolutions in series, each followed by
  BatchNorm and LeakyReLU (slope 0.2), input resized to 32x32; Adam, lr 0.01, cosine annealing with
  T_max = 50 epochs, 500 epochs, batch 32, DSA probability 1 %, beta = 1.

Choices the paper leaves open, and where this implementation departs from it:

* **JS between Gaussians.** Eq. 8 asks for the Jensen-Shannon divergence of two Gaussians, which
  has no closed form (the mixture ``M = (P + Q) / 2`` is not Gaussian), and the paper gives no
  formula. :func:`js_gaussians` replaces ``M`` by the diagonal Gaussian with the mixture's mean and
  per-dimension variance (moment matching: ``mu_M = (mu_P + mu_Q) / 2``, ``var_M = (var_P + var_Q)
  / 2 + ((mu_P - mu_Q) / 2)^2``) and returns ``(KL(P || M) + KL(Q || M)) / 2`` in closed form. It is
  symmetric, non-negative and zero exactly when ``P = Q``; for nearby Gaussians it agrees with the
  true JS to second order (1-D, unit variances, means 0.5 apart: 0.03031 both; 2 apart: 0.3466 vs
  0.3368), for distant ones it exceeds the true JS, which is bounded by ln 2 while this is not.
* Channel widths (32, 64, 128, 256), strides (2) and the latent size (32) are not given; the
  decoder mirrors the encoder with transposed 3x3 convolutions (BatchNorm + LeakyReLU), its last
  layer linear, since inputs are standardised rather than in [0, 1].
* Losses are averaged over the batch where Eqs. 10, 12 and 14 sum (a constant factor).
* **Inference** uses ``z = mu`` rather than a sample, so scores repeat exactly.
* **Normalisation for maps.** Eq. 16 min-max normalises over the *test set*; ``detect`` scores a
  scene window batch by window batch, where that would make every batch hold a 1. Here the
  expectations of Eq. 15 *and* the min and max of Eq. 16 are fitted on the normal training samples
  (:meth:`RSCVAE.fit_score_statistics`, to call after training; stored in checkpoints as
  ``extra``); scores are clipped to [0, 1]. The paper evaluates by AUC only and gives no operating
  point; the model's ``threshold`` is the normalised score at ``threshold_quantile`` (0.99) of the
  normal training samples. That takes at least ``1 / (1 - threshold_quantile)`` normal samples (100;
  with fewer the quantile is only their largest score, and one sample gave Eq. 16 no range and a
  threshold of 0 that flagged everything): training refuses fewer before its first epoch, saying how
  many there are and what to add (:meth:`RSCVAE.normal_pairs_needed`).
* **DSA on patch pairs.** The paper shifts single images. A flipped or rotated *unchanged* pair is
  still an unchanged pair of aerial imagery, so by default (``dsa_dates="one"``) DSA transforms one
  date of the pair (chosen at random): the pair no longer agrees, a pseudo change.
  ``dsa_dates="both"`` transforms the whole stacked sample, as the paper does with its images.
* Cutout (DeVries & Taylor 2017; the paper's DSA on MVTecAD) zeroes a square of side ``cutout``
  times the patch side (0.5, their CIFAR setting; the paper gives no size) centred at a uniformly
  drawn pixel and clipped at the borders; zero is the band mean of standardised inputs.
* RSC-VAE_e uses ``round(anomaly_share * n_normal)`` (at least 1) of the changed pairs in the
  data (1 %, as Sec. 4.4 on MNIST), the same ones every epoch; ``anomaly_share=None`` uses all.
* ``one-class`` and ``shifted`` train on every sample not labelled changed: unlabelled pairs
  (``patch_label`` -1) count as normal, as a one-class training set is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from geochange.errors import GeochangeError
from geochange.models.base import TrainableModel

MODES = {"one-class": "one-class", "o": "one-class", "shifted": "shifted", "d": "shifted",
         "imbalanced": "imbalanced", "e": "imbalanced"}
DSA_OPS = ("hflip", "vflip", "rot90", "cutout")


@dataclass
class RSCVAEConfig:
    """Hyper-parameters of RSC-VAE; defaults are the paper's MNIST settings where it gives them."""

    mode: str = "one-class"          # training mode: one-class (RSC-VAE_o, Sec. 3.2), shifted (_d, 3.4), imbalanced (_e, 3.5)
    lam: float = 0.1                 # lambda of Eqs. 10, 11, 13 ("fixed at 0.1", Sec. 3.2); 0 = a plain VAE's loss
    beta: float = 1.0                # beta, weight of pseudo/real anomalies, Eqs. 12, 14 (Sec. 4.1: 1 on MNIST)
    alpha: float = 0.5               # alpha of the outlier score, Eq. 15 (Sec. 4.1); 0 = reconstruction error only
    dsa_p: float = 0.01              # DSA probability per normal sample (Sec. 4.1: 1 % MNIST, 5 % MVTecAD)
    dsa_ops: tuple = ("hflip", "vflip", "rot90")  # Sec. 4.1: 1-3 of these on MNIST; ("cutout",) on MVTecAD
    dsa_dates: str = "one"           # geochange: "one" date of a pair shifted (a pseudo change) or "both" (paper)
    cutout: float = 0.5              # cutout side / patch side (DeVries & Taylor 2017, 16 of 32 px); not in the paper
    anomaly_share: float | None = 0.01  # RSC-VAE_e: real anomalies = share x normals (Sec. 4.4: 1 %); None = all
    size: int = 32                   # side the network works at; inputs are resized (Sec. 4.1: 28 -> 32)
    widths: tuple = (32, 64, 128, 256)  # four 3x3 conv + BN + LeakyReLU blocks (Sec. 4.1); widths not given
    latent: int = 32                 # latent dimension D (Sec. 3.2); not given
    slope: float = 0.2               # LeakyReLU slope (Sec. 4.1)
    lr: float = 0.01                 # Adam initial learning rate (Sec. 4.1)
    cosine_t_max: int = 50           # cosine annealing T_max, in epochs (Sec. 4.1); 0 = constant lr
    epochs: int = 500                # Sec. 4.1
    batch_size: int = 32             # Sec. 4.1
    threshold_quantile: float = 0.99  # geochange: threshold = this quantile of normal training scores
    patch: int = 112                 # detect: side of the patch pairs scored (set it to the training patch size)
    cell: int = 14                   # detect: each cell x cell block takes its centred patch's score (PCD protocol)
    scene_patches: int = 2000        # detect without a checkpoint: noisy negatives cut from the pair (ours)
    scene_epochs: int = 20           # detect without a checkpoint: epochs on them (ours; Sec. 4.1: 500)
    marks_negatives: int = 500                # detect --labels: cheap negatives cropped from the scene (ours)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise GeochangeError(f"rscvae mode must be one of one-class, shifted, imbalanced (got {self.mode!r})")
        self.mode = MODES[self.mode]
        self.dsa_ops = (self.dsa_ops,) if isinstance(self.dsa_ops, str) else tuple(self.dsa_ops)
        self.widths = tuple(int(w) for w in self.widths)
        bad = [op for op in self.dsa_ops if op not in DSA_OPS]
        if bad or not self.dsa_ops:
            raise GeochangeError(f"rscvae dsa_ops must be some of {', '.join(DSA_OPS)} (got {self.dsa_ops})")
        if self.dsa_dates not in ("one", "both"):
            raise GeochangeError(f"rscvae dsa_dates must be 'one' or 'both' (got {self.dsa_dates!r})")
        if not self.widths or self.size % (2 ** len(self.widths)):
            raise GeochangeError(f"rscvae size ({self.size}) must be divisible by 2^{len(self.widths)} "
                                 f"(one halving per width in {self.widths})")
        if not (0.0 <= self.dsa_p <= 1.0 and 0.0 <= self.alpha <= 1.0 and 0.0 < self.threshold_quantile <= 1.0):
            raise GeochangeError("rscvae dsa_p and alpha must be in [0, 1], threshold_quantile in (0, 1]")


# -- losses (per sample: tensors of shape (N,)) ---------------------------------------------------

def kl_standard_normal(mu, logvar):
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per sample (Eqs. 5, 7), in closed form:
    ``1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def kl_gaussians(mu1, logvar1, mu2, logvar2):
    """``KL(N(mu1, diag var1) || N(mu2, diag var2))`` per sample, in closed form."""
    var1, var2 = logvar1.exp(), logvar2.exp()
    return 0.5 * (var1 / var2 + (mu1 - mu2).pow(2) / var2 - 1.0 + logvar2 - logvar1).flatten(1).sum(1)


def js_gaussians(mu1, logvar1, mu2, logvar2):
    """Jensen-Shannon divergence of two diagonal Gaussians per sample (Eq. 8), approximated.

    ``JS(P || Q) = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2``. ``M`` is a Gaussian
    mixture, so no closed form exists; here ``M`` is replaced by the diagonal Gaussian with the
    mixture's mean ``(mu1 + mu2) / 2`` and per-dimension variance ``(var1 + var2) / 2 + ((mu1 -
    mu2) / 2)^2`` (moment matching), which makes both KL terms closed-form. Symmetric, >= 0, zero
    iff ``P = Q``; equal to the true JS to second order in the difference of the parameters.
    """
    import torch

    var1, var2 = logvar1.exp(), logvar2.exp()
    mu_m = 0.5 * (mu1 + mu2)
    logvar_m = torch.log(0.5 * (var1 + var2) + (0.5 * (mu1 - mu2)).pow(2))
    return 0.5 * (kl_gaussians(mu1, logvar1, mu_m, logvar_m) + kl_gaussians(mu2, logvar2, mu_m, logvar_m))


def l1_reconstruction(x, x_hat):
    """``||x - x_hat||_1`` per sample (Eq. 4): summed over channels and pixels."""
    return (x - x_hat).abs().flatten(1).sum(1)


# -- distributionally-shifted augmentation (Sec. 3.4) ---------------------------------------------

def hflip(x):
    """Mirror left-right: ``out[..., i, j] = x[..., i, W - 1 - j]``."""
    return x.flip(-1)


def vflip(x):
    """Mirror top-bottom: ``out[..., i, j] = x[..., H - 1 - i, j]``."""
    return x.flip(-2)


def rot90(x):
    """Rotate by 90 degrees counter-clockwise in the image plane (square images keep their shape)."""
    import torch

    return torch.rot90(x, 1, (-2, -1))


def cutout(x, side: int, row: int, col: int):
    """Zero a ``side x side`` square centred at (``row``, ``col``), clipped at the borders (DeVries & Taylor 2017)."""
    out = x.clone()
    r0, c0 = max(row - side // 2, 0), max(col - side // 2, 0)
    out[..., r0:row - side // 2 + side, c0:col - side // 2 + side] = 0
    return out


def shift_distribution(x, chosen, ops: Sequence[str], dates: str = "one", cutout_fraction: float = 0.5):
    """Distributionally-shifted augmentation of the samples ``chosen`` (bool (N,)) of ``x`` (N, 2C, S, S).

    Each chosen sample gets 1 to ``len(ops)`` distinct operations of ``ops`` in a random order
    (Sec. 4.1: "1~3 options" of horizontal flip, vertical flip, 90-degree rotation), applied to one
    date (its C channels; BEFORE or AFTER at random) with ``dates="one"``, to the whole sample with
    ``"both"``. Draws from torch's global generator (seeded per epoch by the trainer).
    """
    import torch

    out = x.clone()
    half = x.shape[1] // 2
    side = max(1, int(round(cutout_fraction * x.shape[-1])))
    for i in torch.nonzero(chosen).flatten().tolist():
        k = int(torch.randint(1, len(ops) + 1, ()))
        picks = [ops[j] for j in torch.randperm(len(ops))[:k].tolist()]
        if dates == "one":
            lo = half * int(torch.randint(0, 2, ()))
            channels = slice(lo, lo + half)
        else:
            channels = slice(None)
        sample = out[i, channels]
        for op in picks:
            if op == "cutout":
                row, col = (int(v) for v in torch.randint(0, x.shape[-1], (2,)))
                sample = cutout(sample, side, row, col)
            else:
                sample = {"hflip": hflip, "vflip": vflip, "rot90": rot90}[op](sample)
        out[i, channels] = sample
    return out


# -- the network ------------------------------------------------------------------------------------

def _build_net(channels: int, cfg: RSCVAEConfig):
    """Encoder F and decoder G (Sec. 4.1): stride-2 3x3 conv + BN + LeakyReLU blocks and their mirror."""
    import torch
    import torch.nn as nn

    widths, side = cfg.widths, cfg.size // 2 ** len(cfg.widths)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, c = [], channels
            for w in widths:
                layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.LeakyReLU(cfg.slope)]
                c = w
            self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, 2 * cfg.latent))
            self.project = nn.Linear(cfg.latent, c * side * side)
            layers = []
            for i, w in enumerate(reversed((channels,) + widths[:-1])):
                layers.append(nn.ConvTranspose2d(c, w, 3, stride=2, padding=1, output_padding=1))
                if i < len(widths) - 1:  # the last layer is linear: inputs are standardised
                    layers += [nn.BatchNorm2d(w), nn.LeakyReLU(cfg.slope)]
                c = w
            self.decoder = nn.Sequential(*layers)

        def encode(self, x) -> tuple:
            """F: (mu, logvar) of q(z|x); logvar clamped to [-10, 10] for numerical safety."""
            mu, logvar = self.encoder(x).chunk(2, dim=1)
            return mu, logvar.clamp(-10.0, 10.0)

        def decode(self, z):
            """G: a reconstruction from latent codes."""
            return self.decoder(self.project(z).view(len(z), widths[-1], side, side))

        def forward(self, x, sample: bool = True, recode: bool = True) -> dict:
            mu, logvar = self.encode(x)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
            x_hat = self.decode(z)
            out = {"mu": mu, "logvar": logvar, "x_hat": x_hat}
            if recode:
                out["mu_hat"], out["logvar_hat"] = self.encode(x_hat)
            return out

    return Net()


class RSCVAE(TrainableModel):
    """RSC-VAE as a change model: a patch pair's outlier score is its change probability."""

    name = "rscvae"
    config_class = RSCVAEConfig

    def __init__(self, config: RSCVAEConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or RSCVAEConfig(), device)
        self.stats: dict[str, float] = {}

    # -- TrainableModel ----------------------------------------------------------------------------

    def configure(self, data) -> None:
        """Refuse, before any epoch, training data with too few normal pairs to fit the score statistics."""
        self.check_normal_count(int(np.count_nonzero(data.index["label"].to_numpy() != 1)))

    def build(self, in_bands: int) -> None:
        self.in_bands = in_bands
        self.net = _build_net(2 * in_bands, self.config)

    def normal_pairs_needed(self) -> int:
        """Normal pairs the score statistics need: the threshold is their ``threshold_quantile`` quantile,
        which takes ``1 / (1 - q)`` of them for one to lie above it on average (100 at 0.99; with fewer
        it is only their largest score); at least 2 for the min and max of Eq. 16."""
        q = self.config.threshold_quantile
        return 2 if q >= 1.0 else max(2, math.ceil(1.0 / (1.0 - q) - 1e-9))

    def check_normal_count(self, n_normal: int) -> None:
        """A one-line refusal when ``n_normal`` normal pairs cannot give the score statistics."""
        need = self.normal_pairs_needed()
        if n_normal < need:
            q = self.config.threshold_quantile
            raise GeochangeError(
                f"rscvae: {n_normal} normal (unchanged or unlabelled) pair{'s' if n_normal != 1 else ''} to fit the "
                f"score statistics on, needs at least {need} (the threshold is their {q:g} quantile, "
                f"threshold_quantile); add unchanged pairs to the training data, cut them into smaller patches, "
                f"or lower -p threshold_quantile (0.9 needs 10)")

    def make_scheduler(self, optimizer, epochs: int, steps_per_epoch: int):
        """Cosine annealing with T_max = ``cosine_t_max`` epochs (Sec. 4.1), stepped per batch."""
        import torch

        if self.config.cosine_t_max <= 0:
            return None
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.config.cosine_t_max * max(steps_per_epoch, 1))

    def select(self, epoch: int, index, rng: np.random.Generator) -> np.ndarray:
        """Normal samples (not labelled changed); in ``imbalanced`` mode plus a few changed ones."""
        labels = index["label"].to_numpy()
        normal = np.flatnonzero(labels != 1)
        if len(normal) == 0:
            raise GeochangeError("rscvae: no unchanged (normal) pairs to train on")
        if self.config.mode != "imbalanced":
            return normal
        return np.sort(np.concatenate([normal, self.anomalies_used(labels)]))

    def anomalies_used(self, labels: np.ndarray) -> np.ndarray:
        """Positions of the real anomalies RSC-VAE_e trains on: the same ones every epoch."""
        positives = np.flatnonzero(np.asarray(labels) == 1)
        if len(positives) == 0:
            raise GeochangeError("rscvae mode imbalanced needs a few changed pairs (patch_label 1) in the data: it has 0, "
                                 "needs at least 1; add labelled changed pairs, or use -p mode=one-class")
        share = self.config.anomaly_share
        k = len(positives) if share is None else max(1, int(round(share * np.count_nonzero(labels != 1))))
        return np.sort(np.random.default_rng(0).permutation(positives)[:k])

    def training_step(self, batch: dict, epoch: int) -> dict:
        """Eqs. 10 (one-class), 12 (shifted) and 14 (imbalanced), averaged over the batch."""
        import torch

        cfg = self.config
        x = self.stack(batch["before"], batch["after"])
        labels = batch["patch_label"]
        if cfg.mode == "shifted":
            anomalous = (torch.rand(len(x), device=x.device) < cfg.dsa_p) & (labels != 1)
            if anomalous.any():
                x = shift_distribution(x, anomalous, cfg.dsa_ops, cfg.dsa_dates, cfg.cutout)
        elif cfg.mode == "imbalanced":
            anomalous = labels == 1
        else:
            anomalous = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        terms = self.losses(x, sample=True)
        consist = terms["l_enc2"] + terms["l_mut"]
        l_normal = terms["l_recon"] + terms["l_enc1"] + cfg.lam * consist          # Eq. 10
        l_anomalous = terms["l_enc1"] + cfg.lam * consist                          # Eqs. 11, 13
        y = anomalous.float()
        loss = ((1 - y) * l_normal + cfg.beta * y * l_anomalous).mean()            # Eqs. 12, 14
        normal = 1 - y
        logged = {k: (v.detach() * normal).sum() / normal.sum().clamp(min=1) for k, v in terms.items()}
        return {"loss": loss, **logged, "anomalous": y.mean()}

    def losses(self, x, sample: bool = True) -> dict:
        """The four per-sample terms of Sec. 3.2 for stacked pairs ``x`` (N, 2C, S, S).

        With ``lam == 0`` and ``alpha == 0`` (a plain VAE) nothing uses the recoding, which is skipped.
        """
        import torch

        recode = self.config.lam > 0 or self.config.alpha > 0 or not self.net.training
        out = {k: v.float() for k, v in self.net(x, sample=sample, recode=recode).items()}  # fp32 losses under AMP
        terms = {"l_recon": l1_reconstruction(x, out["x_hat"]), "l_enc1": kl_standard_normal(out["mu"], out["logvar"])}
        if recode:
            terms["l_enc2"] = kl_standard_normal(out["mu_hat"], out["logvar_hat"])
            terms["l_mut"] = js_gaussians(out["mu"], out["logvar"], out["mu_hat"], out["logvar_hat"])
        else:
            terms["l_enc2"] = terms["l_mut"] = torch.zeros_like(terms["l_recon"])
        return terms

    def stack(self, before, after):
        """One sample per pair: both dates' channels stacked, resized to ``size x size``."""
        import torch
        import torch.nn.functional as F

        x = torch.cat([before, after], dim=1).float()
        size = self.config.size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size or x.shape[-2] > size)
        return x

    # -- outlier score (Eqs. 15-16) ----------------------------------------------------------------

    def outlier_terms(self, before: np.ndarray, after: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(l_mut, l_recon)`` per pair (N,) for (N, C, h, w) standardised BEFORE/AFTER, with z = mu."""
        import torch

        if self.net is None:
            raise GeochangeError("rscvae: the model is not trained (no network)")
        self.net.eval()
        mut, recon = [], []
        with torch.no_grad():
            for i in range(0, len(before), batch_size):
                b = torch.as_tensor(np.asarray(before[i:i + batch_size]), device=self.device)
                a = torch.as_tensor(np.asarray(after[i:i + batch_size]), device=self.device)
                terms = self.losses(self.stack(b, a), sample=False)
                mut.append(terms["l_mut"].float().cpu().numpy())
                recon.append(terms["l_recon"].float().cpu().numpy())
        return np.concatenate(mut), np.concatenate(recon)

    def raw_score(self, l_mut: np.ndarray, l_recon: np.ndarray) -> np.ndarray:
        """Eq. 15: ``alpha l_mut / E[l_mut] + (1 - alpha) l_recon / E[l_recon]`` (expectations over normal training data)."""
        self._need_stats()
        a = self.config.alpha
        return (a * l_mut / max(self.stats["e_mut"], 1e-12)
                + (1 - a) * l_recon / max(self.stats["e_recon"], 1e-12)).astype(np.float32)

    def normalize(self, s: np.ndarray) -> np.ndarray:
        """Eq. 16 with the min and max of the normal training scores, clipped to [0, 1]."""
        self._need_stats()
        lo, hi = self.stats["s_min"], self.stats["s_max"]
        return np.clip((s - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)

    def score(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Normalised outlier score in [0, 1] per pair (N,): a ``PatchScorer`` for ``engine.patchwise``."""
        return self.normalize(self.raw_score(*self.outlier_terms(before, after)))

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Dense change probability (N, h, w): each ``cell x cell`` block of a window takes the normalised
        outlier score of the ``patch x patch`` pair centred on it (the PCD protocol, engine.patchwise)."""
        from geochange.engine.patchwise import patch_heatmap

        return patch_heatmap(self.score, before, after, self.config.patch, self.config.cell)

    def fit(self, samples: Sequence, seed: int = 0) -> None:
        """``detect`` without a checkpoint: train one-class on ``scene_patches`` noisy negatives of the
        scene itself (change is rare, so they are nearly all normal), ``scene_epochs`` epochs; the
        trainer's ``finish`` then fits the score statistics on them. A loaded model has nothing to fit."""
        if self.net is not None:
            return
        from geochange.train.trainer import train_on_scene

        train_on_scene(self, samples, patch=self.config.patch, patches=self.config.scene_patches,
                       epochs=self.config.scene_epochs, seed=seed)

    def fit_marks(self, scene, seed: int = 0, options=None) -> dict:
        """``detect --labels``: the unchanged marks and the scene's cheap negatives are the normal class
        (Sec. 3.2); in ``imbalanced`` mode (RSC-VAE_e, Sec. 3.5) the changed marks are its few real
        anomalies, all of them. ``scene_epochs`` epochs; the score statistics are then fitted on the normal
        pairs (the trainer's ``finish``)."""
        import dataclasses

        from geochange.train.marks import marks_options
        from geochange.train.trainer import train

        if self.config.mode == "imbalanced":
            self.config = dataclasses.replace(self.config, anomaly_share=None)
        epochs = self.config.scene_epochs if options is None or options.epochs is None else options.epochs
        return train(self, scene.items(), marks_options(options, self.device, seed, epochs=epochs))

    def fit_score_statistics(self, data, standardize: bool = True) -> dict:
        """Fit Eq. 15's expectations and Eq. 16's min and max on the normal training samples.

        The trainer calls it after the last epoch (through :meth:`finish`); ``data`` is the trainer's
        :class:`~geochange.train.data.TrainData` or the same items or dataset folder that were
        trained on. Every sample not labelled changed counts as normal. Also sets ``threshold``.
        """
        from geochange.device import torch_threads
        from geochange.train.data import TrainData, open_training_data

        if not isinstance(data, TrainData):
            data = TrainData(open_training_data(data), standardize, self.device)
        normal = np.flatnonzero(data.index["label"].to_numpy() != 1)
        self.check_normal_count(len(normal))
        mut, recon = [], []
        with torch_threads(1, self.device):
            for batch in data.batches(normal, 4 * self.config.batch_size):
                m, r = self.outlier_terms(batch["before"].cpu().numpy(), batch["after"].cpu().numpy())
                mut.append(m)
                recon.append(r)
        mut, recon = np.concatenate(mut), np.concatenate(recon)
        self.stats = {"e_mut": float(mut.mean()), "e_recon": float(recon.mean()), "s_min": 0.0, "s_max": 1.0}
        s = self.raw_score(mut, recon)
        if float(s.max() - s.min()) <= 1e-6 * max(1.0, abs(float(s.max()))):
            self.stats = {}
            raise GeochangeError(f"rscvae: the {len(s)} normal pairs all get the same outlier score ({float(s[0]):.6g}), "
                                 "so Eq. 16 has no range to normalise by; are the training pairs constant or copies?")
        self.stats.update(s_min=float(s.min()), s_max=float(s.max()), n_normal=int(len(s)))
        self.threshold = float(np.quantile(self.normalize(s), self.config.threshold_quantile))
        self.stats["threshold"] = self.threshold
        return dict(self.stats)

    def finish(self, data, standardize: bool = True) -> dict:
        """End-of-training hook: :meth:`fit_score_statistics` on the training data (``standardize``:
        the trainer's option, for items or folders)."""
        return self.fit_score_statistics(data, standardize)

    def _need_stats(self) -> None:
        if not self.stats:
            raise GeochangeError("rscvae: no score statistics (a checkpoint saved before training ended); "
                                 "call fit_score_statistics(training data)")

    def extra_state(self) -> dict:
        """E[l_mut], E[l_recon], the min and max of Eq. 16 and the threshold (plain numbers)."""
        return dict(self.stats)

    def load_extra_state(self, state: dict) -> None:
        self.stats = {k: (int(v) if k == "n_normal" else float(v)) for k, v in (state or {}).items()}
        if "threshold" in self.stats:
            self.threshold = self.stats["threshold"]

    def params(self) -> dict:
        return {**super().params(), "score_statistics": dict(self.stats)}
