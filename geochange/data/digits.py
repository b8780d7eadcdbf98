"""Augmented-MNIST-style digit pairs built offline from scikit-learn's bundled 8x8 digits.

Hamaguchi et al. (CVPR 2019, Sec. 4.1) test rare-event detection on pairs of MNIST digits: a pair is
positive when its two digits differ and negative when they are the same digit, and the source
images come from three variants of MNIST (Larochelle et al. 2007): rotation (MNIST-R), background
clutter (MNIST-B) and both (MNIST-R-B). Rotations and backgrounds are the *trivial events* a
change detector must learn to ignore. MNIST itself cannot be downloaded here, so this module makes
the same kind of data from ``sklearn.datasets.load_digits`` (1,797 images of 8x8 pixels, 0..16):

* each digit is resampled (bilinear) into a 20x20 box centred in a 28x28 frame, as MNIST digits are;
* ``-R``: rotated by an angle drawn uniformly in [0, 360) degrees (as MNIST-rot), in the same
  resampling step (one interpolation, no double blur);
* ``-B``: composited over a 28x28 crop of a natural photograph (scikit-learn's bundled sample images
  ``china.jpg`` and ``flower.jpg``, grey, downscaled by a random factor 2-6, dimmed to [0, 0.7]) with
  ``max(digit, background)``, as MNIST-back-image composites digits over patches of 20 photographs.

Pairs draw a fresh rotation and background for each image of the pair (the trivial events differ
within a pair); a negative pair holds two *different* source images of the same digit, a positive
pair two source images of different digits. :func:`split_sources` splits the source images into
train and test sets by a seeded stratified draw so that no source image appears on both sides.

Deviations from the paper's data: 1,797 sources of 8x8 pixels instead of 70,000 of 28x28 (upsampled
strokes are thicker and smoother), and two photographs instead of twenty for the backgrounds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from geochange.errors import GeochangeError

VARIANTS = ("plain", "R", "B", "R-B")
SIZE = 28  # MNIST frame (pixels)
BOX = 20  # MNIST digits are size-normalised into a 20x20 box centred in the frame
SPLITS = ("train", "test")
BACKGROUND_MAX = 0.7  # backgrounds dimmed to [0, 0.7]: a white sky under max() would erase the digit


def _variant(variant: str) -> tuple[bool, bool]:
    """(rotate, background) for a variant name ("plain", "R", "B", "R-B"; "mnist-" prefix allowed)."""
    v = variant.upper().removeprefix("MNIST").lstrip("-")
    names = {"": (False, False), "PLAIN": (False, False), "R": (True, False), "B": (False, True),
             "R-B": (True, True), "RB": (True, True), "B-R": (True, True)}
    if v not in names:
        raise GeochangeError(f"unknown digits variant {variant!r} (choose from {', '.join(VARIANTS)})")
    return names[v]


@lru_cache(maxsize=1)
def _sources() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 in [0, 1] (1797, 8, 8) and their labels (1797,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled sample photographs as grey float32 images in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return tuple((img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0
                 for img in load_sample_images().images)


def _bilinear(src: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample images ``src`` (N, h, w) at fractional pixel coordinates ``rows``/``cols`` (N, H, W);
    zero outside the source. A single source image (1, h, w) is shared by all N samplings."""
    n, h, w = src.shape
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    out = np.zeros(rows.shape, np.float32)
    k = np.arange(n)[:, None, None] if n > 1 else 0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            vals = src[k, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
            out += np.where(inside, vals * wr * wc, 0.0).astype(np.float32)
    return out


def render(digits8: np.ndarray, angles_deg: np.ndarray | None = None) -> np.ndarray:
    """8x8 digits (N, 8, 8) in [0, 1] -> 28x28 (N, 28, 28): scaled into the centred 20x20 box and
    rotated counter-clockwise by ``angles_deg`` (N,) about the centre, in one bilinear resampling."""
    n, h, _ = digits8.shape
    angles = np.zeros(n) if angles_deg is None else np.asarray(angles_deg, np.float64)
    centre, src_centre = (SIZE - 1) / 2.0, (h - 1) / 2.0
    scale = h / BOX  # source pixels per output pixel
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    y, x = yy - centre, xx - centre
    t = np.deg2rad(angles)[:, None, None]
    cos, sin = np.cos(t), np.sin(t)
    # inverse map: output pixel -> source pixel (rotate back by -angle, then scale down)
    rows = (cos * y + sin * x) * scale + src_centre
    cols = (cos * x - sin * y) * scale + src_centre
    return np.clip(_bilinear(digits8.astype(np.float32), rows, cols), 0.0, 1.0)


def backgrounds(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` 28x28 crops (N, 28, 28) of the bundled photographs, each downscaled by a random factor
    2-6 and dimmed to [0, BACKGROUND_MAX] so that the digit (1.0) stays the brightest thing."""
    photos = _photos()
    out = np.empty((n, SIZE, SIZE), np.float32)
    which = rng.integers(len(photos), size=n)
    factors = rng.uniform(2.0, 6.0, size=n)[:, None, None]
    h = min(p.shape[0] for p in photos)
    w = min(p.shape[1] for p in photos)
    r0 = rng.uniform(0.0, 1.0, size=n)[:, None, None] * (h - SIZE * factors - 1)
    c0 = rng.uniform(0.0, 1.0, size=n)[:, None, None] * (w - SIZE * factors - 1)
    grid = np.arange(SIZE, dtype=np.float64)
    rows = np.broadcast_to(r0 + grid[None, :, None] * factors, (n, SIZE, SIZE))
    cols = np.broadcast_to(c0 + grid[None, None, :] * factors, (n, SIZE, SIZE))
    for p, photo in enumerate(photos):
        sel = which == p
        if sel.any():
            out[sel] = _bilinear(photo[None], rows[sel], cols[sel])
    return out * BACKGROUND_MAX


def augment(digits8: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """Render 8x8 digits (N, 8, 8) as the variant's 28x28 images (N, 1, 28, 28) float32 in [0, 1],
    with a fresh rotation and/or background per image."""
    rotate, clutter = _variant(variant)
    n = digits8.shape[0]
    angles = rng.uniform(0.0, 360.0, size=n) if rotate else None
    images = render(digits8, angles)
    if clutter:
        images = np.maximum(images, backgrounds(n, rng))
    return images[:, None].astype(np.float32)


def digit_images(variant: str = "R", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every source digit once as the variant's image: images (1797, 1, 28, 28) float32 in [0, 1]
    and digit labels (1797,) int64."""
    digits8, labels = _sources()
    return augment(digits8, variant, np.random.default_rng(seed)), labels.copy()


def split_sources(seed: int = 0, test_fraction: float = 0.3) -> dict[str, np.ndarray]:
    """Indices of the source digits in ``"train"`` and ``"test"``: a seeded split stratified by
    digit, so that no source image is in both."""
    if not 0.0 < test_fraction < 1.0:
        raise GeochangeError(f"test_fraction must be in (0, 1), got {test_fraction}")
    _, labels = _sources()
    rng = np.random.default_rng([seed, 7919])
    train, test = [], []
    for d in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == d))
        k = max(2, int(round(len(idx) * test_fraction)))
        test.append(idx[:k])
        train.append(idx[k:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def digit_pairs(variant: str = "R", n_pairs: int = 1000, seed: int = 0, positive_fraction: float = 0.5,
                split: str | None = "train", test_fraction: float = 0.3, split_seed: int = 0) -> list[dict]:
    """``n_pairs`` digit pairs as trainer items (see :mod:`geochange.train.data`).

    Each item is ``{"before": (1, 28, 28), "after": (1, 28, 28)`` float32 in [0, 1], ``"label":
    (28, 28)`` uint8, all 1 if the digits differ (a rare event) and all 0 if they are the same,
    ``"meta": {"split", "variant", "digit_before", "digit_after", "source_before", "source_after",
    "pair"}}``. ``round(n_pairs * positive_fraction)`` pairs are positive, in shuffled order.
    Sources come from ``split`` of :func:`split_sources` (``split_seed``, ``test_fraction``), or
    from all digits with ``split=None``. Every image of every pair gets its own rotation/background.
    ``meta["pair"]`` is the same for all items: one "scene", so that the trainer's per-pair
    standardisation (if enabled) uses one set of statistics.
    """
    if split is not None and split not in SPLITS:
        raise GeochangeError(f"split must be one of {SPLITS} or None, got {split!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise GeochangeError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    digits8, labels = _sources()
    pool = np.arange(len(labels)) if split is None else split_sources(split_seed, test_fraction)[split]
    by_digit = {int(d): pool[labels[pool] == d] for d in np.unique(labels[pool])}
    classes = np.array(sorted(by_digit))
    rng = np.random.default_rng([seed, 104729])
    n_pos = int(round(n_pairs * positive_fraction))
    positive = rng.permutation(np.r_[np.ones(n_pos, bool), np.zeros(n_pairs - n_pos, bool)])
    src_a = np.empty(n_pairs, np.int64)
    src_b = np.empty(n_pairs, np.int64)
    for i, pos in enumerate(positive):
        if pos:
            da, db = rng.choice(classes, size=2, replace=False)
            src_a[i], src_b[i] = rng.choice(by_digit[int(da)]), rng.choice(by_digit[int(db)])
        else:
            d = int(rng.choice(classes))
            src_a[i], src_b[i] = rng.choice(by_digit[d], size=2, replace=False)
    before = augment(digits8[src_a], variant, rng)
    after = augment(digits8[src_b], variant, rng)
    ones = np.ones((SIZE, SIZE), np.uint8)
    name = "plain" if _variant(variant) == (False, False) else variant.upper().removeprefix("MNIST").lstrip("-")
    return [{"before": before[i], "after": after[i], "label": ones * np.uint8(positive[i]),
             "meta": {"split": split or "", "variant": name, "pair": f"digits-{name}",
                      "digit_before": int(labels[src_a[i]]), "digit_after": int(labels[src_b[i]]),
                      "source_before": int(src_a[i]), "source_after": int(src_b[i])}}
            for i in range(n_pairs)]
