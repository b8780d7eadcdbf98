"""Training data for the shared trainer: any patch-pair source as standardised batches of tensors.

A source is a patch dataset folder (``dataset.json``: what ``tile`` and ``build-wdc`` write), a
LEVIR-CD folder (``A/``, ``B/``, ``label/``), or any sequence of item dicts ``{"before": (C, H, W),
"after": (C, H, W), "label": (H, W) uint8 0/1/255}`` (in-memory datasets, patches cut from a scene).
Images are standardised as ``detect`` standardises a scene (see :class:`PairStandardizer`), so a
model trains on the numbers it will be given.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from geochange.data.patches import UNKNOWN, LevirDataset, PatchDataset, open_dataset
from geochange.errors import GeochangeError

if TYPE_CHECKING:
    import pandas as pd


class PairStandardizer:
    """Shows every pair to a model as ``detect`` does: each date standardised per band by its own statistics.

    ``detect`` (``normalize=meanstd``) matches AFTER's per-band mean and std to BEFORE's and then
    standardises both by BEFORE's, which is the same as standardising each date by its own mean and
    std. Here the statistics are those of the pair a patch was cut from (``group``: the ``pair``
    column of a dataset, each item of a LEVIR-CD folder, ``meta["pair"]`` of in-memory items),
    estimated on up to ``n_fit`` of its patches, so a model trains on the numbers it will see in
    ``detect``. ``enabled=False`` passes images through as float32 (items already standardised).
    """

    def __init__(self, items, groups: np.ndarray, enabled: bool = True, n_fit: int = 32, seed: int = 0) -> None:
        self.items, self.groups, self.enabled = items, np.asarray(groups, dtype=object), enabled
        self.n_fit, self.seed = n_fit, seed
        self._members: dict = {}
        for i, g in enumerate(self.groups):
            self._members.setdefault(g, []).append(i)
        self._stats: dict = {}

    def __call__(self, position: int, item: dict) -> tuple[np.ndarray, np.ndarray]:
        """The item's BEFORE and AFTER as standardised float32 ``(C, H, W)`` arrays."""
        before = np.asarray(item["before"], np.float32)
        after = np.asarray(item["after"], np.float32)
        if not self.enabled:
            return before, after
        group = self.groups[position]
        stats = self._stats.get(group)
        if stats is None:
            members = self._members[group]
            if len(members) == 1:
                stats = _date_stats([item])
            else:
                rng = np.random.default_rng([self.seed, zlib.crc32(str(group).encode())])
                picks = rng.choice(members, size=min(self.n_fit, len(members)), replace=False)
                stats = _date_stats([self.items[int(i)] for i in picks])
                self._stats[group] = stats
        (mb, sb), (ma, sa) = stats
        return (before - mb) / sb, (after - ma) / sa


def _date_stats(items: Sequence[dict]) -> tuple:
    """Per-band ``(mean, std)`` of BEFORE and of AFTER over ``items``, shaped to broadcast on (C, H, W)."""
    out = []
    for key in ("before", "after"):
        x = np.stack([np.asarray(item[key], np.float64) for item in items])
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        std = np.where(std > 1e-9, std, 1.0)
        out.append((mean.astype(np.float32)[:, None, None], std.astype(np.float32)[:, None, None]))
    return tuple(out)


def item_groups(items) -> np.ndarray:
    """Which pair of dates each item comes from (see :class:`PairStandardizer`)."""
    if isinstance(items, PatchDataset):
        return items.index["pair"].astype(str).to_numpy()
    if isinstance(items, LevirDataset):
        return np.array([it["id"] for it in items.items], dtype=object)
    return np.array([str((items[i].get("meta") or {}).get("pair", "")) for i in range(len(items))], dtype=object)


def open_training_data(source, split: str | None = "train"):
    """Items of ``source`` for training: a dataset folder's ``split`` (all of it when the folder has
    no splits), or a sequence of item dicts as it is (their ``meta["split"]`` is kept when present)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise GeochangeError(f"{path}: no such dataset folder")
        ds = open_dataset(path)
        if split is None:
            return ds
        if isinstance(ds, LevirDataset) and ds.items and not ds.items[0]["split"]:
            return ds  # a LEVIR-CD folder without train/val/test subfolders: all of it
        items = open_dataset(path, split)
        if len(items) == 0:
            raise GeochangeError(f"{path}: no patches in split {split!r}")
        return items
    if len(source) == 0:
        raise GeochangeError("no training samples")
    return source


def sample_index(items) -> "pd.DataFrame":
    """One row per item: ``label`` (1 any changed, 0 none, -1 unlabelled), ``changed_fraction``, ``split``."""
    import pandas as pd

    if isinstance(items, PatchDataset):
        index = items.index
        return pd.DataFrame({"label": index["label"].astype(int).to_numpy(),
                             "changed_fraction": index["changed_fraction"].astype(float).to_numpy(),
                             "split": index["split"].astype(str).to_numpy()})
    rows = []
    for i in range(len(items)):
        item = {"label": items.read_label(i), "meta": items.items[i]} if isinstance(items, LevirDataset) else items[i]
        label = np.asarray(item["label"])
        changed = int(np.count_nonzero(label == 1))
        known = changed + int(np.count_nonzero(label == 0))
        rows.append({"label": 1 if changed else (0 if known else -1),
                     "changed_fraction": changed / known if known else np.nan,
                     "split": str((item.get("meta") or {}).get("split", ""))})
    return pd.DataFrame(rows, columns=["label", "changed_fraction", "split"])


class TrainData:
    """The items of one training run, standardised and batched as tensors on ``device``.

    ``index`` has one row per item (:func:`sample_index`); :meth:`batches` yields batch dicts
    ``before``, ``after`` (N, C, H, W) float32, ``label`` (N, H, W) int64 (255 unknown),
    ``patch_label`` (N,) int64 and ``position`` (N,) int64 (the items' positions).
    With ``workers > 0`` items are read in that many processes (a torch ``DataLoader``).
    """

    def __init__(self, items, standardize: bool = True, device: str = "cpu", workers: int = 0, seed: int = 0) -> None:
        self.items = items
        self.standardizer = PairStandardizer(items, item_groups(items), standardize, seed=seed)
        self.device = device
        self.workers = workers
        self.index = sample_index(items)
        first = items[0]
        self.in_bands = int(np.asarray(first["before"]).shape[0])
        self.patch_shape = tuple(int(v) for v in np.asarray(first["before"]).shape[1:])  # (H, W) of the first item

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, positions: Sequence[int] | None = None, batch_size: int = 16, shuffle: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[dict]:
        """Batches of the items at ``positions`` (all by default), shuffled with ``rng`` if asked."""
        import torch

        positions = np.arange(len(self)) if positions is None else np.asarray(positions, np.int64)
        if shuffle:
            positions = (rng or np.random.default_rng()).permutation(positions)
        chunks = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(_Batches(self.items, self.standardizer, chunks), batch_size=None,
                                                 num_workers=self.workers, persistent_workers=False)
        else:
            loader = (_collate(self.items, self.standardizer, c) for c in chunks)
        for batch in loader:
            yield {k: torch.as_tensor(v).to(self.device, non_blocking=True) for k, v in batch.items()}


class _Batches:
    """Map-style dataset of whole batches, so DataLoader workers do the reading and collating."""

    def __init__(self, items, standardizer: PairStandardizer, chunks: list[np.ndarray]) -> None:
        self.items, self.standardizer, self.chunks = items, standardizer, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict:
        return _collate(self.items, self.standardizer, self.chunks[i])


def _collate(items, standardizer: PairStandardizer, positions: np.ndarray) -> dict:
    """Read and stack the items at ``positions`` into numpy arrays (no torch ops: see device.torch_threads)."""
    got = [items[int(p)] for p in positions]
    shapes = {np.asarray(g["before"]).shape for g in got} | {np.asarray(g["after"]).shape for g in got}
    if len(shapes) > 1:
        raise GeochangeError(f"samples of one batch differ in shape ({sorted(shapes)}); "
                             "cut them to one size with `geochange tile`")
    labels = np.stack([np.asarray(g["label"]) for g in got]).astype(np.int64)
    changed = (labels == 1).any(axis=(1, 2))
    known = (labels != UNKNOWN).any(axis=(1, 2))
    dates = [standardizer(int(p), g) for p, g in zip(positions, got)]
    return {"before": np.stack([d[0] for d in dates]), "after": np.stack([d[1] for d in dates]),
            "label": labels,
            "patch_label": np.where(changed, 1, np.where(known, 0, -1)).astype(np.int64),
            "position": np.asarray(positions, np.int64)}


def scene_patches(samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, n: int,
                  seed: int = 0, min_valid: float = 1.0) -> list[dict]:
    """Up to ``n`` patch pairs of ``size`` pixels cropped at random from detect's scene samples.

    ``samples`` are ``(before, after, valid)`` windows as ``ChangeModel.fit`` gets them (already
    standardised: train on them with ``TrainOptions(standardize=False)``). These are the *noisy
    negatives* of Hamaguchi et al.: random crops of a scene in which change is rare, unlabelled
    (label 255). A crop is kept when at least ``min_valid`` of its pixels hold data in both dates.
    """
    usable = [s for s in samples if s[2].shape[0] >= size and s[2].shape[1] >= size]
    items: list[dict] = []
    for i, r, c in random_crops([s[2] for s in usable], size, n, seed, min_valid):
        before, after, _ = usable[i]
        items.append({"before": before[:, r:r + size, c:c + size], "after": after[:, r:r + size, c:c + size],
                      "label": np.full((size, size), UNKNOWN, np.uint8), "meta": {"pair": "scene"}})
    return items


def random_crops(valids: Sequence[np.ndarray], size: int, n: int, seed: int = 0,
                 min_valid: float = 1.0) -> list[tuple[int, int, int]]:
    """Up to ``n`` random ``size``-px crops ``(which, row, col)`` of the ``(h, w)`` validity masks ``valids``
    (each at least ``size`` on both sides), with at least ``min_valid`` of their pixels valid; a few tries
    per wanted crop, for crops that hit nodata."""
    rng = np.random.default_rng(seed)
    crops: list[tuple[int, int, int]] = []
    if not valids:
        return crops
    for _ in range(n * 4):
        if len(crops) == n:
            break
        i = int(rng.integers(len(valids)))
        r = int(rng.integers(valids[i].shape[0] - size + 1))
        c = int(rng.integers(valids[i].shape[1] - size + 1))
        if valids[i][r:r + size, c:c + size].mean() >= min_valid:
            crops.append((i, r, c))
    return crops
