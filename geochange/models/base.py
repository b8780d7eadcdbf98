"""The one small interface between the detect engine and every model.

A model sees arrays, never rasters, windows or files: ``fit`` gets windows sampled over the whole
scene (for models that learn from the pair itself, or fit a scene-wide threshold), ``predict``
gets a batch of window pairs and returns a change probability per pixel. The engine does the rest
(reading, blending overlapping windows, thresholding at ``threshold``, writing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, is_dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from geochange.errors import GeochangeError

# One sampled window: before (C, h, w), after (C, h, w), valid (h, w); normalised, float32.
Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


class ChangeModel(ABC):
    """Base class of detect models.

    ``predict(before, after, valid)`` takes ``(N, C, h, w)`` float32 arrays of both dates
    (radiometrically normalised, invalid pixels zeroed) and a ``(N, h, w)`` bool validity mask,
    and returns ``(N, h, w)`` float32 change probabilities in [0, 1]. Invalid pixels may hold any
    value: the engine never counts them.
    """

    name: ClassVar[str]
    #: the dataclass of hyper-parameters (paper defaults), stored in summary.json and checkpoints
    config_class: ClassVar[type]
    #: probability at or above which a pixel is "changed" in change_mask.tif
    threshold: float = 0.5
    #: False for models that never touch torch: they run on the CPU and skip importing it
    uses_torch: ClassVar[bool] = True
    #: number of change types a model tells apart (0: none); typed models implement predict_with_types
    n_types: int = 0
    #: how many pixels away a pixel's probability still depends on the input: 0 for a per-pixel model,
    #: which the engine runs on full-width strips without overlap (engine.plan.plan_for); None
    #: (networks): unknown, windows of --tile overlap by --overlap
    context_px: int | None = None

    def __init__(self, config: Any = None, device: str = "cpu") -> None:
        self.config = config
        self.device = device

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        """Learn from the scene itself (thresholds, clusters, self-training). Default: nothing to fit."""

    @abstractmethod
    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change probability for a batch of window pairs."""

    def predict_with_types(self, before: np.ndarray, after: np.ndarray,
                           valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probability and change type in one pass, for models with ``n_types > 0``.

        Types are ``(N, h, w)`` uint8 in 1..n_types: the type each pixel has *if* it is changed;
        the engine writes 0 where the blended probability says unchanged and 255 where invalid.
        """
        raise NotImplementedError(f"{self.name} does not tell change types apart")

    def params(self) -> dict:
        """Configuration and fitted values, JSON-ready, for summary.json."""
        cfg = asdict(self.config) if is_dataclass(self.config) else {}
        return {"name": self.name, "config": cfg, "threshold": self.threshold}


class TrainableModel(ChangeModel):
    """A change model with a torch network, trained by the one shared trainer (``geochange.train``).

    The trainer owns everything around the network: data loading and standardisation, batches,
    device and AMP, optimiser steps, checkpoints every epoch, ``--resume``, the metrics CSV and
    progress. A model adds only what is its own:

    * :meth:`build` creates ``self.net`` (a ``torch.nn.Module``) for ``in_bands`` bands per date
      (after :meth:`configure`, which may settle settings that follow the data);
    * :meth:`training_step` returns the loss of one batch (and any scalars worth logging);
    * optional hooks: :meth:`make_optimizer` / :meth:`make_scheduler` (paper's optimiser),
      :meth:`select` (which samples an epoch trains on: warm-up subsets, undersampling),
      :meth:`start_epoch` (work on the whole data between epochs: re-clustering, KL annealing),
      :meth:`finish` (fit what scoring needs once training is over: score statistics, anomaly k-means),
      :meth:`extra_state` / :meth:`load_extra_state` (fitted values that are not parameters).

    A batch is a dict of tensors on the training device: ``before`` and ``after`` ``(N, C, H, W)``
    float32 (standardised per band), ``label`` ``(N, H, W)`` int64 (0 unchanged, 1 changed,
    255 unknown: ignore it), ``patch_label`` ``(N,)`` int64 (1 if any pixel changed, 0 if none,
    -1 if nothing is labelled). Hyper-parameters the trainer reads from the config when present:
    ``epochs``, ``batch_size``, ``lr``.
    """

    net: Any = None
    in_bands: int = 0
    #: False for a model that learns from marks only (``fit_marks``), never from a dataset in the trainer
    trains_on_datasets: ClassVar[bool] = True
    #: True for a model whose ``fit_marks`` also reads the scene sample (``MarkedScene.sample``); others
    #: are not handed it by ``train --labels``, which would hold it for every scene
    uses_scene_sample: ClassVar[bool] = False

    def configure(self, data) -> None:
        """Called before :meth:`build` with the trainer's :class:`~geochange.train.data.TrainData`
        (``in_bands``, ``patch_shape``, ``index``): settle settings that follow the data (vae's
        ``arch="auto"``) in ``self.config``, which checkpoints then record. Default: nothing."""

    @abstractmethod
    def build(self, in_bands: int) -> None:
        """Create ``self.net`` for ``in_bands`` bands per date (and remember ``in_bands``)."""

    @abstractmethod
    def training_step(self, batch: dict, epoch: int) -> dict:
        """Loss of one batch: ``{"loss": scalar tensor, **other scalar tensors to log}``."""

    def make_optimizer(self):
        """The paper's optimiser; default Adam at ``config.lr``."""
        import torch

        return torch.optim.Adam(self.net.parameters(), lr=getattr(self.config, "lr", 1e-3))

    def make_scheduler(self, optimizer, epochs: int, steps_per_epoch: int):
        """A learning-rate scheduler stepped once per batch, or None (default)."""
        return None

    def select(self, epoch: int, index, rng: np.random.Generator) -> np.ndarray | None:
        """Positions of the samples epoch ``epoch`` trains on (``index``: one row per sample, with
        ``label`` and ``changed_fraction``); None trains on all (default)."""
        return None

    def start_epoch(self, epoch: int, data) -> dict:
        """Called before each epoch with the trainer's :class:`~geochange.train.data.TrainData`;
        returns scalars to log. Default: nothing."""
        return {}

    def finish(self, data) -> dict:
        """Called once after the last epoch with the trainer's ``TrainData`` (before the final
        checkpoint): fit what scoring needs on the training data (score statistics, an anomaly
        clustering); returns scalars to log. Default: nothing."""
        return {}

    def marks_sizes(self) -> tuple[int, int]:
        """(patch side, cheap negatives) to cut for :meth:`fit_marks`: ``marks_patch`` (else ``patch``, else 64)
        and ``marks_negatives`` (else ``scene_patches``, else 64) of the config."""
        cfg = self.config
        patch = getattr(cfg, "marks_patch", None) or getattr(cfg, "patch", None) or 64
        negatives = getattr(cfg, "marks_negatives", None) or getattr(cfg, "scene_patches", None) or 64
        return int(patch), int(negatives)

    def fit_marks(self, scene, seed: int = 0, options=None) -> dict:
        """Learn from an analyst's marks (``detect --labels``, ``train --labels``), in the paper's own way.

        ``scene`` is a :class:`~geochange.train.marks.MarkedScene`: patches around the marks and the
        scenes' cheap negatives, normalised as ``predict`` will see windows. ``options``: the trainer's
        :class:`~geochange.train.trainer.TrainOptions` (run folder, epochs) or None (nothing kept).
        Returns the trainer's summary.
        """
        raise GeochangeError(f"{self.name} does not learn from marks")

    def extra_state(self) -> dict:
        """Fitted values that are not network parameters (tensors, numbers, lists) for checkpoints."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

