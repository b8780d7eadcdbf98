"""Pixel metrics of a binary change map, from a confusion matrix accumulated window by window.

Conventions (so that the scores are always finite numbers and the JSON stays valid):

* rows of the matrix are the truth (0 unchanged, 1 changed), columns the prediction;
* a ratio whose denominator is zero is 0.0 (as scikit-learn's ``zero_division=0``): precision
  is 0 when nothing is predicted changed, recall when nothing is truly changed, f1 and iou
  when neither map holds a changed pixel, specificity when nothing is truly unchanged;
* ``kappa`` is 1.0 when chance agreement is 1, which happens only when both maps are the same
  single class everywhere (perfect agreement; Cohen's formula would give 0/0);
* ``miou`` is the mean IoU over the classes present in the truth or the prediction (a class absent
  from both has no IoU and is left out), so a perfect all-unchanged prediction scores 1.0;
* with no pixels at all every rate is 0.0.
"""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """2x2 counts, rows = truth (0 unchanged, 1 changed), cols = prediction; int64.

    Accumulate window by window with :meth:`update`, combine partial results with :meth:`merge`.
    """

    def __init__(self) -> None:
        self._m = np.zeros((2, 2), dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count the pixels of one window.

        ``pred`` and ``truth`` are bool or 0/1 arrays of the same shape (any non-zero value counts
        as changed); ``valid``, when given, is a bool array of that shape and only pixels where it
        is True are counted.
        """
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise ValueError(f"pred and truth shapes differ: {pred.shape} vs {truth.shape}")
        p = pred if pred.dtype == bool else pred != 0
        t = truth if truth.dtype == bool else truth != 0
        idx = (t.view(np.uint8) << 1) | p.view(np.uint8)
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != pred.shape:
                raise ValueError(f"valid mask shape {valid.shape} differs from {pred.shape}")
            idx = idx[valid if valid.dtype == bool else valid != 0]
        counts = np.bincount(idx.ravel(), minlength=4)
        self._m += counts.reshape(2, 2).astype(np.int64)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add ``other``'s counts to this matrix (in place) and return this matrix."""
        self._m += other._m
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        out = ConfusionMatrix()
        out._m = self._m + other._m
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return bool(np.array_equal(self._m, other._m))

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        (tn, fp), (fn, tp) = self._m.tolist()
        return f"ConfusionMatrix(tp={tp}, fp={fp}, fn={fn}, tn={tn})"

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the counts: ``[[tn, fp], [fn, tp]]``."""
        return self._m.copy()

    def normalized(self) -> np.ndarray:
        """The matrix as shares of each true class, ``[[tn, fp] / (tn + fp), [fn, tp] / (fn + tp)]``
        (float64; a row with no pixel is all 0.0). CDCluster's Table 1 prints its transpose (columns =
        truth): its 0.99 / 0.01 column is specificity and the false-positive rate, 0.30 / 0.70 the miss
        rate and recall."""
        rows = self._m.sum(axis=1, keepdims=True)
        return np.divide(self._m, rows, out=np.zeros((2, 2)), where=rows > 0)

    def scores(self) -> dict[str, float | int | list]:
        """accuracy, precision, recall, f1, kappa (Cohen's), iou (changed class), iou_unchanged,
        miou, specificity, mse (= 1 - accuracy for binary maps, as CDCluster reports), the counts
        tp, fp, fn, tn, n_pixels and confusion_matrix ``[[tn, fp], [fn, tp]]``.

        Plain Python numbers, never NaN (see the module docstring for the 0/0 conventions).
        """
        # Python ints: no overflow in the products below, however many pixels
        (tn, fp), (fn, tp) = (int(v) for v in self._m[0]), (int(v) for v in self._m[1])
        n = tn + fp + fn + tp

        def ratio(num: int, den: int) -> float:
            return num / den if den else 0.0

        accuracy = ratio(tp + tn, n)
        iou_changed = ratio(tp, tp + fp + fn)
        iou_unchanged = ratio(tn, tn + fp + fn)
        present = [iou for iou, union in ((iou_unchanged, tn + fp + fn), (iou_changed, tp + fp + fn))
                   if union > 0]
        chance = (tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)  # pe * n**2, exact
        if n == 0:
            kappa = 0.0
        elif chance == n * n:
            kappa = 1.0
        else:
            kappa = ((tp + tn) * n - chance) / (n * n - chance)
        return {
            "accuracy": accuracy,
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "kappa": kappa,
            "iou": iou_changed,
            "iou_unchanged": iou_unchanged,
            "miou": sum(present) / len(present) if present else 0.0,
            "specificity": ratio(tn, tn + fp),
            "mse": ratio(fp + fn, n),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "n_pixels": n,
            "confusion_matrix": [[tn, fp], [fn, tp]],
        }
