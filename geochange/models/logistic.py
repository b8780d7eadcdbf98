"""A logistic regression on multi-scale change vectors, learned from an analyst's marks (``detect --labels``).

Change-vector analysis (cva.py) flags what changed *most*. The marks say which change is wanted: this
model weighs the change vector's parts by what the marks show, with one linear classifier per scene
(a "supervised CVA"; logistic regression as in Hastie, Tibshirani & Friedman, *The Elements of
Statistical Learning*, Sec. 4.4, with an L2 penalty). Its features, per pixel, from the normalised
pair (``C`` bands per date):

* both dates' values and their difference ``d = after - before`` and ``|d|`` (4 C);
* the box means of ``d`` and ``|d|`` over ``scales`` (3, 7 and 15 px: the pixel's surroundings,
  2 C per scale): a building is a block of change, a field's edge a line;
* the change-vector magnitude, its logarithm and the probability of the label-free ``cva`` model
  fitted on the scene (3).

It learns from the marked pixels and from ``negatives_px`` pixels of the scene's random crops taken as
unchanged (the "cheap negatives" of Hamaguchi et al. 2019, Sec. 4), each class weighted by the inverse
of its pixel count, with a strong L2 penalty (``regularization`` is scikit-learn's ``C``): ten marks do
not pin down forty weights, and a weak penalty over-fits them (benchmarks/bench_labels.py, docs/models.md).

How much is flagged (``amount``): the balanced classifier's own 0.5 over-flags, since it sees as many
changed as unchanged pixels. The label-free ``cva`` model estimates the share of change well (its
two-gamma mixture), but it counts the change the marks reject too. By default (``amount="accepted"``)
the model flags the share of the scene sample that ``cva`` flags (bar specks under the minimum mapping
unit) *and* the balanced classifier does not reject (P >= ``accept``, 0.1: a kind of change marked
unchanged falls far below it), at the pixels the classifier ranks highest;
``amount="cva"`` flags all of cva's share, ``amount="balanced"`` keeps the balanced 0.5. The log-odds
are shifted by a constant (a change of prior, as in Saerens et al. 2002), so the probability stays a
logistic of the features, 0.5 at the threshold.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from geochange.errors import GeochangeError
from geochange.models.base import Sample, TrainableModel
from geochange.models.cva import CVA, CVAConfig

AMOUNTS = ("accepted", "cva", "balanced")
#: fewer marked pixels of a class than this and the classifier refuses (a one-line error says which)
MIN_CLASS_PIXELS = 5
_DIRECTION_EPS = 0.1   # a unit change vector, shrunk towards 0 where there is little change
_LOG_EPS = 0.05   # log(magnitude + eps): the magnitude of normalised values is about 0.1-10


@dataclass
class LogisticConfig:
    """Hyper-parameters of the marks' logistic regression (defaults chosen by benchmarks/bench_labels.py)."""

    scales: tuple[int, ...] = (3, 7, 15)  # box means of the change vector over these sizes, px (odd)
    direction: int = 7            # > 0: also the direction of the change vector's box mean over this size, px (0: none)
    regularization: float = 0.01  # C of the L2-penalised logistic regression: smaller is a stronger penalty
    negatives_px: int = 5000      # cheap-negative pixels drawn from the scene's random crops
    amount: str = "accepted"      # accepted: the share of the scene cva flags and the marks accept (P >= accept);
                                  # cva: all cva flags; balanced: the balanced classifier's own 0.5
    accept: float = 0.1           # accepted: the balanced classifier's probability from which it accepts cva's change
    marks_patch: int = 64         # side of the windows cut around the marks, px
    marks_negatives: int = 96     # random crops of the scene (cheap negatives) cut, marks_patch px each
    max_iter: int = 1000          # of the solver (lbfgs)

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        if any(s < 1 or s % 2 == 0 for s in self.scales) or (self.direction and self.direction % 2 == 0):
            raise GeochangeError("logistic: scales are odd window sizes >= 1, e.g. -p scales=[3,7,15]")
        if self.regularization <= 0:
            raise GeochangeError("logistic: regularization must be > 0")
        if not 0 < self.accept < 1:
            raise GeochangeError("logistic: accept is a probability between 0 and 1 (exclusive)")
        if self.amount not in AMOUNTS:
            raise GeochangeError(f"logistic: unknown amount {self.amount!r} (choose one of {', '.join(AMOUNTS)})")
        if self.negatives_px < 0 or self.marks_patch < 16 or self.marks_negatives < 1:
            raise GeochangeError("logistic: negatives_px >= 0, marks_patch >= 16 and marks_negatives >= 1")


def feature_names(bands: int, scales: Sequence[int], direction: int = 0) -> list[str]:
    """Names of the features, in the order of :meth:`MarksLogistic.features`."""
    per_band = ["before", "after", "diff", "absdiff"]
    per_band += [f"{k}{s}" for s in scales for k in ("diff_mean", "absdiff_mean")]
    per_band += [f"direction{direction}"] if direction else []
    return [f"{k}_b{c + 1}" for k in per_band for c in range(bands)] + ["magnitude", "log_magnitude", "cva_probability"]


class MarksLogistic(TrainableModel):
    """L2-penalised logistic regression on multi-scale change vectors, fitted on marks and cheap negatives."""

    name = "logistic"
    config_class = LogisticConfig
    uses_torch = False
    trains_on_datasets = False
    uses_scene_sample = True

    def __init__(self, config: LogisticConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or LogisticConfig(), device)
        self.cva = CVA(CVAConfig())
        self.mean: np.ndarray | None = None      # (F,) of the training pixels' features
        self.scale: np.ndarray | None = None     # (F,)
        self.weights: np.ndarray | None = None   # (F,) on the standardised features
        self.bias = 0.0
        self.offset = 0.0                         # subtracted from the log-odds (amount)
        self.changed_share: float | None = None   # the share of the scene sample flagged (amount)

    @property
    def context_px(self) -> int:
        """Half the largest box mean: a pixel depends on that many pixels around it."""
        return max((*self.config.scales, self.config.direction), default=1) // 2

    # -- features ---------------------------------------------------------------------------------
    def features(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray):
        """The feature groups of ``(N, C, h, w)`` windows, one ``(N, k, h, w)`` float32 array at a time
        (so that ``predict`` never holds all of them)."""
        d = after - before
        ad = np.abs(d)
        yield before
        yield after
        yield d
        yield ad
        for s in self.config.scales:
            yield ndimage.uniform_filter(d, size=(1, 1, s, s), mode="nearest")
            yield ndimage.uniform_filter(ad, size=(1, 1, s, s), mode="nearest")
        if self.config.direction:
            m = ndimage.uniform_filter(d, size=(1, 1, self.config.direction, self.config.direction), mode="nearest")
            yield m / (np.sqrt(np.einsum("nchw,nchw->nhw", m, m))[:, None] + _DIRECTION_EPS)
        mag = np.sqrt(np.einsum("nchw,nchw->nhw", d, d))
        yield mag[:, None]
        yield np.log(mag + _LOG_EPS)[:, None]
        yield self.cva.predict(before, after, valid)[:, None]

    def _stack(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """All features of one ``(C, h, w)`` window as ``(h * w, F)``."""
        f = np.concatenate(list(self.features(before[None], after[None], valid[None])), axis=1)[0]
        return f.reshape(f.shape[0], -1).T

    def log_odds(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, h, w)`` log-odds of change of the fitted classifier (before ``offset``)."""
        w = self.weights / self.scale          # on the raw features: one multiply-add each
        out = np.full(valid.shape, self.bias - float(w @ self.mean), np.float32)
        k = 0
        for group in self.features(before, after, valid):
            for j in range(group.shape[1]):
                out += np.float32(w[k]) * group[:, j]
                k += 1
        return out

    # -- fitting ----------------------------------------------------------------------------------
    def marks_sizes(self) -> tuple[int, int]:
        return int(self.config.marks_patch), int(self.config.marks_negatives)

    def fit_marks(self, scene, seed: int = 0, options=None) -> dict:
        """Fit on ``scene`` (a :class:`~geochange.train.marks.MarkedScene`): cva's threshold on the scene
        sample (as ``detect`` fits cva; on the cheap negatives where there is none), then the classifier
        on the marked pixels and ``negatives_px`` of the crops' pixels (labelled unchanged, or as marked
        where a mark covers them), then the offset that sets how much is flagged (``amount``)."""
        rng = np.random.default_rng(seed)
        negatives = scene.negatives
        if not negatives:
            raise GeochangeError("logistic: the scene gave no cheap negatives (no fully valid crop of "
                                 f"{self.config.marks_patch} px); try -p marks_patch=32")
        self.in_bands = int(np.asarray(negatives[0]["before"]).shape[0])
        crops = [_window(it) for it in negatives]
        sample = list(getattr(scene, "sample", None) or crops)   # the scene sample detect fits cva on
        self.cva.fit(sample, seed=seed)
        x, y = self._training_pixels(scene.marked, negatives, crops, rng)
        counts = np.bincount(y, minlength=2)[:2]
        for cls, what in ((1, "changed (change = 1)"), (0, "unchanged (change = 0)")):
            if counts[cls] < MIN_CLASS_PIXELS:
                raise GeochangeError(f"logistic: {counts[cls]} {what} pixels among the marks, fewer than "
                                     f"{MIN_CLASS_PIXELS}: mark a few more {what.split()[0]} areas")
        loss = self._fit_classifier(x, y, counts)
        self._set_amount(sample)
        summary = {"model": self.name, "epochs": 1, "history": [{"loss": loss}],
                   "pixels": {"changed": int(counts[1]), "unchanged": int(counts[0])},
                   "changed_share": self.changed_share, "checkpoint": None, "device": "cpu"}
        if options is not None and getattr(options, "out", None):
            summary["checkpoint"] = str(self._save(options.out, summary["history"]))
        return summary

    def _training_pixels(self, marked: list[dict], negatives: list[dict], crops: list[Sample],
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of the marked pixels and of ``negatives_px`` pixels of the crops (unchanged,
        or as marked where a mark covers them), each pixel of the scene once."""
        xs, ys, keys = [], [], []
        for it in marked:
            label = np.asarray(it["label"]).ravel()
            keep = np.flatnonzero(label != 255)
            if keep.size:
                xs.append(self._stack(*_window(it))[keep])
                ys.append(label[keep])
                keys.append(_pixel_keys(it, keep))
        per_crop = -(-self.config.negatives_px // len(negatives)) if self.config.negatives_px else 0
        for it, crop in zip(negatives, crops):
            label = np.asarray(it["label"]).ravel()
            pool = np.flatnonzero(label != 255)
            take = rng.choice(pool, size=min(per_crop, len(pool)), replace=False) if per_crop else pool[:0]
            if take.size:
                xs.append(self._stack(*crop)[take])
                ys.append(label[take])
                keys.append(_pixel_keys(it, take))
        if not xs:
            return np.zeros((0, 0)), np.zeros(0, np.int64)
        # a pixel in several windows (marks close together, a crop over a mark) counts once
        _, first = np.unique(np.concatenate(keys), axis=0, return_index=True)
        return np.concatenate(xs)[first].astype(np.float64), np.concatenate(ys)[first].astype(np.int64)

    def _fit_classifier(self, x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> float:
        """The L2-penalised, class-balanced logistic regression on standardised ``x``; its balanced log-loss."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=self.config.regularization, class_weight="balanced",
                                 max_iter=self.config.max_iter).fit(scaler.transform(x), y)
        self.mean = scaler.mean_.astype(np.float64)
        self.scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0).astype(np.float64)
        self.weights = clf.coef_[0].astype(np.float64)
        self.bias = float(clf.intercept_[0])
        return _log_loss(clf.decision_function(scaler.transform(x)), y, counts)

    def _set_amount(self, sample: list[Sample]) -> None:
        """The offset of the log-odds: 0 (``balanced``), or the one that flags, of the scene sample's valid
        pixels, the share cva flags (``cva``), or that cva flags and the balanced classifier does not reject
        (P >= ``accept``: ``accepted``)."""
        self.offset, self.changed_share = 0.0, None
        if self.config.amount == "balanced":
            return
        logits, flagged = [], []
        for b, a, v in sample:
            z = self.log_odds(b[None], a[None], v[None])[0]
            cva = _without_specks(self.cva.predict(b[None], a[None], v[None])[0] >= self.cva.threshold)
            if self.config.amount == "accepted":
                cva &= z >= self._accept_logit
            logits.append(z[v])
            flagged.append(cva[v])
        logits, flagged = np.concatenate(logits), np.concatenate(flagged)
        self.changed_share = float(flagged.mean())
        if self.changed_share <= 0:          # cva flags nothing: neither does this model
            self.offset = float(logits.max()) + 1.0
        else:
            self.offset = float(np.quantile(logits, 1.0 - self.changed_share))

    @property
    def _accept_logit(self) -> float:
        """``accept`` as log-odds."""
        p = self.config.accept
        return float(np.log(p / (1 - p)))

    def _save(self, out, history: list[dict]):
        """``out/last.pt`` and ``out/metrics.csv``, as the trainer leaves them (``train --labels``)."""
        from pathlib import Path

        from geochange.io.atomic import write_text
        from geochange.train.checkpoint import save_checkpoint
        from geochange.train.trainer import LAST, metrics_csv

        if self.net is None:
            self.build(self.in_bands)
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "metrics.csv", metrics_csv([{"epoch": 1, **h} for h in history]))
        return save_checkpoint(folder / LAST, self, epoch=1, history=history)

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        if self.weights is None:
            raise GeochangeError("logistic learns from marks: give --labels MARKS (or a --checkpoint of "
                                 "`geochange train logistic --labels`)")

    # -- inference --------------------------------------------------------------------------------
    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise GeochangeError("the logistic model must learn from marks before predicting (--labels)")
        z = self.log_odds(before, after, valid)
        z -= np.float32(self.offset)
        np.clip(z, -60.0, 60.0, out=z)
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        return np.reciprocal(z, out=z)

    def params(self) -> dict:
        out = super().params()
        if self.weights is not None:
            names = feature_names(self.in_bands, self.config.scales, self.config.direction)
            out.update({"offset": round(self.offset, 6), "changed_share": self.changed_share,
                        "weights": {n: round(float(w), 4) for n, w in zip(names, self.weights)},
                        "cva_threshold": float(self.cva.fitted.threshold)})
        return out

    # -- checkpoints: the fitted values are the model; the torch module is empty --------------------
    def build(self, in_bands: int) -> None:
        import torch

        self.in_bands = int(in_bands)
        self.net = torch.nn.Module()

    def training_step(self, batch: dict, epoch: int) -> dict:
        raise GeochangeError("logistic learns from marks only (trains_on_datasets is False)")

    def extra_state(self) -> dict:
        import torch

        return {"mean": torch.as_tensor(self.mean), "scale": torch.as_tensor(self.scale),
                "weights": torch.as_tensor(self.weights), "bias": self.bias, "offset": self.offset,
                "changed_share": self.changed_share, "cva_fit": self.cva.fitted.as_dict()}

    def load_extra_state(self, state: dict) -> None:
        from geochange.threshold import threshold_from_dict

        self.mean = np.asarray(state["mean"], np.float64)
        self.scale = np.asarray(state["scale"], np.float64)
        self.weights = np.asarray(state["weights"], np.float64)
        n = len(feature_names(self.in_bands, self.config.scales, self.config.direction))
        if not (len(self.mean) == len(self.scale) == len(self.weights) == n):
            raise ValueError(f"{len(self.weights)} weights for {n} features")
        self.bias, self.offset = float(state["bias"]), float(state["offset"])
        self.changed_share = state.get("changed_share")
        self.cva.fitted = threshold_from_dict(state["cva_fit"])


def _without_specks(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its 4-connected regions under the default minimum mapping unit (MMU_PIXELS):
    what detect's region decision leaves of cva's map, whose single pixels would count otherwise."""
    from geochange.engine.regions import MMU_PIXELS

    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    big = np.bincount(lab.ravel()) >= MMU_PIXELS
    big[0] = False
    return big[lab]


def _pixel_keys(item: dict, flat: np.ndarray) -> np.ndarray:
    """(n, 3) int64 keys of an item's pixels at ``flat`` positions: its pair, row and column in the scene."""
    col, row, width, _ = item["meta"]["window"]
    pair = zlib.crc32(str(item["meta"].get("pair", "")).encode())
    r, c = np.divmod(flat, int(width))
    return np.stack([np.full(flat.shape, pair, np.int64), r + int(row), c + int(col)], axis=1)


def _window(item: dict) -> Sample:
    """(before, after, valid) float32 of a marks item; its pixels all count as valid (the marks set
    invalid ones to unknown)."""
    b = np.asarray(item["before"], np.float32)
    return b, np.asarray(item["after"], np.float32), np.ones(b.shape[1:], bool)


def _log_loss(z: np.ndarray, y: np.ndarray, counts: np.ndarray) -> float:
    """The class-balanced mean log-loss of log-odds ``z`` for labels ``y``."""
    w = (counts.sum() / (2.0 * counts))[y]
    loss = np.logaddexp(0.0, np.where(y == 1, -z, z))
    return float((w * loss).sum() / w.sum())
