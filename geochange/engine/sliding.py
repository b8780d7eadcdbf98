"""Sliding-window inference: read windows in the background, predict in batches, blend, stream strips.

The pipeline has three stages running at once: a reader thread reads (and warps) the next batches
of window pairs, the calling thread runs the model, and a writer thread hands finished strips to
the sinks (raster writers, polygoniser, statistics). Overlapping predictions are blended with
weights that fall off toward window edges (plan.blend_weights). Only one strip of windows is held
(``tile`` rows by the grid's width), so peak memory does not grow with the raster's height, and
with a fixed tile it grows with the width only through that one strip.

The same engine runs one :class:`~geochange.engine.plan.Block` of the plan on a Dask worker
(``block=``). Batches never span window rows, so a block predicts the same batches as a whole run
(a model that is not batch-invariant still gives the same numbers). The block finishes its body
and hands over its *edges*: its first window row's raw predictions on the seam rows and its blend
sums below its last row.
:func:`replay_seam` adds them in the whole run's order, so a blocked run equals it bit for bit.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from geochange.engine.plan import Block, WindowPlan, blend_weights
from geochange.io.pair import RasterPair
from geochange.models.base import ChangeModel


@dataclass
class Strip:
    """Finished full-width rows of the output grid: blended probability and validity."""

    row_off: int
    prob: np.ndarray   # (h, width) float32; undefined where not valid
    valid: np.ndarray  # (h, width) bool
    types: np.ndarray | None = None  # (h, width) uint8 change type 1..K where changed, for typed models
    _candidates: dict = field(default_factory=dict, repr=False, compare=False)
    _all_valid: bool | None = field(default=None, repr=False, compare=False)

    @property
    def all_valid(self) -> bool:
        """Whether every pixel is valid (then sinks skip their nodata passes); computed once."""
        if self._all_valid is None:
            self._all_valid = bool(self.valid.all())
        return self._all_valid

    def candidates(self, threshold: float) -> np.ndarray:
        """Valid pixels with ``prob >= threshold`` (bool), computed once for all the sinks."""
        if threshold not in self._candidates:
            above = self.prob >= threshold
            self._candidates[threshold] = above if self.all_valid else np.logical_and(above, self.valid, out=above)
        return self._candidates[threshold]


class StripSink(Protocol):
    """Anything that consumes strips in order, top to bottom (writers, polygoniser, statistics)."""

    def write(self, strip: Strip) -> None: ...


@dataclass
class EngineStats:
    """Where the time went (seconds), for summary.json and the benchmark."""

    windows: int = 0
    batches: int = 0
    predict_s: float = 0.0
    read_wait_s: float = 0.0
    write_wait_s: float = 0.0
    total_s: float = 0.0
    extra: dict = field(default_factory=dict)
    edges: "BlockEdges | None" = None  # block runs only


@dataclass
class BlockEdges:
    """What a block leaves for its seams (``replay_seam``).

    ``head``: the block's first window row on its seam rows, in plan order: window column offsets
    ``(k,)``, probabilities and blend weights ``(k, seam, tile_w)`` float32, types uint8 or None.
    ``tail``: the blend buffers (sum, weight; best, types for typed models) of the rows just
    below the block that its last window row reaches: the next block's seam, as far as this
    block's windows go.
    """

    head_cols: np.ndarray
    head_prob: np.ndarray
    head_weight: np.ndarray
    head_types: np.ndarray | None
    tail: dict[str, np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays, for ``np.savez``."""
        out = {"head_cols": self.head_cols, "head_prob": self.head_prob, "head_weight": self.head_weight,
               **{f"tail_{k}": v for k, v in self.tail.items()}}
        if self.head_types is not None:
            out["head_types"] = self.head_types
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "BlockEdges":
        return cls(arrays["head_cols"], arrays["head_prob"], arrays["head_weight"],
                   arrays["head_types"] if "head_types" in arrays else None,
                   {k[5:]: arrays[k] for k in arrays if k.startswith("tail_")})


def run_sliding(pair: RasterPair, model: ChangeModel, plan: WindowPlan, sinks: Sequence[StripSink], *,
                batch_size: int = 8, prefetch: int = 1, prob_steps: int | None = None,
                window_hooks: Sequence[Callable[[Window, np.ndarray, np.ndarray, np.ndarray], None]] = (),
                advance: Callable[[int], None] = lambda n: None, block: Block | None = None) -> EngineStats:
    """Run ``model`` over every window of ``plan`` (or of one ``block``) and stream blended strips to ``sinks``.

    ``window_hooks`` see each window's input ``(window, before, after, valid)`` once, so that by-
    products of the imagery (the quicklook) need no second read of the rasters.
    ``prob_steps``: round the blended probabilities to multiples of ``1 / prob_steps`` before
    they reach the sinks (so the mask, polygons and probability raster agree exactly).
    With ``block``, only that block's rows reach the sinks and ``stats.edges`` holds its seams' parts.
    ``prefetch``: batches read ahead (1: the reader reads the next batch while the model runs on this
    one; a second one ahead only held another batch in memory, 50 MiB at tile 512, batch 8).
    """
    stats = EngineStats()
    t_start = time.perf_counter()
    weights = blend_weights(plan.tile_h, plan.tile_w, plan.overlap)
    typed = getattr(model, "n_types", 0) > 0
    blocked = block is not None
    block = block or whole_plan(plan)
    # a per-pixel model's strips need no blending: each window is its own strip
    passthrough = not blocked and plan.strips
    acc = _Passthrough(prob_steps) if passthrough else _StripAccumulator(plan, prob_steps, with_types=typed, block=block)
    with ThreadPoolExecutor(1, "geochange-read") as reader, ThreadPoolExecutor(1, "geochange-write") as writer:
        batches = _prefetch(reader, pair, plan_batches(plan, batch_size, block), prefetch)
        pending_writes: deque[Future] = deque()

        def emit(strip: Strip) -> None:
            for part in split_strip(strip):   # at most two parts wait: memory does not grow with the width
                pending_writes.append(writer.submit(_write_all, sinks, part))
                while len(pending_writes) > 2:
                    t = time.perf_counter()
                    pending_writes.popleft().result()
                    stats.write_wait_s += time.perf_counter() - t

        while True:
            t = time.perf_counter()
            item = next(batches, None)
            stats.read_wait_s += time.perf_counter() - t
            if item is None:
                break
            rows, windows, before, after, valid = item
            t = time.perf_counter()
            if typed:
                probs, types = model.predict_with_types(before, after, valid)
            else:
                probs, types = model.predict(before, after, valid), None
            stats.predict_s += time.perf_counter() - t
            probs = clean_probabilities(probs)
            for k, (r, win) in enumerate(zip(rows, windows)):
                for hook in window_hooks:
                    hook(win, before[k], after[k], valid[k])
                weight = valid[k] if passthrough else weights * valid[k]
                for strip in acc.add(r, win, probs[k], weight, None if types is None else types[k]):
                    emit(strip)
            stats.windows += len(windows)
            stats.batches += 1
            advance(len(windows))
        for strip in acc.finish():
            emit(strip)
        stats.edges = acc.edges() if blocked else None
        t = time.perf_counter()
        while pending_writes:
            pending_writes.popleft().result()
        stats.write_wait_s += time.perf_counter() - t
    stats.total_s = time.perf_counter() - t_start
    return stats


def round_to_steps(prob: np.ndarray, steps: int) -> np.ndarray:
    """``prob`` (float32 in [0, 1]) rounded in place to multiples of ``1 / steps``, halves to even, as
    ``np.round(prob * steps) / steps``. For ``steps = 2**k`` (k <= 20) by adding and taking away
    ``2**(23 - k)``: float32 keeps multiples of ``2**-k`` there, so the sum rounds (two passes, not three)."""
    k = int(steps).bit_length() - 1
    if prob.dtype == np.float32 and steps == 1 << k and k <= 20:
        magic = np.float32(2.0 ** (23 - k))
        prob += magic
        prob -= magic
        return prob
    prob *= steps
    np.round(prob, out=prob)
    prob /= steps
    return prob


def clean_probabilities(probs: np.ndarray) -> np.ndarray:
    """A model's probabilities as float32 in [0, 1], NaN as 0: two in-place passes (``fmax``/``fmin``
    drop NaN), on the model's own array when it is float32 and writeable."""
    probs = np.asarray(probs, dtype=np.float32)
    if not probs.flags.writeable:
        probs = probs.copy()
    np.fmax(probs, 0.0, out=probs)
    return np.fmin(probs, 1.0, out=probs)


#: the most pixels the sinks are handed at once: a strip of a wide raster goes to them in parts of
#: whole rows, so their working memory (masks, labels, polygons) does not grow with the raster's width
SINK_PIXELS = 1 << 21


def split_strip(strip: Strip, max_pixels: int = SINK_PIXELS) -> list[Strip]:
    """``strip`` as consecutive strips (views) of at most ``max_pixels`` pixels (at least one row each),
    cut at grid rows that are multiples of their height, so the cuts do not depend on where it began."""
    h, w = strip.prob.shape
    rows = max(1, max_pixels // max(w, 1))
    if h <= rows:
        return [strip]
    cuts = [0, *range(rows - strip.row_off % rows, h, rows), h]
    return [Strip(strip.row_off + a, strip.prob[a:b], strip.valid[a:b],
                  None if strip.types is None else strip.types[a:b]) for a, b in zip(cuts, cuts[1:]) if b > a]


def _write_all(sinks: Sequence[StripSink], strip: Strip) -> None:
    with rasterio.Env():   # one GDAL environment for the sinks' calls, not one per call (the writer thread has none)
        for sink in sinks:
            sink.write(strip)


def whole_plan(plan: WindowPlan) -> Block:
    """The whole plan as one block (no seams)."""
    return Block(0, 0, len(plan.row_offsets), 0, plan.height, 0)


def plan_batches(plan: WindowPlan, batch_size: int, block: Block) -> list[list[tuple[int, Window]]]:
    """The windows of ``block``, ``batch_size`` at a time within each window row.

    A batch never spans two window rows, so every window is predicted in the same batch whether
    the plan runs whole or in blocks (a model need not be batch-invariant for the two to agree).
    """
    batches, row, current = [], None, []
    for r, win in plan.windows():
        if not block.first <= r < block.stop:
            continue
        if r != row or len(current) == batch_size:
            if current:
                batches.append(current)
            row, current = r, []
        current.append((r, win))
    if current:
        batches.append(current)
    return batches


def _prefetch(pool: ThreadPoolExecutor, pair: RasterPair, batches: list[list[tuple[int, Window]]],
              depth: int) -> Iterator[tuple[list[int], list[Window], np.ndarray, np.ndarray, np.ndarray]]:
    """Batches (window rows, windows, before, after, valid), read and stacked ``depth`` batches ahead."""
    def stack(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)   # one window (a strip): no copy

    def read_batch(items):
        with rasterio.Env():   # one GDAL environment per batch, not one per read (the reader thread has none)
            wps = [pair.read(w) for _, w in items]
        return ([r for r, _ in items], [w.window for w in wps], stack([w.before for w in wps]),
                stack([w.after for w in wps]), stack([w.valid for w in wps]))

    queue: deque[Future] = deque()
    for items in batches:
        queue.append(pool.submit(read_batch, items))
        if len(queue) > depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


class _Passthrough:
    """The accumulator of a plan of full-width windows that do not overlap (a per-pixel model's
    strips): each window is a strip as it is, rounded in place. Rows that the pushed-back last window
    shares with the one before are left out: a per-pixel model gives them the same numbers."""

    def __init__(self, steps: int | None = None) -> None:
        self.steps = steps
        self.done = 0   # grid rows emitted so far

    def add(self, r: int, window: Window, prob: np.ndarray, valid: np.ndarray,
            types: np.ndarray | None = None) -> list[Strip]:
        y0 = int(window.row_off)
        skip = max(0, self.done - y0)
        if skip >= prob.shape[0]:
            return []
        prob = prob[skip:]
        if self.steps:
            round_to_steps(prob, self.steps)
        self.done = y0 + skip + prob.shape[0]
        return [Strip(y0 + skip, prob, valid[skip:], None if types is None else types[skip:])]

    def finish(self) -> list[Strip]:
        return []


class _StripAccumulator:
    """Weighted sums of predictions over the rows one window row spans; emits rows once final.

    Change types (categorical) are not averaged: each pixel takes the type of the window that
    weighs most there (the one whose centre is nearest), which shows no seam either.
    For a block, the seam rows are kept out of the strips (their raw parts are recorded instead)
    and the sums below the block's last row are kept for :meth:`edges`.
    """

    def __init__(self, plan: WindowPlan, steps: int | None = None, with_types: bool = False,
                 block: Block | None = None) -> None:
        self.plan, self.steps = plan, steps
        self.block = block or whole_plan(plan)
        shape = (plan.tile_h, plan.width)
        self.sum = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape, np.float32)
        self.best = np.zeros(shape, np.float32) if with_types else None
        self.types = np.zeros(shape, np.uint8) if with_types else None
        self.row = self.block.first  # window row being accumulated
        self.base = self.block.y0    # grid row of self.sum[0]
        self.head: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []

    def add(self, r: int, window: Window, prob: np.ndarray, weight: np.ndarray,
            types: np.ndarray | None = None) -> list[Strip]:
        out = []
        while r > self.row:
            out.extend(self._flush())
        y0 = int(window.row_off) - self.base
        x0 = int(window.col_off)
        h, w = prob.shape
        if r == self.block.first and self.block.seam:
            s = self.block.seam
            self.head.append((x0, prob[:s].copy(), weight[:s].copy(), None if types is None else types[:s].copy()))
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        self.sum[region] += prob * weight
        self.weight[region] += weight
        if self.types is not None and types is not None:
            better = weight > self.best[region]
            self.types[region][better] = types[better]
            self.best[region][better] = weight[better]
        return out

    def finish(self) -> list[Strip]:
        out = []
        while self.row < self.block.stop:
            out.extend(self._flush())
        return out

    def edges(self) -> BlockEdges:
        """The block's head (raw seam parts) and tail (sums below it), once :meth:`finish` is done."""
        n = len(self.head)
        s, tw = self.block.seam, self.plan.tile_w
        head_prob = np.stack([p for _, p, _, _ in self.head]) if n else np.zeros((0, s, tw), np.float32)
        head_weight = np.stack([w for _, _, w, _ in self.head]) if n else np.zeros((0, s, tw), np.float32)
        head_types = np.stack([t for *_, t in self.head]) if n and self.types is not None else None
        stop, offs = self.block.stop, self.plan.row_offsets
        tail_h = offs[stop - 1] + self.plan.tile_h - self.block.y1 if stop < len(offs) else 0
        tail = {k: getattr(self, k)[:max(tail_h, 0)].copy() for k in ("sum", "weight", "best", "types")
                if getattr(self, k) is not None}
        return BlockEdges(np.array([c for c, *_ in self.head], np.int64), head_prob, head_weight, head_types, tail)

    def load_tail(self, tail: dict[str, np.ndarray]) -> None:
        """Start from the previous block's tail (its blend of the rows at the top of this block)."""
        for key, value in tail.items():
            getattr(self, key)[:len(value)] = value

    def _flush(self) -> list[Strip]:
        start, stop = self.plan.strip_rows(self.row)
        cut = self.block.seam if self.row == self.block.first else 0  # seam rows: finished by replay_seam
        strip = self.finalize(stop - start, cut)
        self._shift(stop - start)
        self.base = stop
        self.row += 1
        return [strip] if strip is not None else []

    def finalize(self, n: int, cut: int = 0) -> Strip | None:
        """Blend the first ``n`` buffered rows into a strip, leaving out its first ``cut`` rows."""
        if cut >= n:
            return None
        wsum = self.weight[cut:n]
        valid = wsum > 0
        prob = np.divide(self.sum[cut:n], wsum, out=np.zeros_like(wsum), where=valid)
        if self.steps:   # in place: no temporaries the size of the strip
            round_to_steps(prob, self.steps)
        types = self.types[cut:n].copy() if self.types is not None else None
        return Strip(self.base + cut, prob, valid, types)

    def _shift(self, n: int) -> None:
        keep = self.plan.tile_h - n
        for buf in (self.sum, self.weight, self.best, self.types):
            if buf is None:
                continue
            if keep > 0:
                buf[:keep] = buf[n:].copy()
            buf[keep:] = 0


def replay_seam(plan: WindowPlan, block: Block, prev_tail: dict[str, np.ndarray], edges: BlockEdges,
                steps: int | None = None) -> Strip | None:
    """Finish ``block``'s seam rows: the previous block's tail, then the block's head windows in plan
    order, blended by the same operations as a whole run, so the rows come out bit for bit the same."""
    if not block.seam:
        return None
    acc = _StripAccumulator(plan, steps, with_types=edges.head_types is not None, block=block)
    acc.load_tail(prev_tail)
    for k, col in enumerate(edges.head_cols.tolist()):
        win = Window(col, block.y0, plan.tile_w, block.seam)
        acc.add(block.first, win, edges.head_prob[k], edges.head_weight[k],
                None if edges.head_types is None else edges.head_types[k])
    return acc.finalize(block.seam)
