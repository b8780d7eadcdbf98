"""One pair on a Dask cluster: blocks of the window plan on the workers, then one assembly.

The plan is cut into bands of window rows (``plan.plan_blocks``). Each block is a Dask task: the
worker opens the pair, runs the engine on the block's windows with the model and normalisation
fitted once on the client, and writes the block's rows of every output into its own folder
(``run_block``): GeoTIFF parts of the rasters, its finished polygons, the regions touching its
borders, and its *edges* (the blend parts of the seam rows it shares with its neighbours).
The client then publishes (``assemble``): it finishes each seam by replaying both blocks' parts
in the whole run's order, mosaics the parts into the COGs through a VRT, joins the border regions
across blocks (and decides them: a block decides the regions it finishes itself, and burns that into
its own mask part), burns those decisions into the mosaicked mask, and sums the statistics. Rasters
come out bit for bit as a single-process run's, and so do the polygons: the same features in the same
order with the same ids (:class:`PlainOrder`).

A block's folder appears only when the block is complete (``journal.publish_block``), and the
journal records it, so an interrupted run resumes with the blocks still to do.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.enums import Resampling

from geochange.engine.fixups import MaskFixups
from geochange.engine.outputs import (DetectOutputs, ground_scale, polygon_schema, polygon_style, publish_styles,
                                      raster_specs, rows_writers)
from geochange.engine.plan import Block, WindowPlan
from geochange.engine.polygons import BorderPieces
from geochange.engine.regions import RegionRule
from geochange.engine.sinks import PolygonSink, RasterSink, StatsSink
from geochange.engine.sliding import BlockEdges, replay_seam, run_sliding
from geochange.errors import GeochangeError
from geochange.io.align import Grid
from geochange.io.journal import DONE, BlockJournal, publish_block
from geochange.io.normalize import Normalizer
from geochange.io.quicklook import QuicklookCanvas
from geochange.io.rasters import flatten, publish_cog, write_vrt
from geochange.io.vectors import LAYER, VectorWriter
from geochange.models.base import ChangeModel


@dataclass
class BlockJob:
    """What a worker needs for any block of one run: the pair, the scene fit, the plan, where to write."""

    before: str
    after: str
    bands: list[int]
    resampling: str
    normalizer: Normalizer | None
    model: ChangeModel
    plan: WindowPlan
    grid: Grid
    work_dir: str
    batch_size: int = 8
    prob_steps: int | None = None
    rule: RegionRule | None = None  # None: the model's threshold, no hysteresis, no MMU
    gdal_cache_bytes: int = 64 * 2**20
    torch_threads: int | None = None  # CPU threads for torch on each worker (None: as the worker is set up)
    after_shift: tuple[float, float] | None = None  # AFTER's co-registration shift (RasterPair.coregister)
    quicklook_bands: list[int] | None = None  # the bands the quicklook shows (io.quicklook.true_colour)
    provenance: dict | None = None  # the run's, for the published outputs (io.provenance)

    @property
    def n_types(self) -> int:
        return getattr(self.model, "n_types", 0)

    @property
    def region_rule(self) -> RegionRule:
        return self.rule or RegionRule.at(self.model.threshold)


def run_block(job: BlockJob, block: Block) -> dict:
    """On a worker: run one block and publish its folder; returns its ``block.json`` record."""
    from geochange.io.pair import RasterPair
    from geochange.progress import set_quiet

    set_quiet(True)
    final = Path(job.work_dir) / "blocks" / f"{block.index:05d}"
    if (final / DONE).is_file():  # a retry of a block that finished (e.g. its worker died afterwards)
        return json.loads((final / DONE).read_text(encoding="utf-8"))
    record: dict = {}

    def fill(folder: Path) -> None:
        t0 = time.perf_counter()
        with rasterio.Env(GDAL_CACHEMAX=job.gdal_cache_bytes), _threads(job), \
                RasterPair.open(job.before, job.after, bands=job.bands, resampling=Resampling[job.resampling],
                                after_shift=job.after_shift) as pair:
            pair.normalizer = job.normalizer
            outputs = DetectOutputs(folder, job.grid, job.region_rule, job.n_types, pair.count, rows=block.body,
                                    rgb=job.quicklook_bands)
            try:
                engine = run_sliding(pair, job.model, job.plan, outputs.sinks, batch_size=job.batch_size,
                                     prob_steps=job.prob_steps, window_hooks=[outputs.quicklook.add_window],
                                     block=block)
                border = outputs.polygons.export()
                outputs.close()
            except BaseException:
                outputs.abort()
                raise
        np.savez(folder / "border.npz", **border.arrays())
        np.savez(folder / "edges.npz", **engine.edges.arrays())
        np.savez(folder / "quicklook.npz", **outputs.quicklook.part(block.y0, block.y1))
        record.update({"block": block.index, "windows": engine.windows, "predict_s": round(engine.predict_s, 3),
                       "seconds": round(time.perf_counter() - t0, 3), "polygons": outputs.vectors.count,
                       **outputs.stats.counts()})
        (folder / DONE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    publish_block(final, fill)
    return json.loads((final / DONE).read_text(encoding="utf-8"))


def _threads(job: BlockJob):
    """Torch's CPU threads on this worker (a local cluster shares the cores among its workers)."""
    if job.torch_threads and getattr(job.model, "uses_torch", False):
        from geochange.device import torch_threads

        return torch_threads(job.torch_threads)
    return contextlib.nullcontext()


def run_blocks(job: BlockJob, blocks: list[Block], journal: BlockJournal, client, advance,
               resume: bool = False) -> tuple[list[dict], int]:
    """Run the blocks not yet done on the cluster of ``client``; returns every block's record and
    how many were resumed. A failed block stops the run, keeping the finished ones for ``--resume``."""
    from distributed import KilledWorker, as_completed

    done = journal.start(resume)
    records: dict[int, dict] = {}
    for i in sorted(done):
        records[i] = json.loads((journal.block_dir(i) / DONE).read_text(encoding="utf-8"))
        advance(records[i]["windows"])
    todo = [b for b in blocks if b.index not in done]
    if todo:
        job_future = client.scatter(job, broadcast=True)
        futures = {client.submit(run_block, job_future, b, key=f"geochange-block-{b.index}-{time.time_ns()}",
                                 pure=False): b for b in todo}
        try:
            for future in as_completed(futures):
                block = futures[future]
                try:
                    records[block.index] = future.result()
                except GeochangeError as exc:
                    raise GeochangeError(f"block {block.index + 1} of {len(blocks)}: {exc}") from None
                except KilledWorker:
                    raise GeochangeError(f"block {block.index + 1} of {len(blocks)}: the workers running it died "
                                         "again and again (out of memory? try a smaller --tile or fewer --workers "
                                         "per machine)") from None
                journal.mark_done(block.index)
                advance(records[block.index]["windows"])
        except BaseException:
            client.cancel(list(futures))
            raise
    return [records[b.index] for b in blocks], len(done)


@dataclass
class Assembled:
    stats: StatsSink
    quicklook: QuicklookCanvas
    polygons: int


def assemble(job: BlockJob, blocks: list[Block], journal: BlockJournal, out_dir: Path, bands: int,
             advance=lambda n=1, note=None: None) -> Assembled:
    """Finish the seams, publish the COGs, the polygons (GeoPackage + Shapefile) of all blocks;
    ``advance(n, note)`` is told of each block, then of the publishing (``len(blocks) + 1`` steps)."""
    grid, rule, specs = job.grid, job.region_rule, raster_specs(job.n_types)
    seams_dir = journal.root / "seams"
    seams_dir.mkdir(exist_ok=True)
    scale = ground_scale(grid)
    stats = StatsSink(scale, rule.low)
    quicklook = QuicklookCanvas(grid.height, grid.width, bands, rule.high, rgb=job.quicklook_bands)
    vectors = VectorWriter(out_dir, grid.crs, polygon_schema(job.n_types > 0), style=polygon_style(job.n_types),
                           metadata=job.provenance)
    fixups = MaskFixups(journal.root / "fixups.bin", scale)
    order = PlainOrder(vectors, grid, job.plan)
    polygons = PolygonSink(order, grid, rule, fixups, job.n_types)  # border regions: held by ``order``
    parts: list[list[tuple[Path, int]]] = [[] for _ in specs]
    try:
        prev_tail: dict[str, np.ndarray] = {}
        for block in blocks:
            folder = journal.block_dir(block.index)
            with np.load(folder / "edges.npz") as z:
                edges = BlockEdges.from_arrays({k: z[k] for k in z.files})
            strip = replay_seam(job.plan, block, prev_tail, edges, job.prob_steps)
            if strip is not None:
                seam_parts = _write_seam(seams_dir, block, grid, specs, strip, rule.low)
                for k, path in enumerate(seam_parts):
                    parts[k].append((path, block.y0))
                stats.write(strip)
                quicklook.write(strip)
                polygons.write(strip)
            prev_tail = edges.tail
            with np.load(folder / "quicklook.npz") as z:
                quicklook.paste({k: z[k] for k in z.files})
            record = json.loads((folder / DONE).read_text(encoding="utf-8"))
            stats.merge(record)
            with np.load(folder / "border.npz") as z:
                polygons.attach(BorderPieces.from_arrays({k: z[k] for k in z.files}))
            # every region finishing in this block's rows is known now: the block's own, and the border
            # regions the seam and the attach finished; they go out merged in a single run's order
            order.merge(_read_frames(folder / "regions.gpkg"))
            for k, spec in enumerate(specs):
                parts[k].append((folder / spec.name, block.body[0]))
            advance(1, f"block {block.index + 1}")
        advance(0, "publishing")
        polygons.close()
        n_polygons = order.merge(())
        sources = [write_vrt(journal.root / f"{spec.name}.vrt", grid, spec.dtype, spec.nodata, parts[k],
                             meta=spec.meta(job.provenance)) for k, spec in enumerate(specs)]
        # the mask and types get the border regions' decisions: in one GeoTIFF each, edited in place
        sources[1:] = [flatten(vrt, vrt.with_suffix(".tif")) for vrt in sources[1:]]
        stats.correct(fixups.apply(*sources[1:]), fixups)
        for spec, src in zip(specs, sources):
            publish_cog(src, out_dir / spec.name, spec.overview_resampling)
        publish_styles(out_dir, specs)
        vectors.close()
        advance(1)
    except BaseException:
        vectors.abort()
        raise
    return Assembled(stats, quicklook, n_polygons)


class PlainOrder:
    """Writes the assembly's polygons in the order, and with the ids, of a single-process run.

    A single run publishes a region when the strip below its last row is added (the plan's strips:
    window row ``r`` finishes grid rows ``[row_offsets[r], row_offsets[r + 1])``; regions touching the
    grid's last row at the end), and the regions one strip finishes in the raster order of their
    first pixel (top row, then leftmost column in it: the order of their labels). :func:`plain_keys`
    computes that key from an outline. A block's own polygons come in that order already (its strips
    are the plan's), so each block's stream is kept as it is and the border regions the assembly
    finished for that block's rows, held meanwhile (this is the ``writer`` of its ``PolygonSink``),
    are merged into it by key.
    """

    def __init__(self, writer: VectorWriter, grid: Grid, plan: WindowPlan) -> None:
        self.writer, self.grid = writer, grid
        self.starts = np.asarray(plan.row_offsets, np.int64)
        self.held: list = []
        self.count = 0  # features written and held (PolygonSink numbers from it; ids are given anew here)

    def write(self, frame) -> None:
        """A border region frame the assembly finished: held until :meth:`merge`."""
        if len(frame):
            self.held.append(frame)
            self.count += len(frame)

    def merge(self, frames) -> int:
        """Write ``frames`` (a block's own polygons, chunk by chunk, in a single run's order) merged with
        the held border regions; returns the number of features written so far."""
        import pandas as pd

        held, held_keys = None, np.zeros(0, np.int64)
        if self.held:
            held = pd.concat(self.held, ignore_index=True)
            held_keys = plain_keys(held, self.grid, self.starts)
            first = np.argsort(held_keys, kind="stable")
            held, held_keys = held.iloc[first].reset_index(drop=True), held_keys[first]
        self.held = []
        for frame in frames:
            if not len(frame):
                continue
            # a held region goes before the first feature of the stream whose key (so far) is above its own
            after = np.maximum.accumulate(plain_keys(frame, self.grid, self.starts))
            n = int(np.searchsorted(held_keys, after[-1]))
            if n:
                at = np.searchsorted(after, held_keys[:n], side="right")
                rank = np.concatenate([np.arange(len(frame)) + np.searchsorted(at, np.arange(len(frame)), side="right"),
                                       at + np.arange(n)])
                frame = pd.concat([frame, held.iloc[:n]], ignore_index=True).iloc[np.argsort(rank)]
                held, held_keys = held.iloc[n:].reset_index(drop=True), held_keys[n:]
            self._write(frame)
        if held is not None and len(held):
            self._write(held)
        self.count = self.writer.count
        return self.writer.count

    def _write(self, frame) -> None:
        frame = frame.drop(columns="id").reset_index(drop=True)
        frame.insert(0, "id", np.arange(self.writer.count + 1, self.writer.count + 1 + len(frame)))
        self.writer.write(frame)


def plain_keys(frame, grid: Grid, starts: np.ndarray) -> np.ndarray:
    """Per feature, the place a single-process run writes it at (:class:`PlainOrder`), as one int64:
    the strip that finishes it, then its first pixel's row, then that pixel's column."""
    import shapely

    coords, index = shapely.get_coordinates(np.asarray(frame.geometry.values), return_index=True)
    inv = ~grid.transform
    col = np.rint(inv.a * coords[:, 0] + inv.b * coords[:, 1] + inv.c).astype(np.int64)
    row = np.rint(inv.d * coords[:, 0] + inv.e * coords[:, 1] + inv.f).astype(np.int64)
    first = np.searchsorted(index, np.arange(len(frame)))
    top = np.minimum.reduceat(row, first)
    below = np.maximum.reduceat(row, first)  # the row under the region's last row (vertices are pixel corners)
    left = np.minimum.reduceat(np.where(row == top[index], col, np.iinfo(np.int64).max), first)
    strip = np.where(below >= grid.height, len(starts), np.searchsorted(starts, below, side="right") - 1)
    h, w = grid.height + 1, grid.width + 1
    return (strip * h + np.clip(top, 0, h - 1)) * w + np.clip(left, 0, w - 1)


def _write_seam(folder: Path, block: Block, grid: Grid, specs, strip, threshold: float) -> list[Path]:
    """The seam rows above ``block`` as GeoTIFF parts of each raster (in ``folder/<block>/``)."""
    folder = folder / f"{block.index:05d}"
    folder.mkdir(exist_ok=True)
    writers = rows_writers(folder, grid, specs, (block.y0, block.y0 + block.seam), cog=False)
    RasterSink(writers[0], writers[1], threshold, writers[2] if len(writers) > 2 else None).write(strip)
    return [w.close() for w in writers]


def _read_frames(path: Path, chunk: int = 50_000):
    """A block's polygons, ``chunk`` features at a time (memory bounded however many there are)."""
    n = pyogrio.read_info(path, layer=LAYER)["features"]
    for start in range(0, n, chunk):
        frame = pyogrio.read_dataframe(path, layer=LAYER, skip_features=start, max_features=chunk)
        yield frame.astype({"type": np.int32}) if "type" in frame else frame
