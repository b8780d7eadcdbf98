"""Sliding-window inference: read windows in the background, predict in batches, blend, stream strips.

The pipeline has three stages running at once: a reader thread reads (and warps) the next batches
of window pairs, the calling thread runs the model, and a writer thread hands finished strips to
the sinks (raster writers, polygoniser, statistics). Overlapping predictions are blended with
weights that fall off toward window edges (plan.blend_weights). Only one strip of windows is held
(``tile`` rows by the grid's width), so peak memory does not grow with the raster's height, and
with a fixed tile it grows with the width only through that one strip.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
from rasterio.windows import Window

from geochange.engine.plan import WindowPlan, blend_weights
from geochange.io.pair import RasterPair
from geochange.models.base import ChangeModel


@dataclass
class Strip:
    """Finished full-width rows of the output grid: blended probability and validity."""

    row_off: int
    prob: np.ndarray   # (h, width) float32; undefined where not valid
    valid: np.ndarray  # (h, width) bool
    types: np.ndarray | None = None  # (h, width) uint8 change type 1..K where changed, for typed models


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


def run_sliding(pair: RasterPair, model: ChangeModel, plan: WindowPlan, sinks: Sequence[StripSink], *,
                batch_size: int = 8, prefetch: int = 2, prob_steps: int | None = None,
                window_hooks: Sequence[Callable[[Window, np.ndarray, np.ndarray, np.ndarray], None]] = (),
                advance: Callable[[int], None] = lambda n: None) -> EngineStats:
    """Run ``model`` over every window of ``plan`` and stream blended strips to ``sinks``.

    ``window_hooks`` see each window's input ``(window, before, after, valid)`` once, so that by-
    products of the imagery (the quicklook) need no second read of the rasters.
    ``prob_steps``: round the blended probabilities to multiples of ``1 / prob_steps`` before
    they reach the sinks (so the mask, polygons and probability raster agree exactly).
    """
    stats = EngineStats()
    t_start = time.perf_counter()
    weights = blend_weights(plan.tile_h, plan.tile_w, plan.overlap)
    typed = getattr(model, "n_types", 0) > 0
    acc = _StripAccumulator(plan, prob_steps, with_types=typed)
    with ThreadPoolExecutor(1, "geochange-read") as reader, ThreadPoolExecutor(1, "geochange-write") as writer:
        batches = _prefetch(reader, pair, plan, batch_size, prefetch)
        pending_writes: deque[Future] = deque()

        def emit(strip: Strip) -> None:
            pending_writes.append(writer.submit(_write_all, sinks, strip))
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
            probs = np.clip(np.nan_to_num(probs, nan=0.0), 0.0, 1.0)
            for k, (r, win) in enumerate(zip(rows, windows)):
                for hook in window_hooks:
                    hook(win, before[k], after[k], valid[k])
                for strip in acc.add(r, win, probs[k], weights * valid[k], None if types is None else types[k]):
                    emit(strip)
            stats.windows += len(windows)
            stats.batches += 1
            advance(len(windows))
        for strip in acc.finish():
            emit(strip)
        t = time.perf_counter()
        while pending_writes:
            pending_writes.popleft().result()
        stats.write_wait_s += time.perf_counter() - t
    stats.total_s = time.perf_counter() - t_start
    return stats


def _write_all(sinks: Sequence[StripSink], strip: Strip) -> None:
    for sink in sinks:
        sink.write(strip)


def _prefetch(pool: ThreadPoolExecutor, pair: RasterPair, plan: WindowPlan, batch_size: int,
              depth: int) -> Iterator[tuple[list[int], list[Window], np.ndarray, np.ndarray, np.ndarray]]:
    """Batches (window rows, windows, before, after, valid), read and stacked ``depth`` batches ahead."""
    def read_batch(items):
        wps = [pair.read(w) for _, w in items]
        return ([r for r, _ in items], [w.window for w in wps], np.stack([w.before for w in wps]),
                np.stack([w.after for w in wps]), np.stack([w.valid for w in wps]))

    def chunks():
        batch = []
        for item in plan.windows():
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    queue: deque[Future] = deque()
    source = chunks()
    for items in source:
        queue.append(pool.submit(read_batch, items))
        if len(queue) > depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


class _StripAccumulator:
    """Weighted sums of predictions over the rows one window row spans; emits rows once final.

    Change types (categorical) are not averaged: each pixel takes the type of the window that
    weighs most there (the one whose centre is nearest), which shows no seam either.
    """

    def __init__(self, plan: WindowPlan, steps: int | None = None, with_types: bool = False) -> None:
        self.plan, self.steps = plan, steps
        shape = (plan.tile_h, plan.width)
        self.sum = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape, np.float32)
        self.best = np.zeros(shape, np.float32) if with_types else None
        self.types = np.zeros(shape, np.uint8) if with_types else None
        self.row = 0   # window row being accumulated
        self.base = 0  # grid row of self.sum[0]

    def add(self, r: int, window: Window, prob: np.ndarray, weight: np.ndarray,
            types: np.ndarray | None = None) -> list[Strip]:
        out = []
        while r > self.row:
            out.append(self._flush())
        y0 = int(window.row_off) - self.base
        x0 = int(window.col_off)
        h, w = prob.shape
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        self.sum[region] += prob * weight
        self.weight[region] += weight
        if self.types is not None and types is not None:
            better = weight > self.best[region]
            self.types[region][better] = types[better]
            self.best[region][better] = weight[better]
        return out

    def finish(self) -> list[Strip]:
        return [self._flush()]

    def _flush(self) -> Strip:
        start, stop = self.plan.strip_rows(self.row)
        n = stop - start
        wsum = self.weight[:n]
        valid = wsum > 0
        prob = np.divide(self.sum[:n], wsum, out=np.zeros_like(wsum), where=valid)
        if self.steps:
            prob = np.round(prob * self.steps) / self.steps
        types = self.types[:n].copy() if self.types is not None else None
        strip = Strip(start, prob, valid, types)
        keep = self.plan.tile_h - n
        buffers = [b for b in (self.sum, self.weight, self.best, self.types) if b is not None]
        for buf in buffers:
            if keep > 0:
                buf[:keep] = buf[n:].copy()
            buf[keep:] = 0
        self.base = stop
        self.row += 1
        return strip
