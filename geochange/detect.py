"""``geochange detect``: a change map of two dates, end to end, as files a GIS opens as they are.

Open and align the pair, fit the radiometric normalisation and the model on windows sampled over
the whole scene, run the sliding-window engine, and publish on BEFORE's grid: change_probability.tif,
change_mask.tif (COGs, each with its QGIS style <name>.qml), changes.gpkg / changes.shp (+ changes.qml),
quicklook.png, summary.json. Every file appears under its final name only when complete, and says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

import geochange
from geochange.checks import check_bands, check_local_folder, check_number
from geochange.device import check_device_name, inference_thread_count, inference_threads, resolve_device
from geochange.engine.outputs import DetectOutputs, ground_scale
from geochange.engine.plan import plan_blocks, plan_for
from geochange.engine.regions import RegionRule, default_min_area_m2
from geochange.engine.sliding import run_sliding
from geochange.errors import GeochangeError
from geochange.io.atomic import discard, run_token, write_text
from geochange.io.journal import WORK_DIR, BlockJournal, file_identity, state_digest
from geochange.io.marks import Marks
from geochange.io.outdir import OutputFolder
from geochange.io.pair import RasterPair
from geochange.io.provenance import now, run_provenance
from geochange.io.quicklook import acquisition_date, captions, true_colour
from geochange.models import create_model, learns_from_marks, marks_models, model_class
from geochange.progress import say, task, warn
from geochange.train.checkpoint import load_checkpoint, model_from_checkpoint
from geochange.train.marks import marked_scene

#: the model ``detect --labels`` trains when none is named (chosen by benchmarks/bench_labels.py)
LABELS_MODEL = "logistic"
#: change_probability.tif holds multiples of 2**-20: exact in float32, fine enough that no value piles
#: up (cva's ranking probability reaches 1 - 2**-21 only at 1400x its threshold), and the mask,
#: polygons and raster all see the same rounded values
PROB_STEPS = 2**20
log = logging.getLogger(__name__)

OUTPUTS = ("change_probability.tif", "change_probability.qml", "change_mask.tif", "change_mask.qml", "change_type.tif",
           "change_type.qml", "change_type.tif.aux.xml", "changes.gpkg", "changes.shp", "changes.qml", "quicklook.png",
           "summary.json")
#: the outputs of models that tell change types apart (io.styles: the type raster's style and class names)
TYPE_OUTPUTS = ("change_type.tif", "change_type.qml", "change_type.tif.aux.xml")


@dataclass
class DetectOptions:
    """Everything ``detect`` can be told; the defaults are what the CLI uses."""

    model: str | None = None       # None: the checkpoint's model, or cva
    checkpoint: str | None = None  # a trained model (``geochange train``); it is not refitted on the scene
    labels: str | None = None      # an analyst's marks (io.marks): the model learns from them, then maps the scene
    label_field: str = "change"    # the marks' field: 1 changed, 0 unchanged
    label_layer: str | None = None  # the marks' layer, when the file holds several
    model_params: dict = field(default_factory=dict)
    tile: int = 512
    overlap: int = 64
    batch_size: int = 8
    device: str = "auto"
    bands: list[int] | None = None
    normalize: str = "meanstd"
    coregister: str = "auto"       # auto: measure AFTER's residual shift, correct it above io.coregister.TOLERANCE_PX; off
    resampling: str = "bilinear"
    min_area: float | None = None          # the MMU (m²): smaller regions are not change; None: automatic
    hysteresis_low: float | None = None    # candidates from this probability; None: the model's threshold
    seed: int = 0
    sample_windows: int = 64
    sample_size: int = 256
    overwrite: bool = False
    gdal_cache_mb: int | None = None  # GDAL's block cache; None: one row of the inputs' blocks and room (_cache_bytes)
    workers: int | None = None    # run blocks of the plan on a local Dask cluster of this many processes
    scheduler: str | None = None  # ... or on the Dask cluster at this address
    resume: bool = False          # go on with an interrupted blocked run in the same output folder
    block_size: int = 2048        # rows of the grid per block (rounded to whole window rows)
    rgb: list[int] | None = None  # the quicklook's red, green, blue bands (1-based, as compared); None: found
    torch_threads: int | None = None  # torch's CPU threads during inference; None: device.inference_thread_count()

    @property
    def distributed(self) -> bool:
        """Whether the plan runs in blocks on a Dask cluster (``engine.blocks``)."""
        return self.workers is not None or bool(self.scheduler)


def default_out_dir(before: str) -> Path:
    """``<before stem>_change/`` beside BEFORE (in the working folder for remote paths)."""
    if "://" in before or before.startswith("/vsi"):
        return Path.cwd() / f"{Path(before.split('?')[0]).stem}_change"
    p = Path(before)
    return p.with_name(f"{p.stem}_change")


def detect(before: str, after: str, out: str | Path | None = None,
           options: DetectOptions | None = None) -> dict:
    """Detect change from ``before`` to ``after`` and write the outputs into ``out``; returns the summary."""
    opts = options or DetectOptions()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        resampling = Resampling[opts.resampling]
    except KeyError:
        raise GeochangeError(f"unknown resampling {opts.resampling!r} (e.g. nearest, bilinear, cubic)") from None
    check_options(opts)
    if out:
        check_local_folder(out)
    log.debug("detect %s -> %s with %s", before, after, opts)
    ckpt = load_checkpoint(opts.checkpoint) if opts.checkpoint else None
    opts = _with_model_name(opts, ckpt)
    # models that do not use torch run on the CPU, and do not pay for importing it
    device = resolve_device(opts.device) if model_class(opts.model).uses_torch else "cpu"
    if check_device_name(opts.device).startswith("cuda") and device == "cpu":
        say(f"the {opts.model} model runs on the CPU")
    with rasterio.Env(GDAL_CACHEMAX=_cache_bytes(before, opts.gdal_cache_mb)), \
            RasterPair.open(before, after, bands=opts.bands, resampling=resampling) as pair:
        marks = Marks(opts.labels, pair.grid, opts.label_field, opts.label_layer) if opts.labels else None
        if opts.rgb and max(opts.rgb) > pair.count:
            raise GeochangeError(f"--rgb {','.join(map(str, opts.rgb))}: the pair has {pair.count} bands as "
                                 "compared (numbered 1.. in the order of --bands)")
        out_dir, created = _prepare_out_dir(out, before, opts.overwrite, opts.resume)
        try:
            with OutputFolder(out_dir, OUTPUTS):   # locked; as it was before if the run fails
                summary = _run(pair, out_dir, opts, device, timings, ckpt, marks)
                timings["total"] = round(time.perf_counter() - t0, 3)
                summary["timings_s"] = timings
                write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        except BaseException:
            if created:
                _remove_if_empty(out_dir)
            raise
    return summary


def check_options(opts: DetectOptions) -> None:
    """Refuse options that cannot work, in one line naming the option (before anything is opened)."""
    check_number(opts.tile, "--tile", low=16, integer=True, what="pixels")
    check_number(opts.overlap, "--overlap", low=0, integer=True, what="pixels")
    if opts.overlap >= opts.tile:
        raise GeochangeError(f"--overlap ({opts.overlap}) must be less than --tile ({opts.tile}); "
                             "a quarter of the tile is usual")
    check_number(opts.batch_size, "--batch-size", low=1, integer=True)
    check_number(opts.block_size, "--block-size", low=1, integer=True, what="rows")
    check_number(opts.workers, "--workers", low=1, integer=True)
    check_number(opts.min_area, "--min-area", low=0, what="(m²)")
    check_number(opts.hysteresis_low, "--hysteresis", low=0, high=1, what="(a probability)")
    check_number(opts.sample_windows, "sample_windows", low=1, integer=True)
    check_number(opts.sample_size, "sample_size", low=1, integer=True)
    check_number(opts.torch_threads, "torch_threads", low=1, integer=True)
    check_bands(opts.bands)
    if opts.rgb is not None:
        check_bands(opts.rgb, "--rgb")
        if len(opts.rgb) not in (1, 3):
            raise GeochangeError(f"--rgb {','.join(map(str, opts.rgb))}: give three bands (red, green, blue), "
                                 "e.g. --rgb 3,2,1, or one (grey)")
    if opts.resume and not opts.distributed:
        raise GeochangeError("--resume goes on with a run of blocks: give --workers or --scheduler as well")
    if opts.coregister not in ("auto", "off"):
        raise GeochangeError(f"--coregister {opts.coregister}: give auto or off")
    if opts.labels and opts.checkpoint:
        raise GeochangeError("give --labels (train on marks of this scene) or --checkpoint (a trained model), not both")
    if opts.labels and opts.model and not learns_from_marks(opts.model):
        raise GeochangeError(f"--labels: {opts.model} does not learn from marks; use one of "
                             f"{', '.join(marks_models())}")


def _run(pair: RasterPair, out_dir: Path, opts: DetectOptions, device: str, timings: dict,
         ckpt: dict | None = None, marks: Marks | None = None) -> dict:
    not_blocks = _why_not_blocks(pair, opts, device)
    if not opts.distributed or not_blocks:
        summary = _fit_and_run(pair, out_dir, opts, device, timings, ckpt, None, marks)
        if not_blocks:
            summary["engine"]["local_cluster"] = {"workers": opts.workers, "used": False, "reason": not_blocks}
        return summary
    from geochange.scheduler import BackgroundClient

    # the cluster starts, and its workers import what a block needs, while the scene is fitted here
    warm = ["geochange.engine.blocks", model_class(opts.model).__module__]
    with BackgroundClient(opts.scheduler, opts.workers, warm) as cluster:
        return _fit_and_run(pair, out_dir, opts, device, timings, ckpt, cluster, marks)


def _why_not_blocks(pair: RasterPair, opts: DetectOptions, device: str) -> str | None:
    """Why ``--workers N`` runs the plan in this process here (said in one line), or None.

    On one machine the blocks run only where a local cluster can be faster than one process
    (``scheduler.why_not_local_blocks``); a model on torch's CPU threads already keeps every core
    busy. ``--scheduler`` always uses its cluster, and ``--resume`` always runs blocks (a resumable run).
    """
    from geochange import scheduler

    if not opts.workers or opts.scheduler or opts.resume:
        return None
    # the plan the model will run on (a per-pixel model's strips; no model is built for a network's)
    context = create_model(opts.model, **opts.model_params).context_px if not model_class(opts.model).uses_torch \
        else None
    plan = plan_for(pair.grid.height, pair.grid.width, opts.tile, opts.overlap, context, pair.block_height)
    blocks = len(plan_blocks(plan, opts.block_size))
    cores = scheduler.usable_cores()
    per_run = cores if device == "cpu" and model_class(opts.model).uses_torch else scheduler.CORES_PER_RUN
    why = scheduler.why_not_local_blocks(opts.workers, blocks, cores, per_run, opts.block_size)
    if why:
        say(f"--workers {opts.workers}: {why}; running in this process, which is faster "
            "(--resume runs blocks all the same, for a resumable run)")
    return why


def _fit_and_run(pair: RasterPair, out_dir: Path, opts: DetectOptions, device: str, timings: dict,
                 ckpt: dict | None, cluster, marks: Marks | None = None) -> dict:
    grid = pair.grid
    t = time.perf_counter()
    # three steps: co-registration, normalisation, the model (a model that trains shows its epochs too)
    with task("fitting on the scene", 3, unit="steps") as advance:
        advance(0, "co-registration")
        coreg = pair.coregister(opts.coregister, seed=opts.seed)  # first: the normalisation sees the corrected pair
        if coreg.applied:
            say(f"AFTER is off by {coreg.shift_px[0]:+.2f}, {coreg.shift_px[1]:+.2f} px (rows, columns): corrected")
        advance(1, "normalisation")
        samples = pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size,
                                         seed=opts.seed)
        if not samples:
            raise GeochangeError("no valid pixels where the two dates overlap (nodata or alpha everywhere)")
        advance(1, f"{opts.model} model")
        learned = None
        if ckpt is not None:
            model = _trained_model(ckpt, opts, device, pair.count)
        elif marks is not None:
            model = create_model(opts.model, device=device, **opts.model_params)
            learned = _fit_marks(model, pair, marks, samples, opts.seed)
        else:
            model = create_model(opts.model, device=device, **opts.model_params)
            model.fit([(s.before, s.after, s.valid) for s in samples], seed=opts.seed)
        del samples
        advance(1)
    timings["fit"] = round(time.perf_counter() - t, 3)

    rule = region_rule(opts, model.threshold, ground_scale(grid).pixel_area())
    plan = plan_for(grid.height, grid.width, opts.tile, opts.overlap, model.context_px, pair.block_height)
    if model.context_px != 0 and (plan.tile_h, plan.tile_w) != (opts.tile, opts.tile):
        narrowed = f" overlapping by {plan.overlap} px" if plan.overlap != opts.overlap else ""
        say(f"the overlap of the dates is {grid.width}x{grid.height} px: using {plan.tile_w}x{plan.tile_h} windows"
            f"{narrowed}")
    n_types = getattr(model, "n_types", 0)
    provenance = run_provenance(pair.before_path, pair.after_path, model.params(), now(), checkpoint=opts.checkpoint,
                                labels=opts.labels, rule=rule.as_dict(), settings=_settings(pair, plan, opts))
    shown, shown_by = true_colour(pair.band_labels(), opts.rgb)   # the quicklook's red, green, blue
    if cluster is None:
        result = _run_whole(pair, model, rule, plan, out_dir, opts, device, timings, shown, provenance)
    else:
        result = _run_blocks(pair, model, rule, plan, out_dir, opts, device, timings, cluster, shown, provenance)
    if not n_types:  # an earlier (overwritten) run's type map would not match this run
        for name in TYPE_OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
    t = time.perf_counter()
    result["quicklook"].load_mask(out_dir / "change_mask.tif")
    dates = [acquisition_date(tags) for tags in pair.tags()]
    result["quicklook"].save(out_dir / "quicklook.png", captions(
        pair.before_path, pair.after_path, opts.model, result["stats"].as_dict()["changed_fraction"], dates=dates,
        rgb=[b + 1 for b in shown]))
    timings["quicklook"] = round(time.perf_counter() - t, 3)
    return {
        "geochange_version": geochange.__version__,
        "created": provenance["CREATED"],
        "inputs": pair.describe(),
        "crs": {"wkt": grid.crs.to_wkt(), "epsg": grid.crs.to_epsg()},
        "grid": {"width": grid.width, "height": grid.height, "transform": list(grid.transform)[:6],
                 "res": list(grid.res), "bounds": list(grid.bounds)},
        "coregistration": coreg.as_dict(),
        "model": {**model.params(), **({"checkpoint": str(opts.checkpoint)} if opts.checkpoint else {})},
        **({"labels": learned} if learned is not None else {}),
        "threshold": model.threshold,
        "engine": {"tile": opts.tile if plan.strips else plan.tile_w, "window": [plan.tile_h, plan.tile_w],
                   "strips": plan.strips, "overlap": plan.overlap,
                   "batch_size": opts.batch_size,
                   "device": device, "windows": result["windows"], "seed": opts.seed,
                   "normalize": opts.normalize, "resampling": opts.resampling, **result.get("engine", {})},
        **result["stats"].as_dict(),
        "polygons": result["polygons"],
        **rule.as_dict(),
        "outputs": [name for name in OUTPUTS if name not in TYPE_OUTPUTS or n_types],
        "quicklook": {"bands": [b + 1 for b in shown], "chosen_by": shown_by, "dates": dates},
    }


def _settings(pair: RasterPair, plan, opts: DetectOptions) -> dict:
    """The engine's settings recorded in every output (io.provenance)."""
    return {"bands": pair.bands_before, "normalize": opts.normalize, "coregister": opts.coregister,
            "resampling": opts.resampling, "tile": opts.tile if plan.strips else plan.tile_w,
            "window": [plan.tile_h, plan.tile_w], "overlap": plan.overlap, "seed": opts.seed}


def _fit_marks(model, pair: RasterPair, marks: Marks, samples, seed: int) -> dict:
    """Train ``model`` on the marks and the scene's cheap negatives; what it learned from, for summary.json."""
    patch, negatives = model.marks_sizes()
    scene = marked_scene(pair, marks, samples, patch=patch, negatives=negatives, seed=seed)
    changed, unchanged = scene.pixel_counts()
    say(f"{model.name}: learning from {marks.n_changed} changed and {marks.n_unchanged} unchanged marks "
        f"({len(scene.marked)} patches) and {len(scene.negatives)} cheap negatives of the scene")
    t = time.perf_counter()
    trained = model.fit_marks(scene, seed=seed) or {}
    history = trained.get("history") or []
    return {**marks.describe(), "marked_patches": len(scene.marked), "negatives": len(scene.negatives),
            "marked_pixels": {"changed": changed, "unchanged": unchanged},
            "epochs": trained.get("epochs", len(history)), "final_loss": history[-1].get("loss") if history else None,
            "seconds": round(time.perf_counter() - t, 3)}


def region_rule(opts: DetectOptions, threshold: float, pixel_area_m2: float) -> RegionRule:
    """The region decision of a run: ``--hysteresis`` (at most the threshold) and ``--min-area``
    (automatic: :func:`~geochange.engine.regions.default_min_area_m2` of the grid's pixel area)."""
    low = threshold if opts.hysteresis_low is None else opts.hysteresis_low
    if low > threshold:
        warn(f"--hysteresis {low} is above the model's threshold {threshold:.4f}: no hysteresis")
        low = threshold
    mmu = default_min_area_m2(pixel_area_m2) if opts.min_area is None else float(opts.min_area)
    return RegionRule(low, threshold, mmu)


def _run_whole(pair: RasterPair, model, rule: RegionRule, plan, out_dir: Path, opts: DetectOptions, device: str,
               timings: dict, shown: list[int] | None = None, provenance: dict | None = None) -> dict:
    """The plan in this process: the engine streams every output as it goes."""
    outputs = DetectOutputs(out_dir, pair.grid, rule, getattr(model, "n_types", 0), pair.count, rgb=shown,
                            provenance=provenance)
    try:
        t = time.perf_counter()
        with task(f"detecting ({opts.model}, {device})", len(plan), unit="windows") as advance, \
                inference_threads(model.uses_torch, device, opts.torch_threads):
            engine = run_sliding(pair, model, plan, outputs.sinks, batch_size=opts.batch_size,
                                 prob_steps=PROB_STEPS, window_hooks=[outputs.quicklook.add_window],
                                 advance=advance)
        timings["inference"] = round(time.perf_counter() - t, 3)
        timings["model"] = round(engine.predict_s, 3)
        t = time.perf_counter()
        with task("writing outputs", outputs.close_steps + 1, unit="steps") as advance:
            advance(0, "last regions")
            n_polygons = outputs.polygons.close()
            advance(1)
            outputs.close(advance)
        timings["publish"] = round(time.perf_counter() - t, 3)
    except BaseException:
        outputs.abort()
        raise
    discard(out_dir / WORK_DIR)  # an unfinished blocked run this one overwrote
    threads = opts.torch_threads or inference_thread_count()
    return {"windows": engine.windows, "stats": outputs.stats, "polygons": n_polygons,
            "quicklook": outputs.quicklook,
            "engine": {"torch_threads": threads} if model.uses_torch and device.startswith("cpu") else {}}


def _run_blocks(pair: RasterPair, model, rule: RegionRule, plan, out_dir: Path, opts: DetectOptions, device: str,
                timings: dict, cluster, shown: list[int] | None = None, provenance: dict | None = None) -> dict:
    """The plan in blocks on a Dask cluster (engine.blocks), resumable, then assembled here."""
    from geochange.engine.blocks import BlockJob, assemble, run_blocks

    blocks = plan_blocks(plan, opts.block_size)
    journal = BlockJournal(out_dir, _fingerprint(pair, model, opts, device, len(blocks)), len(blocks))
    threads = max(1, (os.cpu_count() or 1) // opts.workers) if opts.workers and not opts.scheduler else None
    job = BlockJob(pair.before_path, pair.after_path, pair.bands_before, opts.resampling, pair.normalizer, model,
                   plan, pair.grid, str(journal.root), opts.batch_size, PROB_STEPS, rule,
                   _cache_bytes(pair.before_path, opts.gdal_cache_mb), threads, pair.after_shift, shown,
                   provenance)
    t = time.perf_counter()
    try:
        client = cluster.client()
        plural = "" if len(blocks) == 1 else "s"
        with task(f"detecting ({opts.model}, {device}, {len(blocks)} block{plural})", len(plan),
                  unit="windows") as advance:
            n_workers = len(client.nthreads())
            records, resumed = run_blocks(job, blocks, journal, client, advance, opts.resume)
    except BaseException:
        if journal.done:
            warn(f"{len(journal.done)} of {len(blocks)} blocks are finished and kept in {journal.root}: "
                 "run the same command with --resume to go on from there")
        raise
    cluster.release()  # the workers shut down while the outputs are assembled here
    timings["inference"] = round(time.perf_counter() - t, 3)
    timings["model"] = round(sum(r["predict_s"] for r in records), 3)
    t = time.perf_counter()
    with task("assembling the blocks", len(blocks) + 1, unit="steps") as advance:
        assembled = assemble(job, blocks, journal, out_dir, pair.count, advance)
    journal.remove()
    timings["publish"] = round(time.perf_counter() - t, 3)
    return {"windows": sum(r["windows"] for r in records), "stats": assembled.stats, "polygons": assembled.polygons,
            "quicklook": assembled.quicklook,
            "engine": {"blocks": len(blocks), "blocks_resumed": resumed, "block_size": opts.block_size,
                       "block_seconds": round(sum(r["seconds"] for r in records), 3),
                       "dask_workers": n_workers, "scheduler": opts.scheduler or "local"}}


def _fingerprint(pair: RasterPair, model, opts: DetectOptions, device: str, n_blocks: int) -> dict:
    """What a resumed run must share with the interrupted one: inputs, settings, device and the scene fit."""
    runtime = ("overwrite", "workers", "scheduler", "resume", "gdal_cache_mb", "checkpoint")
    settings = {k: v for k, v in dataclasses.asdict(opts).items() if k not in runtime}
    fp = {"geochange": geochange.__version__, "before": file_identity(pair.before_path),
          "after": file_identity(pair.after_path), "checkpoint": file_identity(opts.checkpoint),
          "settings": settings, "device": device, "blocks": n_blocks, "after_shift": pair.after_shift,
          "fit": state_digest((pair.normalizer, model))}
    return json.loads(json.dumps(fp, default=str))


def _with_model_name(opts: DetectOptions, ckpt: dict | None) -> DetectOptions:
    """Fill in the model's name: the checkpoint's when one is given (and check they agree), else cva."""
    if ckpt is None:
        return dataclasses.replace(opts, model=opts.model or (LABELS_MODEL if opts.labels else "cva"))
    if opts.model and opts.model != ckpt["model"]:
        raise GeochangeError(f"{opts.checkpoint}: a {ckpt['model']} checkpoint, not {opts.model}")
    return dataclasses.replace(opts, model=ckpt["model"])


def _trained_model(ckpt: dict, opts: DetectOptions, device: str, bands: int):
    """The checkpoint's model on ``device``, its config overridden by ``--param``."""
    model = model_from_checkpoint(ckpt, device, opts.model_params)
    if model.in_bands != bands:
        raise GeochangeError(f"{opts.checkpoint}: trained on {model.in_bands} bands per date, the pair has {bands} "
                             "(choose them with --bands)")
    return model


def _cache_bytes(before: str, cache_mb: int | None) -> int:
    """GDAL's block cache for a run: bounded, so memory does not grow with the raster's size.

    Enough for one row of BEFORE's blocks of both dates (a full-width read decompresses each block
    once) and some room for the outputs' rows (written in strips of 16 rows: io.rasters.TEMP_LAYOUT),
    at least 16 MiB: 32 MiB for a 12288-pixel-wide 3-band uint8 pair in 256-pixel tiles.
    """
    if cache_mb:
        return int(cache_mb) * 2**20
    try:
        with rasterio.open(before) as ds:
            row_of_blocks = ds.block_shapes[0][0] * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
    except rasterio.errors.RasterioIOError:
        row_of_blocks = 0
    return max(16 * 2**20, int(1.25 * 2 * row_of_blocks) + 8 * 2**20)


def _prepare_out_dir(out: str | Path | None, before: str, overwrite: bool,
                     resume: bool = False) -> tuple[Path, bool]:
    """Create (or check) the output folder; refuse to overwrite earlier outputs unless asked to.

    An unfinished blocked run there is refused too, unless ``resume`` (go on with it, replacing
    whatever it had published) or ``overwrite`` (start again).
    """
    out_dir = Path(out) if out else default_out_dir(before)
    if out_dir.exists() and not out_dir.is_dir():
        raise GeochangeError(f"{out_dir}: exists and is not a folder")
    unfinished = BlockJournal.exists(out_dir)
    if unfinished and not (resume or overwrite):
        raise GeochangeError(f"{out_dir}: holds an unfinished run; pass --resume (with --workers or --scheduler) "
                             "to go on with it, or --overwrite to start again")
    existing = [n for n in OUTPUTS if (out_dir / n).exists()]
    if existing and not overwrite and not (resume and unfinished):
        raise GeochangeError(f"{out_dir}: holds outputs of an earlier run ({existing[0]}, ...); "
                             f"pass --overwrite to replace them or choose another --out")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".geochange-write-test-{run_token()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GeochangeError(f"{out_dir}: cannot write there ({exc.strerror or exc})") from None
    return out_dir, created


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
