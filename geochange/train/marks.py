"""Training data from an analyst's marks on one scene (``detect --labels``, ``train --labels``).

Two kinds of patch pairs, cut from the pair as ``detect`` sees it (normalised, so a model trains on
the numbers it will be given):

* **marked** patches: windows around every mark, labelled by the marks (1 changed, 0 unchanged,
  255 unknown elsewhere);
* **cheap negatives** (Hamaguchi et al. 2019, Sec. 4: "noisy negatives"): random crops of the scene
  sample, where change is rare, labelled 0 ("unchanged") on every valid pixel, the marks burnt over
  them where they fall. ``meta["negative"]`` tells them apart.

Each model uses them in its paper's own way (:meth:`~geochange.models.base.TrainableModel.fit_marks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.io.marks import UNKNOWN, Marks
from geochange.train.data import random_crops

#: windows of each scene's sample kept by ``train --labels`` for a model that uses it (MarkedScene.sample):
#: 8 of 256 px, half a million pixels a scene, enough for a threshold fit pooled over the scenes
SAMPLE_PER_SCENE = 8


@dataclass
class MarkedScene:
    """What a model learns from on one scene: ``marked`` and ``negatives`` item dicts (see the module)."""

    marked: list[dict]
    negatives: list[dict]
    marks: dict = field(default_factory=dict)   # Marks.describe()
    #: the scene sample detect fits on, (before, after, valid) windows: for models that also need the
    #: scene's label-free statistics (logistic: cva's threshold and share of change)
    sample: list = field(default_factory=list)

    def items(self) -> list[dict]:
        return self.marked + self.negatives

    def pixel_counts(self) -> tuple[int, int]:
        """Marked (changed, unchanged) pixels in the marked patches (each pixel once per patch it is in)."""
        labels = [np.asarray(it["label"]) for it in self.marked]
        return (sum(int((x == 1).sum()) for x in labels), sum(int((x == 0).sum()) for x in labels))


def marked_scene(pair, marks: Marks, samples: Sequence, *, patch: int, negatives: int,
                 seed: int = 0, name: str = "scene", require_both: bool = True) -> MarkedScene:
    """Patches of ``patch`` px around every mark of ``marks`` on ``pair`` (normalised already), and
    ``negatives`` cheap negatives cropped from ``samples`` (``WindowPair`` s of the scene sample)."""
    marked = []
    for win in marks.windows(patch):
        wp = pair.read(win)
        label = marks.read(win)
        label[~wp.valid] = UNKNOWN
        if not (label != UNKNOWN).any():
            continue
        marked.append({"before": wp.before, "after": wp.after, "label": label,
                       "meta": {"pair": name, "negative": False, "window": _win(win)}})
    changed = sum(int((it["label"] == 1).any()) for it in marked)
    if not marked or (require_both and not changed):
        raise GeochangeError(f"{marks.path}: no changed mark covers a pixel with data in both dates; "
                             "mark changed areas where both images have data")
    if require_both and not any((it["label"] == 0).any() for it in marked):
        raise GeochangeError(f"{marks.path}: no unchanged mark covers a pixel with data in both dates; "
                             "mark unchanged areas where both images have data")
    return MarkedScene(marked, negative_patches(samples, marks, patch, negatives, seed, name), marks.describe(),
                       [(s.before, s.after, s.valid) for s in samples])


def negative_patches(samples: Sequence, marks: Marks | None, size: int, n: int, seed: int = 0,
                     name: str = "scene") -> list[dict]:
    """Up to ``n`` random ``size``-px crops of the scene sample, fully valid, labelled 0 (the marks over them)."""
    usable = [s for s in samples if s.valid.shape[0] >= size and s.valid.shape[1] >= size]
    if not usable:  # a scene smaller than a patch: crops of the largest sample windows
        size = min(min(s.valid.shape) for s in samples) if samples else size
        usable = [s for s in samples if min(s.valid.shape) >= size]
    items: list[dict] = []
    for i, r, c in random_crops([s.valid for s in usable], size, n, seed):
        s = usable[i]
        win = Window(s.window.col_off + c, s.window.row_off + r, size, size)
        label = np.zeros((size, size), np.uint8)
        if marks is not None:
            over = marks.read(win)
            label = np.where(over != UNKNOWN, over, label).astype(np.uint8)
        items.append({"before": s.before[:, r:r + size, c:c + size], "after": s.after[:, r:r + size, c:c + size],
                      "label": label, "meta": {"pair": name, "negative": True, "window": _win(win)}})
    return items

def marks_options(options, device: str, seed: int, **changes):
    """The trainer's options for learning from marks: ``options`` (``train --labels``: run folder, epochs,
    device) or a bare run on ``device``; items are normalised already, so never standardised again."""
    import dataclasses

    from geochange.train.trainer import TrainOptions

    base = options if options is not None else TrainOptions(device=device, seed=seed)
    return dataclasses.replace(base, standardize=False, **changes)


def _win(win: Window) -> list[int]:
    return [int(win.col_off), int(win.row_off), int(win.width), int(win.height)]


def train_on_marks(name: str, pairs: Sequence[tuple[str, str]], labels: str, options=None, params: dict | None = None,
                   *, field: str = "change", layer: str | None = None, bands: list[int] | None = None,
                   normalize: str = "meanstd") -> dict:
    """``geochange train MODEL --labels MARKS --pair BEFORE,AFTER ...``: train ``name`` on one file of marks
    over several scenes (each scene takes the marks that lie on it), with each scene's cheap negatives,
    normalised as ``detect`` normalises that scene. Returns the trainer's summary (checkpoint in
    ``options.out``), which ``detect --checkpoint`` then applies to any scene."""
    from geochange.io.pair import RasterPair
    from geochange.models import create_model, learns_from_marks, marks_models
    from geochange.progress import say, warn

    if not pairs:
        raise GeochangeError("--labels needs the scenes the marks were drawn on: give --pair BEFORE,AFTER")
    if not learns_from_marks(name):
        raise GeochangeError(f"--labels: {name} does not learn from marks; use one of {', '.join(marks_models())}")
    model = create_model(name, **(params or {}))
    patch, n_neg = model.marks_sizes()
    seed = options.seed if options is not None else 0
    marked, negatives, sample, counts = [], [], [], {"changed": 0, "unchanged": 0, "pairs": 0}
    for i, (before, after) in enumerate(pairs):
        with RasterPair.open(before, after, bands=bands) as pair:
            try:
                marks = Marks(labels, pair.grid, field, layer, outside="drop", both_classes=False)
            except GeochangeError as exc:
                if "none of the" not in str(exc):
                    raise
                warn(f"{before}: no mark lies on this scene; skipped")
                continue
            samples = pair.fit_normalization(normalize, seed=seed)
            scene = marked_scene(pair, marks, samples, patch=int(patch), negatives=int(n_neg), seed=seed + i,
                                 name=f"pair{i}", require_both=False)
        marked += scene.marked
        negatives += scene.negatives
        if model.uses_scene_sample:
            sample += scene.sample[:SAMPLE_PER_SCENE]
        counts["changed"] += marks.n_changed
        counts["unchanged"] += marks.n_unchanged
        counts["pairs"] += 1
    if not marked:
        raise GeochangeError(f"{labels}: no mark lies on any of the {len(pairs)} scenes (check the marks' CRS and extent)")
    if not counts["changed"] or not counts["unchanged"]:
        lacks = "unchanged (change = 0)" if counts["changed"] else "changed (change = 1)"
        raise GeochangeError(f"{labels}: the marks on these scenes are of one class; mark a few {lacks} areas too")
    say(f"{name}: learning from {counts['changed']} changed and {counts['unchanged']} unchanged marks on "
        f"{counts['pairs']} scenes ({len(marked)} patches) and {len(negatives)} cheap negatives")
    combined = MarkedScene(marked, negatives, {"path": str(labels), "field": field, **counts}, sample)
    summary = model.fit_marks(combined, seed=seed, options=options) or {}
    return {**summary, "model": name, "labels": combined.marks, "samples": len(combined.items())}
