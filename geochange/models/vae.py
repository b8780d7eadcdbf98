"""Disentangled VAE for rare-event detection (Hamaguchi, Sakurada & Nakamura, CVPR 2019).

Two weight-shared VAE branches encode BEFORE and AFTER; each image gets *common* latents ``z_c``
(meant to hold what a pair shares: the content) and *specific* latents ``z_s`` (trivial events:
illumination, rotation, background), both diagonal Gaussians ``N(mu, sigma^2)``. What the paper
specifies, and how it is done here:

* **Representation loss** (Eq. 3): ``L = L_VAE(A) + L_VAE(B) + lambda1 L_sim + lambda2 L_act``,
  trained on negative (unchanged or unlabelled, "noisy negative") pairs only.
  ``L_VAE`` (Eq. 6): Gaussian likelihood ``p(x|z_c, z_s) = N(decoder(z), recon_sigma^2 I)`` plus
  ``KL(q(z_c|x) || N(0, I)) + KL(q(z_s|x) || N(0, I))``, the KL weighted by the annealing factor
  ``beta`` (App. B: 0 -> 1 over training for the aerial settings; 1 throughout for MNIST).
  ``L_sim`` (Eq. 7) is a distance between ``q(z_c|A)`` and ``q(z_c|B)``: the six of Table 5
  (:data:`DISTANCES`), Modified-L2 (Eq. 8) by default. ``L_act = L_sparsity + L_invmax`` (Eqs. 9-11)
  on the common means of both branches.
* **Architectures** (Table 6, App. B): ``arch="mnist"`` is Enc-MNIST (C-P-C-P-C-H, one hidden
  layer with 20 common and 10 specific latents); ``arch="vgg"`` is Enc-VGG, a hierarchical VLAE
  (Zhao, Song & Ermon 2017) on VGG-16: five hidden layers H1..H5 tapped after VGG stages 1-4 and a
  top 7x7 + 1x1 stage, each a convolution whose kernel spans most of its feature map (64, 32, 16,
  8, 1), with common features on H4 and H5 only ((c, s) = (0, 32) x 3, (16, 16) x 2). Decoders are
  symmetric (transposed convolutions, nearest upsampling for pooling); the VLAE ladder combines
  each level's latent on the way up (a transposed convolution of the level's ``z`` back to the tapped
  map, concatenated with the upward path, then a 1x1 convolution). ``arch="auto"`` (the default)
  takes Enc-MNIST for 28 px patches and Enc-VGG for any other side, settled from the training data
  (:meth:`DisentangledVAE.configure`) and stored so in checkpoints; without data, 28 px.
* **Fine-tuning** (Sec. 3.4, Eqs. 12-13): a classifier of three fully connected layers (100-100-2
  for MNIST, 2048-2048-2 aerial) on ``[mu_c(A), mu_c(B)]``, cross-entropy, encoder and classifier
  trained jointly with the encoder's learning rate x0.1; each epoch the negatives are undersampled
  at random to the number of positives. ``stage="finetune"`` selects this in :meth:`training_step`.
* **Anomaly mode** (Table 2): no labels; k-means (k = 2, FAISS, seeded: ``geochange.cluster``) on
  the distance between the common features of a pair; the cluster with the larger centre is change.
* **Hyper-parameters** (App. B) per architecture: Adam with weight decay 5e-4, 30 epochs; MNIST lr
  1e-3, batch 100, lambda1 = lambda2 = 1; aerial lr 1e-4 decayed linearly over the epochs, batch
  50, lambda1 = 10, lambda2 = 1, KL annealing; sparsity target s = 0.5 with L_invmax.

Choices the paper leaves open, or where this implementation departs from it:

* **Eq. 10 sign.** As printed, ``sum_i s log m_i + (1 - s) log(1 - m_i)`` is *maximal* at
  ``m_i = s``, so minimising it would push ``m_i`` away from the target. It is implemented as
  ``sum_i KL(s || m_i)`` (the cross-entropy minus its constant), minimised exactly at ``m_i = s``.
  ``m_i`` is the batch *mean* of ``|mu_i|`` (the text says "average"; the formula prints a sum). As
  ``|mu|`` is unbounded, ``m_i`` is clamped to [0.01, 0.99] and the KL continued linearly beyond
  (its tangent), so it stays convex, finite and keeps pulling ``m_i`` back to ``s``.
* ``L_invmax`` (Eq. 11) uses ``1 / (max_i |mu_i| + 0.01)`` so an all-zero code gives a large but
  finite loss.
* Enc-MNIST's third convolution is 4x4 (Table 6a prints 5x5 on a 4x4 map, which cannot give 1x1;
  4x4 is LeNet's fully connected ``ip1`` the table describes).
* Enc-VGG: Table 6 is for 128x128 inputs; ``patch`` follows the training data (build-wdc writes 128,
  which gives Table 6's H1..H5 maps of 65, 33, 17, 9, 2); without data it is 112 (the PCD protocol:
  49, 25, 13, 7, 1). Any multiple of 16 from 112 up works.
* **Enc-VGG speed** (``benchmarks/bench_vae_speed.py``, one CPU thread, 128 px, 4 pairs a step). As
  the paper builds it, a training pair took 40 s, 82 % of the forward time in H1's 64x64-kernel
  convolution and its transposed twin on the way back (0.07 T multiply-adds each per image, more
  than all of VGG-16). Kernels of 8 px and more (:data:`FFT_MIN_KERNEL`) now run through the FFT
  (:func:`fft_conv2d`, :func:`fft_conv_transpose2d`: the same layers and weights, the same outputs
  to float rounding): 4.7 s per pair. The rest is VGG-16's width, so ``width`` (a multiplier of its
  channel counts, not in the paper) defaults to 0.25 (channels 16, 32, 64, 128, 256): 0.67 s per pair
  (direct heads at that width: 10.1 s), a 150-pair epoch of a build-wdc dataset in 73 s. ``-p width=1``
  is Table 6b's VGG-16 (a GPU's setting). The two dates go through the encoder and decoder as one
  batch (shared weights, no batch normalisation: the same numbers, one pass).
* ``recon_sigma`` (the fixed std of ``p(x|z)``) is not given; inputs are standardised per band, so
  1.0 (one standard deviation) is the default, kept by measurement (``benchmarks/bench_vae_sigma.py``:
  Enc-MNIST, 3,000 negative digit pairs, 6 epochs, 3 seeds). A smaller sigma weighs reconstruction
  more and raises the KL (MNIST-R-like pairs, lambda1 = 1: 12.8 nats per image at 1.0, 27.1 at 0.5,
  50 at 0.25), and at 0.25 the common latents hold more of it than the specific ones (27.0 / 23.0
  nats; 4.9 / 7.9 at 1.0). But the common features are the more informative about the digit at every
  sigma (a linear probe's accuracy, Fig. 5's claim: 0.51 / 0.43 at 1.0, 0.46 / 0.37 at 0.25), all 30
  units stay active, and the common-feature distance separates changed pairs best at 1.0 (AUC 0.652
  at 1.0, 0.613 at 0.5, 0.570 at 0.25 on rotated digits; it rises with lambda1 at every sigma: 0.614,
  0.652, 0.684 for lambda1 = 0, 1, 10 at 1.0). Only on plain digits, with no trivial event to ignore,
  do 0.5 and 0.25 score higher (0.861 / 0.858 against 0.832). The likelihood is summed over pixels,
  the KL over latent units, ``L_sim`` averaged over units (Eq. 8 and likewise for the other
  distances), and everything averaged over the batch.
* Table 5's distances other than Modified-L2 are not defined in the paper: Jeffreys is ``KL(A||B) +
  KL(B||A)``, L2 / L1 act on the means, cosine is ``1 - cos(mu_A, mu_B)``, MMD is the closed-form
  squared MMD between the two Gaussians under a Gaussian kernel of bandwidth ``sqrt(dim)``.
  All but cosine and MMD are averaged over units.
* Table 2 gives no probability, only the clustering. For ``detect``, the anomaly probability is the
  posterior of the high-distance cluster under two equal-variance Gaussians at the k-means centres
  (pooled within-cluster variance, equal priors): monotone in the distance and 0.5 exactly at the
  k-means boundary. It is fitted by :meth:`DisentangledVAE.fit_anomaly` (or :meth:`finish` on the
  training data, or :meth:`fit` on a scene's windows) and stored in checkpoints.
* Inference uses the posterior means (no sampling), so scores repeat exactly.
* The under-sampled siamese CNN baseline of Table 3 is this model with ``stage="finetune"`` trained
  from scratch and ``encoder_lr_factor=1``: the same encoder (paper Table 7) and classifier.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from geochange.cluster import kmeans
from geochange.errors import GeochangeError
from geochange.models.base import Sample, TrainableModel
from geochange.models.rscvae import kl_gaussians, kl_standard_normal  # the same closed forms (Eq. 6)

ARCHS = ("auto", "mnist", "vgg")
STAGES = ("represent", "finetune")
DISTANCES = ("modified-l2", "jeffreys", "l2", "l1", "cosine", "mmd")  # Table 5
_CLAMP = 0.01  # sparsity: m_i clamped to [0.01, 0.99]; invmax: 1 / (max + 0.01)
MNIST_PATCH = 28  # Enc-MNIST's input side; arch=auto takes Enc-VGG for any other

#: Appendix B and Table 6 per architecture (values for fields left as None; ``patch`` only when no data
#: says otherwise: a model built without training data, detect's self-training).
ARCH_DEFAULTS: dict[str, dict] = {
    "mnist": dict(batch_size=100, lr=1e-3, lr_decay=False, lambda_sim=1.0, lambda_act=1.0, kl_anneal=0.0,
                  patch=MNIST_PATCH, common=(20,), specific=(10,), kernels=(1,), classifier=(100, 100)),
    "vgg": dict(batch_size=50, lr=1e-4, lr_decay=True, lambda_sim=10.0, lambda_act=1.0, kl_anneal=1.0,
                patch=112, common=(0, 0, 0, 16, 16), specific=(32, 32, 32, 16, 16), kernels=(64, 32, 16, 8, 1),
                classifier=(2048, 2048)),
}


@dataclass
class VAEConfig:
    """Hyper-parameters of the disentangled VAE; None takes the architecture's paper value (ARCH_DEFAULTS).

    ``arch="auto"`` and ``patch=None`` are settled by the training data (:meth:`settled`, called by the
    trainer before the network is built): the data's patch side, Enc-MNIST for 28 px, Enc-VGG otherwise.
    Checkpoints store the settled values, so ``detect`` rebuilds the same network.
    """

    arch: str = "auto"                        # "mnist": Enc-MNIST (Table 6a); "vgg": Enc-VGG (Table 6b);
    #                                           "auto": by the patch side, Enc-MNIST for 28 px, Enc-VGG otherwise
    stage: str = "represent"                  # what training_step optimises: Eq. 3 or Eq. 13 (fine-tuning)
    epochs: int = 30                          # App. B (both settings)
    batch_size: int | None = None             # App. B: 100 MNIST, 50 aerial
    lr: float | None = None                   # App. B: 1e-3 MNIST, 1e-4 aerial
    lr_decay: bool | None = None              # App. B: linear decay over the epochs (aerial only)
    weight_decay: float = 5e-4                # App. B (both)
    lambda_sim: float | None = None           # lambda1 of Eq. 3: 1 MNIST, 10 aerial (App. B); 0 = "VAE w/o sim."
    lambda_act: float | None = None           # lambda2 of Eq. 3: 1 (App. B)
    distance: str = "modified-l2"             # D of Eq. 7: one of DISTANCES (Table 5); Modified-L2 = Eq. 8
    sparsity: float = 0.5                     # s of Eq. 10 (App. B, Fig. 6)
    invmax: bool = True                       # add L_invmax (Eq. 11) to L_act (Fig. 6: it helps)
    kl_anneal: float | None = None            # share of training over which the KL weight rises 0 -> 1 (App. B
    #                                           aerial: all of it, 1.0; MNIST: none, 0.0)
    recon_sigma: float = 1.0                  # std of p(x|z) (not given; inputs are standardised; 1.0 by measurement)
    patch: int | None = None                  # input side; None: the training data's (without data: 28 MNIST,
    #                                           112 VGG, the PCD protocol; Table 6b lists 128)
    cell: int = 14                            # predict(): each cell x cell block scored by its centred patch (PCD)
    common: tuple[int, ...] | None = None     # common latent channels per hidden layer (Table 6)
    specific: tuple[int, ...] | None = None   # specific latent channels per hidden layer (Table 6)
    kernels: tuple[int, ...] | None = None    # hidden-layer kernel sizes (Table 6 / Table 8: 64, 32, 16, 8, 1)
    width: float = 0.25                       # Enc-VGG channel multiplier: 1.0 = VGG-16 (Table 6b); 0.25 for CPUs (ours)
    classifier: tuple[int, ...] | None = None  # hidden FC sizes of the event classifier (Sec. 4.2)
    encoder_lr_factor: float = 0.1            # fine-tuning: encoder lr x0.1 (Sec. 4.2); 1.0 = from-scratch baseline
    undersample: bool = True                  # fine-tuning: negatives undersampled to #positives (Sec. 3.4)
    scene_patches: int = 2000                 # detect without a checkpoint: noisy negatives cut from the pair (ours)
    scene_epochs: int = 10                    # detect without a checkpoint: epochs on them (ours; App. B: 30)
    prior_adjust: bool = False                # detect --labels: move the balanced classifier to the scene's prior
    #                                           (Saerens 2002); off: bench_labels mean kappa 0.146 on, 0.189 off
    marks_negatives: int = 500                # detect --labels: cheap negatives cropped from the scene (ours)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise GeochangeError(f"vae arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.stage not in STAGES:
            raise GeochangeError(f"vae stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.distance not in DISTANCES:
            raise GeochangeError(f"vae distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if not 0.0 < self.sparsity < 1.0:
            raise GeochangeError(f"vae sparsity must be in (0, 1), got {self.sparsity}")
        if self.arch == "auto" and self.patch is not None:
            self.arch = "mnist" if self.patch == MNIST_PATCH else "vgg"
        if self.arch == "auto":
            return   # settled by the training data (settled())
        for key, value in ARCH_DEFAULTS[self.arch].items():
            if key != "patch" and getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("common", "specific", "kernels", "classifier"):
            setattr(self, key, tuple(int(v) for v in getattr(self, key)))
        if not len(self.common) == len(self.specific) == len(self.kernels):
            raise GeochangeError("vae common, specific and kernels need one entry per hidden layer")
        if sum(self.common) < 1:
            raise GeochangeError("vae needs at least one common latent unit")
        if self.arch == "mnist" and len(self.kernels) != 1:
            raise GeochangeError("vae arch mnist has one hidden layer")
        if self.arch == "vgg" and len(self.kernels) != 5:
            raise GeochangeError("vae arch vgg has five hidden layers")
        if self.patch is None:
            return
        if self.arch == "mnist" and self.patch != MNIST_PATCH:
            raise GeochangeError(f"vae arch mnist takes {MNIST_PATCH}x{MNIST_PATCH} inputs (got patch {self.patch})")
        if self.arch == "vgg" and (self.patch < 112 or self.patch % 16):
            raise GeochangeError(f"vae arch vgg needs a patch that is a multiple of 16, at least 112 (got {self.patch})")
        if self.patch < self.cell or (self.patch - self.cell) % 2:
            raise GeochangeError(f"vae cell ({self.cell}) must fit in the patch ({self.patch}) with an even margin")

    def settled(self, patch: int | None = None) -> "VAEConfig":
        """This config with ``arch`` and ``patch`` decided: a ``patch`` left open takes ``patch`` (the
        training data's side), else the architecture's default (28 for auto and mnist, 112 for vgg)."""
        if self.patch is not None and self.arch != "auto":
            return self
        side = self.patch or patch or ARCH_DEFAULTS["vgg" if self.arch == "vgg" else "mnist"]["patch"]
        return dataclasses.replace(self, patch=int(side))


# -- losses: per-sample tensors (N,) unless said otherwise ----------------------------------------

def gaussian_nll(x, x_hat, sigma: float = 1.0):
    """``-log N(x; x_hat, sigma^2 I)`` per sample, summed over pixels (the likelihood term of Eq. 6)."""
    d = x[0].numel()
    sq = (x - x_hat).pow(2).flatten(1).sum(1)
    return 0.5 * sq / sigma ** 2 + d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))


def modified_l2(mu_a, logvar_a, mu_b, logvar_b):
    """Eq. 8: ``1/M sum_i (mu_A,i - mu_B,i)^2 / (sigma_A,i sigma_B,i)``."""
    return ((mu_a - mu_b).pow(2) * (-0.5 * (logvar_a + logvar_b)).exp()).flatten(1).mean(1)


def jeffreys(mu_a, logvar_a, mu_b, logvar_b):
    """Jeffreys divergence ``KL(A||B) + KL(B||A)`` of diagonal Gaussians, averaged over units (Table 5):
    ``1/M sum_i [(var_A + d^2) / (2 var_B) + (var_B + d^2) / (2 var_A) - 1]``, ``d = mu_A - mu_B``."""
    units = mu_a[0].numel()
    return (kl_gaussians(mu_a, logvar_a, mu_b, logvar_b) + kl_gaussians(mu_b, logvar_b, mu_a, logvar_a)) / units


def l2_distance(mu_a, logvar_a, mu_b, logvar_b):
    """Table 5 "L2": mean squared difference of the means (the variances are ignored)."""
    return (mu_a - mu_b).pow(2).flatten(1).mean(1)


def l1_distance(mu_a, logvar_a, mu_b, logvar_b):
    """Table 5 "L1": mean absolute difference of the means."""
    return (mu_a - mu_b).abs().flatten(1).mean(1)


def cosine_distance(mu_a, logvar_a, mu_b, logvar_b):
    """Table 5 "Cosine": ``1 - cos(mu_A, mu_B)``."""
    import torch.nn.functional as F

    return 1.0 - F.cosine_similarity(mu_a.flatten(1), mu_b.flatten(1), dim=1, eps=1e-8)


def mmd_gaussians(mu_a, logvar_a, mu_b, logvar_b):
    """Table 5 "MMD": squared maximum mean discrepancy between ``N(mu_A, var_A)`` and ``N(mu_B, var_B)``
    under the kernel ``exp(-|x - y|^2 / (2 h^2))``, ``h^2`` = number of units, in closed form:
    ``K(P, Q) = prod_i (1 + (var_P,i + var_Q,i) / h^2)^(-1/2) exp(-d_i^2 / (2 (h^2 + var_P,i + var_Q,i)))``,
    ``MMD^2 = K(A, A) + K(B, B) - 2 K(A, B)``."""
    import torch

    mu_a, mu_b = mu_a.flatten(1), mu_b.flatten(1)
    var_a, var_b = logvar_a.flatten(1).exp(), logvar_b.flatten(1).exp()
    h2 = float(mu_a.shape[1])

    def log_k(m1, v1, m2, v2):
        s = v1 + v2
        return (-0.5 * torch.log1p(s / h2) - 0.5 * (m1 - m2).pow(2) / (h2 + s)).sum(1)

    return (log_k(mu_a, var_a, mu_a, var_a).exp() + log_k(mu_b, var_b, mu_b, var_b).exp()
            - 2.0 * log_k(mu_a, var_a, mu_b, var_b).exp())


_DISTANCE_FNS = {"modified-l2": modified_l2, "jeffreys": jeffreys, "l2": l2_distance, "l1": l1_distance,
                 "cosine": cosine_distance, "mmd": mmd_gaussians}


def latent_distance(name: str, mu_a, logvar_a, mu_b, logvar_b):
    """The distance ``name`` (one of :data:`DISTANCES`) between two batches of diagonal Gaussians, per sample."""
    return _DISTANCE_FNS[name](mu_a, logvar_a, mu_b, logvar_b)


def _kl_bernoulli(s: float, m):
    """``KL(Bernoulli(s) || Bernoulli(m))`` elementwise."""
    return s * math.log(s) + (1 - s) * math.log(1 - s) - s * m.log() - (1 - s) * (1 - m).log()


def sparsity_loss(mu_c, s: float = 0.5):
    """Eq. 10, minimised at ``m_i = s``: ``sum_i KL(s || m_i)`` with ``m_i`` the batch mean of ``|mu_i|``.

    Eq. 10 as printed (``sum_i s log m_i + (1 - s) log(1 - m_i)``) is the *negative* cross-entropy,
    which is maximal at ``m_i = s``; its negation minus the constant entropy of ``s`` is this KL.
    Outside [0.01, 0.99] the KL is continued by its tangent, so a unit with ``m_i >= 1`` (``|mu|``
    is unbounded) still has a finite loss and a gradient back toward ``s``. Returns a scalar.
    """
    m = mu_c.flatten(1).abs().mean(0)
    mc = m.clamp(_CLAMP, 1.0 - _CLAMP)
    slope = -s / mc + (1 - s) / (1 - mc)  # d KL / d m at the clamped point
    return (_kl_bernoulli(s, mc) + slope.detach() * (m - mc)).sum()


def invmax_loss(mu_c):
    """Eq. 11: ``1/B sum_k 1 / max_i |mu^k_i|`` (``+ 0.01`` in the denominator, finite at zero). A scalar."""
    return (1.0 / (mu_c.flatten(1).abs().amax(1) + _CLAMP)).mean()


def activation_loss(mu_c, s: float = 0.5, invmax: bool = True):
    """Eq. 9: ``L_act = L_sparsity + L_invmax`` on a batch of common means (a scalar)."""
    loss = sparsity_loss(mu_c, s)
    return loss + invmax_loss(mu_c) if invmax else loss


def kl_weight(progress: float, anneal: float) -> float:
    """KL annealing (App. B): the weight rises linearly from 0 to 1 over the first ``anneal`` share of
    training (``progress`` in [0, 1]); ``anneal = 0`` keeps it at 1."""
    return 1.0 if anneal <= 0 else float(min(1.0, max(0.0, progress / anneal)))


# -- large-kernel convolutions through the FFT ------------------------------------------------------

#: kernels at least this wide go through the FFT (the hidden layers H1..H4 of Enc-VGG: 64, 32, 16, 8)
FFT_MIN_KERNEL = 8


def _spectral_mix(a, b):
    """``out[n, o] = sum_c a[n, c] * b[c, o]`` at every frequency: ``a`` (N, C, h, f), ``b`` (C, O, h, f)
    complex -> (N, O, h, f), as one batched matrix product over the frequencies."""
    import torch

    n, c, h, f = a.shape
    out = torch.bmm(a.permute(2, 3, 0, 1).reshape(h * f, n, c), b.permute(2, 3, 0, 1).reshape(h * f, c, -1))
    return out.reshape(h, f, n, -1).permute(2, 3, 0, 1)


def fft_conv2d(x, weight, bias=None):
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding, no groups) computed through the FFT.

    A valid cross-correlation of an ``H x W`` map with a ``k1 x k2`` kernel is the circular one of the
    same size, cropped to ``(H - k1 + 1) x (W - k2 + 1)``: no output index wraps around, so the FFT
    needs no padding beyond the map. Cost ``O(N C O H W)`` for the products instead of ``O(N C O H W
    k1 k2)``: for Enc-VGG's H1 (a 64x64 kernel on a 128x128 map) about 4,000 times fewer
    multiplications. Computed in float32 (complex64), whatever the input's precision.
    """
    import torch

    size = tuple(x.shape[-2:])
    k1, k2 = weight.shape[-2:]
    spec = torch.fft.rfft2(x.float(), s=size)
    kernel = torch.fft.rfft2(weight.float(), s=size).conj().transpose(0, 1)   # (C, O, h, f)
    y = torch.fft.irfft2(_spectral_mix(spec, kernel), s=size)[..., :size[0] - k1 + 1, :size[1] - k2 + 1]
    return y if bias is None else y + bias.float()[:, None, None]


def fft_conv_transpose2d(z, weight, bias=None):
    """``F.conv_transpose2d(z, weight, bias)`` (stride 1, no padding) through the FFT: the full
    convolution of an ``h x w`` map with a ``k1 x k2`` kernel has side ``h + k1 - 1``, the FFT size,
    so again nothing wraps around. ``weight`` is (in, out, k1, k2) as ``nn.ConvTranspose2d`` keeps it."""
    import torch

    k1, k2 = weight.shape[-2:]
    size = (z.shape[-2] + k1 - 1, z.shape[-1] + k2 - 1)
    spec = torch.fft.rfft2(z.float(), s=size)
    y = torch.fft.irfft2(_spectral_mix(spec, torch.fft.rfft2(weight.float(), s=size)), s=size)
    return y if bias is None else y + bias.float()[:, None, None]


# -- networks ---------------------------------------------------------------------------------------

def _vgg_channels(width: float) -> list[int]:
    return [max(4, int(round(c * width))) for c in (64, 128, 256, 512, 1024)]


def _build_net(cfg: VAEConfig, in_bands: int):
    import torch
    import torch.nn as nn

    def relu_convs(specs, transpose=False):
        layers = []
        for cin, cout, k, pad in specs:
            conv = nn.ConvTranspose2d if transpose else nn.Conv2d
            layers += [conv(cin, cout, k, padding=pad), nn.ReLU(inplace=True)]
        return layers

    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731 - mirror of a 2x2 max-pool

    class HiddenConv(nn.Conv2d):
        """Conv(H_l): an ``nn.Conv2d`` (same parameters, same checkpoints) that runs wide kernels through the FFT."""

        def forward(self, x):
            if min(self.kernel_size) >= FFT_MIN_KERNEL:
                return fft_conv2d(x, self.weight, self.bias)
            return super().forward(x)

    class HiddenConvTranspose(nn.ConvTranspose2d):
        """The ladder's way back from a level's ``z`` to its tapped map, wide kernels through the FFT."""

        def forward(self, z, output_size=None):
            if min(self.kernel_size) >= FFT_MIN_KERNEL and output_size is None:
                return fft_conv_transpose2d(z, self.weight, self.bias)
            return super().forward(z, output_size)

    if cfg.arch == "mnist":  # Table 6a
        enc_stages = [nn.Sequential(*relu_convs([(in_bands, 20, 5, 0)]), nn.MaxPool2d(2),
                                    *relu_convs([(20, 50, 5, 0)]), nn.MaxPool2d(2),
                                    *relu_convs([(50, 500, 4, 0)]))]
        taps = [500]
        dec_stages = [nn.Sequential(*relu_convs([(500, 50, 4, 0)], True), up(),
                                    *relu_convs([(50, 20, 5, 0)], True), up(),
                                    nn.ConvTranspose2d(20, in_bands, 5))]
    else:  # Table 6b: VGG-16 stages, taps H1..H5
        c1, c2, c3, c4, c5 = _vgg_channels(cfg.width)
        pool = lambda: nn.MaxPool2d(2)  # noqa: E731
        enc_stages = [nn.Sequential(*relu_convs([(in_bands, c1, 3, 1), (c1, c1, 3, 1)])),
                      nn.Sequential(pool(), *relu_convs([(c1, c2, 3, 1), (c2, c2, 3, 1)])),
                      nn.Sequential(pool(), *relu_convs([(c2, c3, 3, 1), (c3, c3, 3, 1), (c3, c3, 3, 1)])),
                      nn.Sequential(pool(), *relu_convs([(c3, c4, 3, 1), (c4, c4, 3, 1), (c4, c4, 3, 1)])),
                      nn.Sequential(pool(), *relu_convs([(c4, c5, 7, 0), (c5, c5, 1, 0)]))]
        taps = [c1, c2, c3, c4, c5]
        # decoder stage l maps level l's combined map back to the input of encoder stage l
        dec_stages = [nn.Sequential(*relu_convs([(c1, c1, 3, 1)]), nn.Conv2d(c1, in_bands, 3, padding=1)),
                      nn.Sequential(*relu_convs([(c2, c2, 3, 1), (c2, c1, 3, 1)]), up()),
                      nn.Sequential(*relu_convs([(c3, c3, 3, 1), (c3, c3, 3, 1), (c3, c2, 3, 1)]), up()),
                      nn.Sequential(*relu_convs([(c4, c4, 3, 1), (c4, c4, 3, 1), (c4, c3, 3, 1)]), up()),
                      nn.Sequential(*relu_convs([(c5, c5, 1, 0), (c5, c4, 7, 0)], True), up())]

    class Net(nn.Module):
        """Encoder stages with a hidden (latent) head per tap, a ladder decoder, and the event classifier."""

        def __init__(self) -> None:
            super().__init__()
            self.common, self.specific = cfg.common, cfg.specific
            self.enc = nn.ModuleList(enc_stages)
            # Conv(H_l): mean and log-variance of (common, specific) in one convolution per level
            self.hidden = nn.ModuleList(HiddenConv(t, 2 * (c + s), k) for t, c, s, k in
                                        zip(taps, cfg.common, cfg.specific, cfg.kernels))
            # the ladder: each level's z back to its tapped map; the top level starts the decoder
            self.unhidden = nn.ModuleList(HiddenConvTranspose(c + s, t, k) for t, c, s, k in
                                          zip(taps, cfg.common, cfg.specific, cfg.kernels))
            self.merge = nn.ModuleList(nn.Conv2d(2 * t, t, 1) for t in taps[:-1])
            self.dec = nn.ModuleList(dec_stages)
            side = _latent_sides(cfg)
            n_common = sum(c * a * a for c, a in zip(cfg.common, side))
            sizes = [2 * n_common, *cfg.classifier, 2]
            fc = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                fc += [nn.Linear(a, b), nn.ReLU(inplace=True)]
            self.classifier = nn.Sequential(*fc[:-1])

        def encoder_parameters(self):
            return [*self.enc.parameters(), *self.hidden.parameters()]

        def encode(self, x) -> list[tuple]:
            """Per hidden layer: ``(mu_c, logvar_c, mu_s, logvar_s)``, each (N, channels, h, w)."""
            out, h = [], x
            for stage, head, c, s in zip(self.enc, self.hidden, self.common, self.specific):
                h = stage(h)
                mu_c, mu_s, lv_c, lv_s = torch.split(head(h), [c, s, c, s], dim=1)
                out.append((mu_c, lv_c, mu_s, lv_s))
            return out

        def decode(self, zs: Sequence) -> "torch.Tensor":
            """The mean of ``p(x|z)`` from one ``z = [z_c, z_s]`` per hidden layer (top-down ladder)."""
            g = None
            for level in reversed(range(len(zs))):
                v = torch.relu(self.unhidden[level](zs[level]))
                g = v if g is None else torch.relu(self.merge[level](torch.cat([g, v], 1)))
                g = self.dec[level](g)
            return g

        def common_features(self, levels: Sequence[tuple]) -> tuple:
            """Flattened common means and log-variances (N, D_c) of the levels that have common units."""
            kept = [lv for lv, c in zip(levels, self.common) if c > 0]
            return (torch.cat([mu.flatten(1) for mu, _, _, _ in kept], 1),
                    torch.cat([lv.flatten(1) for _, lv, _, _ in kept], 1))

        def classify(self, x_a, x_b):
            """Event logits (N, 2) from ``[mu_c(A), mu_c(B)]`` (Eq. 12)."""
            mu_a, _ = self.common_features(self.encode(x_a))
            mu_b, _ = self.common_features(self.encode(x_b))
            return self.classifier(torch.cat([mu_a, mu_b], 1))

    return Net()


def _patch_hint(side: int) -> str:
    """Which ``-p`` settings fit patches of ``side`` pixels (for messages)."""
    if side == MNIST_PATCH:
        return "give -p arch=mnist, or leave arch at auto (the default)"
    if side >= 112 and side % 16 == 0:
        return f"give -p arch=vgg -p patch={side}, or leave arch and patch at auto (the default)"
    return (f"cut the data at {MNIST_PATCH} px (Enc-MNIST) or at a multiple of 16 from 112 px (Enc-VGG), "
            "e.g. geochange tile --size 112")


def _latent_sides(cfg: VAEConfig) -> list[int]:
    """Spatial side of each hidden layer's latent map for ``cfg.patch`` inputs."""
    if cfg.arch == "mnist":
        return [1]
    p = cfg.patch
    taps = [p, p // 2, p // 4, p // 8, p // 16 - 6]
    sides = [t - k + 1 for t, k in zip(taps, cfg.kernels)]
    if min(sides) < 1:
        raise GeochangeError(f"vae: hidden kernels {cfg.kernels} do not fit a {p}x{p} patch")
    return sides


# -- the model ------------------------------------------------------------------------------------

class DisentangledVAE(TrainableModel):
    """The disentangled VAE (Hamaguchi et al. 2019): representation, fine-tuned classifier, anomaly mode."""

    name = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or VAEConfig(), device)
        self.anomaly: dict = {}
        self.scene_prior: float | None = None  # detect --labels: the scene's share of events (Saerens 2002)
        self._steps_per_epoch = 0
        self._step = 0

    # -- TrainableModel ---------------------------------------------------------------------------
    def configure(self, data) -> None:
        """Settle ``arch="auto"`` and an open ``patch`` by the training data's patch side (before build);
        refuse, saying which ``-p`` to give, a patch side the configured architecture cannot take."""
        h, w = data.patch_shape
        if h != w:
            raise GeochangeError(f"vae takes square patches; the training data's are {h}x{w}")
        cfg = self.config
        if cfg.patch is not None and cfg.patch != h:
            raise GeochangeError(f"vae ({cfg.arch}) is set to {cfg.patch}x{cfg.patch} patches, the training data's "
                                 f"are {h}x{h}; {_patch_hint(h)}")
        try:
            self.config = cfg.settled(h)
        except GeochangeError as exc:
            raise GeochangeError(f"vae: the training data's patches are {h}x{h}, and "
                                 f"{str(exc).removeprefix('vae ')}; {_patch_hint(h)}") from None

    def build(self, in_bands: int) -> None:
        self.config = self.config.settled()   # without training data (configure): the architecture's default side
        self.in_bands = int(in_bands)
        self.net = _build_net(self.config, self.in_bands)

    def make_optimizer(self):
        """Adam with weight decay 5e-4 (App. B); fine-tuning: encoder at lr x ``encoder_lr_factor`` (Sec. 4.2)."""
        import torch

        cfg, net = self.config, self.net
        if cfg.stage == "finetune":
            groups = [{"params": net.encoder_parameters(), "lr": cfg.lr * cfg.encoder_lr_factor},
                      {"params": list(net.classifier.parameters()), "lr": cfg.lr}]
        else:
            groups = [{"params": [*net.encoder_parameters(), *net.unhidden.parameters(), *net.merge.parameters(),
                                  *net.dec.parameters()], "lr": cfg.lr}]
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def make_scheduler(self, optimizer, epochs: int, steps_per_epoch: int):
        """Linear decay of the lr with the epochs (App. B, aerial); also remembers the epoch length for KL annealing."""
        import torch

        self._steps_per_epoch = max(1, int(steps_per_epoch))
        if not self.config.lr_decay:
            return None
        spe = self._steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - (step // spe) / max(1, epochs)))

    def select(self, epoch: int, index, rng: np.random.Generator) -> np.ndarray:
        """Representation: every pair not known to be changed (noisy negatives). Fine-tuning: all
        labelled positives and as many negatives drawn at random each epoch (Sec. 3.4)."""
        labels = index["label"].to_numpy()
        if self.config.stage == "represent":
            chosen = np.flatnonzero(labels != 1)
            if len(chosen) == 0:
                raise GeochangeError("vae: no unchanged or unlabelled pairs to learn the representation from")
            return chosen
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        if len(pos) == 0 or len(neg) == 0:
            raise GeochangeError(f"vae fine-tuning needs changed and unchanged labelled pairs: it has {len(pos)} "
                                 f"changed, {len(neg)} unchanged, needs at least 1 of each; add labelled pairs of the "
                                 "missing kind")
        if self.config.undersample and len(neg) > len(pos):
            neg = np.sort(rng.choice(neg, size=len(pos), replace=False))
        return np.concatenate([pos, neg])

    def start_epoch(self, epoch: int, data) -> dict:
        self._step = 0
        return {}

    def training_step(self, batch: dict, epoch: int) -> dict:
        x_a, x_b = batch["before"], batch["after"]
        side = self.config.patch
        if x_a.shape[-2:] != (side, side):
            raise GeochangeError(f"vae ({self.config.arch}) takes {side}x{side} patches, got "
                                 f"{tuple(x_a.shape[-2:])}; {_patch_hint(x_a.shape[-1])}")
        if self.config.stage == "finetune":
            return self._finetune_step(x_a, x_b, batch["patch_label"])
        epochs = max(1, int(self.config.epochs))
        progress = (epoch + (self._step / self._steps_per_epoch if self._steps_per_epoch else 0.0)) / epochs
        self._step += 1
        return self.representation_losses(x_a, x_b, kl_weight(progress, self.config.kl_anneal))

    def representation_losses(self, x_a, x_b, beta: float = 1.0) -> dict:
        """Eq. 3 on a batch of negative pairs, with its terms (each averaged over the batch)."""
        import torch

        cfg, net = self.config, self.net
        n = len(x_a)
        x = torch.cat([x_a, x_b])  # both branches in one pass: the weights are shared (and there is no BN)
        # losses in float32 (exp of log-variances overflows float16 under CUDA autocast)
        levels = [tuple(t.float() for t in level) for level in net.encode(x)]
        zs = [torch.cat([mu_c + torch.randn_like(mu_c) * (0.5 * lv_c).exp(),
                         mu_s + torch.randn_like(mu_s) * (0.5 * lv_s).exp()], 1)
              for mu_c, lv_c, mu_s, lv_s in levels]  # Eq. 2
        recon = gaussian_nll(x.float(), net.decode(zs).float(), cfg.recon_sigma)
        kl = sum(kl_standard_normal(mu_c, lv_c) + kl_standard_normal(mu_s, lv_s) for mu_c, lv_c, mu_s, lv_s in levels)
        mu, lv = net.common_features(levels)
        rec_a, rec_b, kl_a, kl_b = recon[:n].mean(), recon[n:].mean(), kl[:n].mean(), kl[n:].mean()
        mu_a, mu_b, lv_a, lv_b = mu[:n], mu[n:], lv[:n], lv[n:]
        l_vae = rec_a + rec_b + beta * (kl_a + kl_b)
        l_sim = latent_distance(cfg.distance, mu_a, lv_a, mu_b, lv_b).mean()
        l_act = activation_loss(torch.cat([mu_a, mu_b]), cfg.sparsity, cfg.invmax)
        loss = l_vae + cfg.lambda_sim * l_sim + cfg.lambda_act * l_act
        return {"loss": loss, "recon": (rec_a + rec_b).detach(), "kl": (kl_a + kl_b).detach(),
                "sim": l_sim.detach(), "act": l_act.detach(), "beta": torch.tensor(float(beta))}

    def _finetune_step(self, x_a, x_b, target) -> dict:
        import torch.nn.functional as F

        known = target >= 0
        if not bool(known.any()):
            raise GeochangeError("vae fine-tuning got a batch without labelled pairs")
        logits = self.net.classify(x_a[known], x_b[known]).float()
        loss = F.cross_entropy(logits, target[known])  # Eq. 13
        acc = (logits.argmax(1) == target[known]).float().mean()
        return {"loss": loss, "accuracy": acc.detach()}

    # -- scoring ----------------------------------------------------------------------------------
    def _batches(self, before: np.ndarray, after: np.ndarray, batch_size: int):
        import torch

        for i in range(0, len(before), batch_size):
            yield (torch.as_tensor(np.ascontiguousarray(before[i:i + batch_size], np.float32), device=self.device),
                   torch.as_tensor(np.ascontiguousarray(after[i:i + batch_size], np.float32), device=self.device))

    def common_distance(self, before: np.ndarray, after: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The configured distance between the common posteriors of each pair (N,) (Table 2's feature)."""
        import torch

        self._need_net()
        out = []
        with torch.no_grad():
            for a, b in self._batches(before, after, batch_size):
                mu_a, lv_a = self.net.common_features(self.net.encode(a))
                mu_b, lv_b = self.net.common_features(self.net.encode(b))
                out.append(latent_distance(self.config.distance, mu_a, lv_a, mu_b, lv_b).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def classifier_probability(self, before: np.ndarray, after: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probability of an event (class 1) per pair (N,) from the fine-tuned classifier."""
        import torch

        self._need_net()
        out = []
        with torch.no_grad():
            for a, b in self._batches(before, after, batch_size):
                out.append(torch.softmax(self.net.classify(a, b).float(), 1)[:, 1].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def fit_anomaly(self, before: np.ndarray, after: np.ndarray, seed: int = 0) -> dict:
        """Table 2's anomaly mode: k-means (k = 2) on the common-feature distances of these pairs
        ((N, C, patch, patch) each). The higher centre is the event cluster; stored in checkpoints."""
        d = self.common_distance(before, after).astype(np.float64)
        if len(d) < 2:
            raise GeochangeError(f"vae anomaly mode: {len(d)} pair{'s' if len(d) != 1 else ''} to cluster, needs at "
                                 "least 2 (k-means, k = 2); add pairs to the training data or the scene sample")
        centres, labels = kmeans(d[:, None].astype(np.float32), 2, seed=seed, gpu=False)
        hi = int(np.argmax(centres[:, 0]))
        c_lo, c_hi = float(centres[1 - hi, 0]), float(centres[hi, 0])
        if not c_hi - c_lo > 1e-6 * abs(c_hi):   # one value: the posterior would be 0.5 everywhere (all "change")
            raise GeochangeError(f"vae anomaly mode: the common-feature distances of the {len(d)} pairs are all "
                                 f"{c_hi:.6g}, nothing to split into event and non-event; add pairs that differ "
                                 "(are both dates copies of each other?)")
        resid = d - np.where(labels == hi, c_hi, c_lo)
        var = float(max(resid.var(), 1e-12 * max(1.0, c_hi - c_lo) ** 2, 1e-12))
        self.anomaly = {"low": c_lo, "high": c_hi, "var": var, "n": int(len(d)),
                        "events": int(np.count_nonzero(labels == hi))}
        return dict(self.anomaly)

    def anomaly_probability(self, distances: np.ndarray) -> np.ndarray:
        """Posterior of the event cluster for these distances: two equal-variance Gaussians at the
        k-means centres, equal priors (0.5 exactly at the k-means boundary)."""
        if not self.anomaly:
            raise GeochangeError("vae: the anomaly mode is not fitted; fine-tune the model, or call "
                                 "fit_anomaly / finish on training pairs first")
        lo, hi, var = self.anomaly["low"], self.anomaly["high"], self.anomaly["var"]
        logit = (hi - lo) * (np.asarray(distances, np.float64) - 0.5 * (lo + hi)) / var
        return (0.5 * (1.0 + np.tanh(0.5 * np.clip(logit, -80, 80)))).astype(np.float32)

    def score_pairs(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Change probability per patch pair (N,) for (N, C, patch, patch) arrays: the fine-tuned
        classifier's probability, or the anomaly posterior of a representation-only model.
        A ``PatchScorer`` for :func:`geochange.engine.patchwise.patch_heatmap`."""
        if self.config.stage == "finetune":
            p = self.classifier_probability(before, after)
            if self.scene_prior is None:
                return p
            from geochange.threshold import adjust_to_prior

            return adjust_to_prior(p, self.scene_prior)
        return self.anomaly_probability(self.common_distance(before, after))

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Dense change probability (N, h, w) by the PCD protocol: every ``cell x cell`` block takes the
        score of the ``patch x patch`` pair centred on it (geochange.engine.patchwise)."""
        from geochange.device import torch_threads
        from geochange.engine.patchwise import patch_heatmap

        with torch_threads(1, self.device):
            return patch_heatmap(self.score_pairs, before, after, self.config.patch, self.config.cell)

    # -- fitting the anomaly mode -----------------------------------------------------------------
    def finish(self, data, max_pairs: int = 20_000, seed: int = 0, standardize: bool = True) -> dict:
        """End-of-training hook: fit the anomaly mode on up to ``max_pairs`` training pairs (``data``:
        the trainer's :class:`~geochange.train.data.TrainData`, or the items / dataset folder trained
        on, with the trainer's ``standardize``)."""
        from geochange.train.data import TrainData, open_training_data

        if not isinstance(data, TrainData):
            data = TrainData(open_training_data(data), standardize, self.device)
        positions = np.arange(len(data))
        if len(positions) > max_pairs:
            positions = np.sort(np.random.default_rng(seed).choice(positions, max_pairs, replace=False))
        before, after = [], []
        for batch in data.batches(positions, 256):
            before.append(batch["before"].cpu().numpy())
            after.append(batch["after"].cpu().numpy())
        return self.fit_anomaly(np.concatenate(before), np.concatenate(after), seed)

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        """``detect`` without a checkpoint: train the representation on ``scene_patches`` noisy negatives
        of the scene itself (``scene_epochs``), then the anomaly mode (the trainer's ``finish``).
        With a representation already trained: fit the anomaly mode on the pairs of patches tiling
        each sampled window (fully valid ones). Fine-tuned models have nothing to fit."""
        if self.config.stage == "finetune":
            return
        if self.net is None:
            from geochange.train.trainer import train_on_scene

            train_on_scene(self, samples, patch=self.config.settled().patch, patches=self.config.scene_patches,
                           epochs=self.config.scene_epochs, seed=seed)
            return
        p = self.config.patch
        before, after = [], []
        for b, a, valid in samples:
            for r in range(0, b.shape[1] - p + 1, p):
                for c in range(0, b.shape[2] - p + 1, p):
                    if valid[r:r + p, c:c + p].all():
                        before.append(b[:, r:r + p, c:c + p])
                        after.append(a[:, r:r + p, c:c + p])
        if len(before) < 2:
            raise GeochangeError(f"vae: the scene sample holds {len(before)} fully valid {p}x{p} patch pair"
                                 f"{'s' if len(before) != 1 else ''}, the anomaly mode needs at least 2; a larger or "
                                 "less empty scene sample")
        self.fit_anomaly(np.stack(before), np.stack(after), seed)

    def marks_sizes(self) -> tuple[int, int]:
        """The settled architecture's patch side (28 for ``auto``: Enc-MNIST) and ``marks_negatives``."""
        return int(self.config.settled().patch), int(self.config.marks_negatives)

    def fit_marks(self, scene, seed: int = 0, options=None) -> dict:
        """``detect --labels``, the Table 3 protocol: the representation learns from the scene's unlabelled
        pairs (the cheap negatives, ``scene_epochs``; Sec. 3.3), then the event classifier is fine-tuned
        (Eq. 13, encoder at x``encoder_lr_factor``) on the patches around the marks, changed when they hold
        a changed pixel, and the negatives under-sampled to the positives each epoch (Sec. 3.4)."""
        import dataclasses

        from geochange.train.marks import marks_options
        from geochange.train.trainer import train

        cfg = self.config
        self.config = dataclasses.replace(cfg, stage="represent")
        train(self, scene.negatives, marks_options(options, self.device, seed, epochs=cfg.scene_epochs, out=None,
                                                   resume=False))
        self.config = dataclasses.replace(self.config, stage="finetune", epochs=cfg.epochs)
        self.scene_prior = None
        summary = train(self, scene.items(), marks_options(options, self.device, seed))
        if cfg.prior_adjust and cfg.undersample and scene.negatives:  # balanced: moved to the scene's share
            from geochange.threshold import estimate_prior

            b = np.stack([it["before"] for it in scene.negatives])
            a = np.stack([it["after"] for it in scene.negatives])
            self.scene_prior = estimate_prior(self.classifier_probability(b, a))
        return summary

    def _need_net(self) -> None:
        if self.net is None:
            raise GeochangeError("vae: the network is not built (train it or load a checkpoint)")

    def extra_state(self) -> dict:
        """The fitted anomaly clustering and scene prior (plain numbers)."""
        return {**self.anomaly, **({"scene_prior": self.scene_prior} if self.scene_prior is not None else {})}

    def load_extra_state(self, state: dict) -> None:
        state = dict(state or {})
        prior = state.pop("scene_prior", None)
        self.scene_prior = float(prior) if prior is not None else None
        self.anomaly = {k: (int(v) if k in ("n", "events") else float(v)) for k, v in state.items()}

    def params(self) -> dict:
        return {**super().params(), "anomaly": dict(self.anomaly), "scene_prior": self.scene_prior}
