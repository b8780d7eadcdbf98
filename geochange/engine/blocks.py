"""One pair on a Dask cluster: blocks of the window plan on the workers, then one assembly.

The plan is cut into bands of window rows (``plan.plan_blocks``). Each block is a Dask task: the
worker opens the pair, runs the engine on the block's windows with the model and normalisation
fitted once on the client, and writes the block's rows of every output into its own folder
(``run_block``): GeoTIFF parts of the rasters, its finished polygons, the regions touching its
borders, and its *edges* (the blend parts of the seam rows it shares with its neighbours).
The client then publishes (``assemble``): it finishes each seam by replaying both blocks' parts
in the whole run's order, mosaics the parts into the COGs through a VRT, joins the border regions
across blocks (and decides them: a block decides the regions it finishes itself, and burns that into
its own mask part), burns those decisions into the mosaicked mask, and sums the statistics. Rasters come out bit for bit as a single-process run's;
polygons the same after normalisation (ids are given in block order).

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
from geochange.engine.outputs import DetectOutputs, ground_scale, polygon_schema, raster_specs, rows_writers
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
    vectors = VectorWriter(out_dir, grid.crs, polygon_schema(job.n_types > 0))
    fixups = MaskFixups(journal.root / "fixups.bin", scale)
    polygons = PolygonSink(vectors, grid, rule, fixups, job.n_types)
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
            for frame in _read_frames(folder / "regions.gpkg"):
                polygons.append(frame)
            with np.load(folder / "border.npz") as z:
                polygons.attach(BorderPieces.from_arrays({k: z[k] for k in z.files}))
            for k, spec in enumerate(specs):
                parts[k].append((folder / spec.name, block.body[0]))
            advance(1, f"block {block.index + 1}")
        advance(0, "publishing")
        n_polygons = polygons.close()
        sources = [write_vrt(journal.root / f"{spec.name}.vrt", grid, spec.dtype, spec.nodata, parts[k],
                             spec.description) for k, spec in enumerate(specs)]
        # the mask and types get the border regions' decisions: in one GeoTIFF each, edited in place
        sources[1:] = [flatten(vrt, vrt.with_suffix(".tif")) for vrt in sources[1:]]
        stats.correct(fixups.apply(*sources[1:]), fixups)
        for spec, src in zip(specs, sources):
            publish_cog(src, out_dir / spec.name, spec.overview_resampling)
        vectors.close()
        advance(1)
    except BaseException:
        vectors.abort()
        raise
    return Assembled(stats, quicklook, n_polygons)


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
