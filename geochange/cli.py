"""The ``geochange`` command line: parse arguments, call one library function, print.

Every command is a thin wrapper; the work lives in the library (``geochange.detect.detect``,
``geochange.evaluate.evaluate``, ``geochange.info``) so it can be used from Python too.
User errors (``GeochangeError``) become one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import os

import functools
import json
import math
from pathlib import Path
from typing import Callable, List, NoReturn, Optional

import typer
from typer.core import TyperCommand, TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from geochange import __version__
from geochange.checks import check_local_folder
from geochange.errors import GeochangeError, Terminated

def _flags_take_no_value(params: list) -> list:
    """Show an on/off option (``--overwrite``, ``--help``) in --help as the bare flag it is, without a
    ``<bool>`` that suggests ``--overwrite true``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _usage_error_in_one_line(exc: typer.TyperException) -> NoReturn:
    """A usage error (unknown option, bad value, missing argument) as the one line every error is."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    message = " ".join(exc.format_message().split())
    stderr.print(f"[red]error:[/red] {escape(message)}{escape(hint)}", highlight=False)
    raise typer.Exit(getattr(exc, "exit_code", 2))


class _Command(TyperCommand):
    """A geochange command: flags shown as flags in --help."""

    def get_params(self, ctx):
        return _flags_take_no_value(super().get_params(ctx))


class _Group(TyperGroup):
    """The ``geochange`` group: flags shown as flags, usage errors of every command in one line on stderr
    (exit status 2), as the library's errors are (``user_errors``)."""

    def get_params(self, ctx):
        return _flags_take_no_value(super().get_params(ctx))

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
                raise   # `geochange` alone prints the help
            _usage_error_in_one_line(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
                raise
            _usage_error_in_one_line(exc)


app = typer.Typer(
    cls=_Group,
    help="Find change between two dates of georeferenced imagery, on rasters of any size.\n\n"
         "Example: geochange detect before.tif after.tif --out changes/",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})
# soft wrap: a message is one line however long, in a terminal or a log file (no cut at 80 columns)
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def user_errors(fn: Callable) -> Callable:
    """Turn a GeochangeError (and Ctrl-C) into one line on stderr and a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GeochangeError as exc:
            stderr.print(f"[red]error:[/red] {escape(' '.join(str(exc).split()))}", highlight=False)
            raise typer.Exit(2) from None
        except Terminated:
            stderr.print("[red]terminated[/red]: no output was left half-written")
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            stderr.print("[red]interrupted[/red]: no output was left half-written")
            raise typer.Exit(130) from None
    return wrapper


_SIGTERM_PID: int | None = None   # the process whose run SIGTERM unwinds (not its forked workers)


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (``timeout``, schedulers, Kubernetes) unwinds the run as Ctrl-C does, cleaning up.

    A forked child (a multiprocessing pool or DataLoader worker) inherits this handler; there SIGTERM
    is its parent stopping it, and it dies at once as it would without the handler (an exception in
    a pool worker blocked on the task queue's lock could leave the parent's pool.terminate() waiting)."""
    import os
    import signal

    if os.getpid() != _SIGTERM_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _catch_sigterm() -> None:
    import os
    import signal
    import threading

    global _SIGTERM_PID
    if threading.current_thread() is threading.main_thread():
        _SIGTERM_PID = os.getpid()
        signal.signal(signal.SIGTERM, _on_sigterm)


def _int_list(text: str, option: str, what: str = "integers", example: str = "0,1,2") -> list[int]:
    """``"1, 2,3"`` -> ``[1, 2, 3]``; a one-line error naming ``option`` otherwise."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise GeochangeError(f"{option} {text}: give {what} separated by commas, e.g. {example}") from None


def _number_list(text: str, option: str, what: str, example: str) -> list[float | int]:
    """``"255"`` -> ``[255]``, ``"-1,0.5"`` -> ``[-1, 0.5]``: whole numbers as ints; a one-line error otherwise."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise GeochangeError(f"{option} {text}: give {what} separated by commas, e.g. {example}")
    return [int(v) if v.is_integer() else v for v in values]


def _parse_bands(text: Optional[str]) -> Optional[list[int]]:
    return (_int_list(text, "--bands", "band numbers", "1,2,3") or None) if text else None


def _parse_params(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> dict; values read as JSON when they parse (numbers, true, [..]), else text."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GeochangeError(f"--param {item}: expected KEY=VALUE, e.g. -p variant=DRLnet1")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _parse_pair(text: str) -> tuple[str, str]:
    """``BEFORE,AFTER`` of ``--pair``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise GeochangeError(f"--pair {text!r}: give BEFORE,AFTER (two paths separated by a comma)")
    return parts[0], parts[1]


def _set_quiet(quiet: bool) -> None:
    from geochange.progress import set_quiet

    set_quiet(quiet)


@app.command(cls=_Command, epilog="Examples:\n\n"
             "  geochange detect 2009.tif 2020.tif\n\n"
             "  geochange detect before.tif after.tif --out run1/ --min-area 50 --tile 1024\n\n"
             "  geochange detect before.tif after_utm.vrt --bands 1,2,3 --normalize histogram --overwrite\n\n"
             "  geochange detect landsat7_2001.tif landsat7_2011.tif --bands 1,2,3,4 --rgb 3,2,1\n\n"
             "  geochange detect before.tif after.tif --model drlnet --types 5 --seed 1\n\n"
             "  geochange detect before.tif after.tif --checkpoint runs/cdcluster/last.pt\n\n"
             "  geochange detect before.tif after.tif --labels marks.gpkg\n\n"
             "  geochange detect before.tif after.tif --labels marks.shp --label-field changed --model rscvae\n\n"
             "  geochange detect city_2015.tif city_2020.tif --workers 4\n\n"
             "  geochange detect city_2015.tif city_2020.tif --scheduler tcp://10.0.0.5:8786 --resume")
@user_errors
def detect(
    before: str = typer.Argument(..., metavar="BEFORE", help="Earlier image (any GDAL-readable path); outputs use its grid and CRS."),
    after: str = typer.Argument(..., metavar="AFTER", help="Later image; warped onto BEFORE's grid on the fly if needed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder \\[default: <before stem>_change/ beside BEFORE]."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model: cva (change-vector magnitude + two-gamma mixture threshold; the default), logistic (learns from --labels; their default), drlnet (Zhang et al. 2017: learns from the pair, also maps change types), vae or rscvae (learn from the pair itself without --checkpoint; anomaly mode); trained models come with --checkpoint."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="A model trained with `geochange train` (its last.pt); --model is then read from it."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Marks drawn on the scene (GeoPackage, Shapefile, GeoJSON; any CRS): polygons or points with a field change = 1 (changed) or 0 (unchanged). The model (default logistic, a few seconds; also cdcluster, vae, rscvae) learns from them and the scene's cheap negatives, then maps the whole scene."),
    label_field: str = typer.Option("change", "--label-field", help="The marks' field: 1 changed, 0 unchanged."),
    label_layer: Optional[str] = typer.Option(None, "--label-layer", help="The marks' layer, when the file holds several."),
    types: Optional[int] = typer.Option(None, "--types", help="drlnet: number of change types K_T \\[default: 5]."),
    param: List[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="Model hyper-parameter KEY=VALUE (repeatable), e.g. -p variant=DRLnet1."),
    tile: int = typer.Option(512, help="Window size in pixels (shrunk to the raster if larger)."),
    overlap: int = typer.Option(64, help="Overlap between windows in pixels; blended without seams."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per model call."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    bands: Optional[str] = typer.Option(None, help="Bands to compare, e.g. 1,2,3 \\[default: the common first N]."),
    rgb: Optional[str] = typer.Option(None, "--rgb", help="Bands the quicklook shows as red, green, blue, numbered as compared (after --bands), e.g. 3,2,1 for bands 1, 2, 3 that are blue, green, red \\[default: from the bands' colour interpretation or descriptions, else the first three]."),
    normalize: str = typer.Option("meanstd", help="Radiometric normalisation of AFTER to BEFORE: meanstd, histogram or none."),
    resampling: str = typer.Option("bilinear", help="Resampling when AFTER is warped: nearest, bilinear, cubic, ..."),
    coregister: str = typer.Option("auto", "--coregister", help="auto: measure AFTER's residual shift (sub-pixel) and correct it when above 0.2 px; off: leave AFTER as aligned."),
    min_area: Optional[float] = typer.Option(None, "--min-area", help="Minimum mapping unit (m²): changed regions smaller than this are dropped from mask and polygons, holes smaller than it filled; 0: none \\[default: 9 pixels, at least 10 m²]."),
    hysteresis: Optional[float] = typer.Option(None, "--hysteresis", help="Low threshold (a probability <= the model's): regions of pixels above it are change if they reach the threshold somewhere \\[default: off]."),
    seed: int = typer.Option(0, help="Seed of the scene sampling (and of models that draw at random)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of an earlier run in --out."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Run the raster in blocks on a local Dask cluster of N processes (same result as one process) where that can be faster: else in one process, said in one line."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the blocks on the Dask cluster at this address, e.g. tcp://host:8786 (input and --out paths must be reachable from the workers)."),
    resume: bool = typer.Option(False, "--resume", help="Go on with an interrupted --workers/--scheduler run in --out, skipping its finished blocks."),
    block_size: int = typer.Option(2048, "--block-size", help="Rows of the raster per block with --workers/--scheduler (rounded to whole window rows)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
) -> None:
    """Detect change from BEFORE to AFTER: change rasters (COG), polygons (GPKG, SHP), quicklook, summary."""
    from geochange.detect import DetectOptions, default_out_dir
    from geochange.detect import detect as run_detect

    _set_quiet(quiet)
    params = _parse_params(param)
    if types is not None:
        params["types"] = types
    opts = DetectOptions(model=model, checkpoint=str(checkpoint) if checkpoint else None, labels=labels,
                         label_field=label_field, label_layer=label_layer, model_params=params, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
                         bands=_parse_bands(bands), rgb=_int_list(rgb, "--rgb", "band numbers", "3,2,1") if rgb else None,
                         normalize=normalize, resampling=resampling, coregister=coregister,
                         min_area=min_area, hysteresis_low=hysteresis, seed=seed, overwrite=overwrite, workers=workers, scheduler=scheduler,
                         resume=resume, block_size=block_size)
    summary = run_detect(before, after, out, opts)
    folder = out or default_out_dir(before)
    if not quiet:
        stdout.print(f"[green]done[/green]: {summary['changed_area_m2']:,.0f} m² changed "
                  f"({100 * summary['changed_fraction']:.2f} % of valid pixels), "
                  f"{summary['polygons']} polygons, in {summary['timings_s']['total']:.1f} s -> {folder}",
                  highlight=False, soft_wrap=True)


@app.command("detect-many", cls=_Command, epilog="Examples:\n\n"
             "  geochange detect-many pairs.csv --workers 4\n\n"
             "  geochange detect-many pairs.csv --scheduler tcp://10.0.0.5:8786 --model drlnet --min-area 50\n\n"
             "pairs.csv has the columns before,after,out (and optionally model,checkpoint), one pair per row;\n"
             "relative paths are relative to the CSV.")
@user_errors
def detect_many(
    pairs: Path = typer.Argument(..., metavar="PAIRS", help="CSV of pairs: before, after, out [, model, checkpoint]."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a Dask scheduler, e.g. tcp://host:8786 \\[default: a local cluster]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes of the local cluster \\[default: one per core, at most 4]."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model for rows that name none \\[default: cva]."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Trained model for rows that name none."),
    param: List[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="Model hyper-parameter KEY=VALUE (repeatable)."),
    tile: int = typer.Option(512, help="Window size in pixels."),
    overlap: int = typer.Option(64, help="Overlap between windows in pixels."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (on the workers)."),
    coregister: str = typer.Option("auto", "--coregister", help="auto: correct AFTER's residual shift when above 0.2 px; off."),
    min_area: Optional[float] = typer.Option(None, "--min-area", help="Minimum mapping unit (m²); 0: none \\[default: 9 pixels, at least 10 m²]."),
    seed: int = typer.Option(0, help="Seed of the scene sampling."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of earlier runs."),
    report: Optional[Path] = typer.Option(None, "--report", help="Where to write the report CSV \\[default: detect_many.csv beside PAIRS]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
) -> None:
    """Detect change on many pairs, one Dask task each; a failed pair is reported and the others go on."""
    from geochange.detect import DetectOptions
    from geochange.detect_many import detect_many as run_many

    _set_quiet(quiet)
    opts = DetectOptions(model=model, checkpoint=str(checkpoint) if checkpoint else None, model_params=_parse_params(param),
                         tile=tile, overlap=overlap, device=device, coregister=coregister, min_area=min_area, seed=seed,
                         overwrite=overwrite)
    rows = run_many(pairs, opts, scheduler=scheduler, workers=workers, report=report)
    failed = [r for r in rows if r["status"] != "ok"]
    if not quiet or failed:
        for r in rows:
            mark = "[green]ok[/green]" if r["status"] == "ok" else "[red]failed[/red]"
            detail = f"{r['changed_area_m2']:,.0f} m² changed" if r["status"] == "ok" else escape(r["error"])
            stdout.print(f"{mark} {escape(r['out'])}: {detail}", highlight=False, soft_wrap=True)
    if failed:
        stderr.print(f"[red]error:[/red] {len(failed)} of {len(rows)} pairs failed (see the report)", highlight=False)
        raise typer.Exit(1)


@app.command(cls=_Command, epilog="Examples:\n\n"
             "  geochange evaluate run1/change_mask.tif truth.tif\n\n"
             "  geochange evaluate run1/change_mask.tif buildings_changed.gpkg --truth-layer changes --json\n\n"
             "  geochange evaluate run1/change_mask.tif taizhou_truth.tif --ignore-value 255\n\n"
             "Truth pixels on the truth raster's nodata (value, mask or alpha) and those of an --ignore-value\n"
             "are not scored: a sparse truth (a few labelled pixels, the rest e.g. 255) is scored on its labels.")
@user_errors
def evaluate(
    pred: str = typer.Argument(..., metavar="PRED", help="Change mask to score (uint8: 1 changed, 0 unchanged, 255 nodata)."),
    truth: str = typer.Argument(..., metavar="TRUTH", help="Ground truth: a raster (brought onto PRED's grid) or a polygon layer."),
    truth_layer: Optional[str] = typer.Option(None, "--truth-layer", help="Layer of a vector truth with several layers."),
    change_values: Optional[str] = typer.Option(None, "--change-values", help="Truth raster values meaning 'changed', e.g. 2 \\[default: any value > 0]."),
    ignore_value: List[str] = typer.Option([], "--ignore-value", metavar="V[,V...]", help="Truth raster value not to score, e.g. 255 for unlabelled pixels of a sparse truth (repeatable, or several separated by commas); the truth's nodata is never scored."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pixel metrics of a change mask against ground truth: accuracy, precision, recall, F1, kappa, IoU, mIoU."""
    from geochange.evaluate import evaluate as run_evaluate

    _set_quiet(quiet or as_json)
    values = (_int_list(change_values, "--change-values", "raster values", "1,2") or None) if change_values else None
    ignore = [v for text in ignore_value for v in _number_list(text, "--ignore-value", "raster values", "255")]
    result = run_evaluate(pred, truth, truth_layer=truth_layer, change_values=values, ignore_values=ignore)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    s = result["scores"]
    table = Table(title=f"{pred} vs {truth}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "precision", "recall", "f1", "kappa", "iou", "miou", "specificity"):
        table.add_row(key, f"{s[key]:.4f}")
    (tn, fp), (fn, tp) = s["confusion_matrix"]
    table.add_row(escape("confusion [[tn, fp], [fn, tp]]"), escape(f"[[{tn}, {fp}], [{fn}, {tp}]]"))
    table.add_row("pixels scored", f"{s['n_pixels']:,}")
    if "ignored" in result:
        values = ", ".join(str(v) for v in result["ignored"]["values"])
        table.add_row(f"pixels ignored (truth {values})", f"{result['ignored']['pixels']:,}")
    stdout.print(table)


@app.command(cls=_Command, epilog="Examples:\n\n  geochange info scene.tif\n\n  geochange info before.tif after.tif --json")
@user_errors
def info(
    files: List[str] = typer.Argument(..., metavar="FILES", help="One or more rasters; with two, also how they overlap."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """CRS, size, resolution, bands and nodata of rasters, and the overlap of a pair."""
    from geochange.info import describe_overlap, describe_raster

    result = {"rasters": [describe_raster(f) for f in files]}
    if len(files) == 2:
        result["overlap"] = describe_overlap(files[0], files[1])
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    for r in result["rasters"]:
        table = Table(title=r["path"], show_header=False)
        for key in ("driver", "crs", "crs_name", "width", "height", "res", "bands", "dtype", "nodata", "alpha", "bounds"):
            value = r[key]
            if key in ("bounds", "res") and value is not None:
                value = [round(v, 9) for v in value]
            table.add_row(key, escape(str(value)))
        stdout.print(table)
    if "overlap" in result:
        ov = result["overlap"]
        if ov["overlap"]:
            stdout.print(f"overlap: {ov['width']}x{ov['height']} px of BEFORE at col {ov['col_off']}, row {ov['row_off']} "
                      f"({100 * ov['fraction_of_before']:.1f} % of BEFORE); AFTER "
                      f"{'is warped onto' if ov['after_warped'] else 'already lies on'} BEFORE's grid; "
                      f"{ov['bands_compared']} bands compared", highlight=False)
        else:
            stdout.print(f"overlap: none ({ov['reason']})", highlight=False)


def _parse_split(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise GeochangeError(f"--split {text}: give three fractions for train, val and test, e.g. 0.8,0.1,0.1")
    return values


@app.command(cls=_Command, epilog="Examples:\n\n"
             "  geochange tile 2009.tif 2020.tif --out chips/ --size 256\n\n"
             "  geochange tile before.tif after_wgs84.tif --labels changes.gpkg --size 128 --overlap 32 --out ds/\n\n"
             "  geochange tile 1999.tif 2005.tif --labels truth.tif --pair 1999-2005 --split 0.7,0.15,0.15 --seed 1 --out ds/\n\n"
             "Read the result with geochange.data.open_dataset(DIR); the format is described in docs/datasets.md.")
@user_errors
def tile(
    before: str = typer.Argument(..., metavar="BEFORE", help="Earlier image (any GDAL-readable path); chips use its grid and CRS."),
    after: str = typer.Argument(..., metavar="AFTER", help="Later image; warped onto BEFORE's grid on the fly if needed (as in detect)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (shards/, index.csv, dataset.json)."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Change labels: a raster (> 0 changed, nodata unknown) or polygons of changed areas."),
    label_layer: Optional[str] = typer.Option(None, "--label-layer", help="Layer of a vector label file with several layers."),
    size: int = typer.Option(256, help="Chip side in pixels of BEFORE's grid."),
    overlap: int = typer.Option(0, help="Overlap between neighbouring chips in pixels (never across splits)."),
    split: str = typer.Option("0.8,0.1,0.1", help="Train,val,test fractions of the spatial blocks."),
    block: int = typer.Option(8, help="Side of a split block, in chips: each block goes whole to one split."),
    seed: int = typer.Option(0, help="Seed of the split draw (same seed, same dataset)."),
    min_valid: float = typer.Option(0.99, "--min-valid", help="Skip chips with a smaller share of pixels valid in both dates."),
    bands: Optional[str] = typer.Option(None, help="Bands to keep, e.g. 1,2,3 \\[default: the common first N]."),
    pair: Optional[str] = typer.Option(None, "--pair", help="Name of the pair in index.csv, e.g. 1999-2005 \\[default: before->after file stems]."),
    resampling: str = typer.Option("bilinear", help="Resampling when AFTER is warped: nearest, bilinear, cubic, ..."),
    shard_size: int = typer.Option(2048, "--shard-size", help="Patches per shard file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
) -> None:
    """Cut two dates into co-registered chip pairs (with labels) for training: a sharded GeoTIFF dataset."""
    from geochange.data.tile import tile as run_tile

    _set_quiet(quiet)
    check_local_folder(out)
    summary = run_tile(before, after, out, labels=labels, label_layer=label_layer, size=size, overlap=overlap,
                       bands=_parse_bands(bands), split=_parse_split(split), block=block, seed=seed,
                       min_valid=min_valid, pair_name=pair, resampling=resampling, shard_size=shard_size,
                       overwrite=overwrite)
    if not quiet:
        s, lab = summary["splits"], summary["labels"]
        stdout.print(f"[green]done[/green]: {summary['patches']} patch pairs of {summary['size']} px "
                     f"(train {s['train']}, val {s['val']}, test {s['test']}; changed {lab['changed']}, "
                     f"unchanged {lab['unchanged']}, unlabelled {lab['unknown']}), "
                     f"{summary['skipped_nodata']} chips skipped for nodata, in {summary['seconds']:.1f} s -> {out}",
                     highlight=False, soft_wrap=True)
        for note in summary["notes"]:
            stdout.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)


@app.command(cls=_Command, epilog="Examples:\n\n"
             "  geochange train cdcluster --data levir_cd/ --out runs/cdcluster\n\n"
             "  geochange train vae --data wdc/ --out runs/vae --epochs 30 --device cuda\n\n"
             "  geochange train vae --data wdc/ --init runs/vae/last.pt -p stage=finetune --out runs/vae_ft\n\n"
             "  geochange train cdcluster --data levir_cd/ --out runs/cdcluster --resume\n\n"
             "  geochange train logistic --labels marks.gpkg --pair 2015.tif,2020.tif --pair 2016.tif,2021.tif --out runs/marks\n\n"
             "  torchrun --nproc-per-node 4 -m geochange train cdcluster --data levir_cd/ --ddp --device cuda")
@user_errors
def train(
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="Model to train: vae, rscvae or cdcluster; with --labels also logistic (optional with --init)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="A dataset from `geochange tile` / `build-wdc`, or a LEVIR-CD folder (A/, B/, label/)."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Marks (polygons or points with a field change = 1 or 0, any CRS) drawn on the scenes given by --pair; the format of detect --labels."),
    pair: List[str] = typer.Option([], "--pair", metavar="BEFORE,AFTER", help="BEFORE,AFTER: a scene the --labels marks lie on (repeatable)."),
    label_field: str = typer.Option("change", "--label-field", help="The marks' field: 1 changed, 0 unchanged."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: last.pt, epoch_NNN.pt, metrics.csv \\[default: runs/<model>]."),
    epochs: Optional[int] = typer.Option(None, help="Epochs \\[default: the paper's]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per step \\[default: the paper's]."),
    lr: Optional[float] = typer.Option(None, help="Learning rate \\[default: the paper's]."),
    param: List[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="Model hyper-parameter KEY=VALUE (repeatable)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from the weights of this checkpoint (fine-tuning)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    split: str = typer.Option("train", help="Split of the dataset to train on."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (mixed precision on CUDA)."),
    workers: int = typer.Option(0, help="Reader processes for the data."),
    seed: int = typer.Option(0, help="Seed: initial weights, shuffling, sampling."),
    report_ia: bool = typer.Option(False, "--report-ia", help="cdcluster: report the Initial Alignment (adjusted NMI of truth and the untrained network's pseudo-labels) over --ia-seeds x --ia-k, write initial_alignment.csv in --out, and stop."),
    ia_seeds: str = typer.Option("0,1,2,3,4", "--ia-seeds", help="Seeds for --report-ia."),
    ia_k: str = typer.Option("2,5,10,20", "--ia-k", help="Cluster counts k for --report-ia."),
    ddp: bool = typer.Option(False, "--ddp", help="One process of a torchrun launch: DistributedDataParallel over all of them (gloo on CPU, NCCL on GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
) -> None:
    """Train a model on patch pairs; checkpoints every epoch, metrics in metrics.csv."""
    from geochange.device import check_device_name
    from geochange.train import TrainOptions, train_model

    _set_quiet(quiet)
    if out:
        check_local_folder(out)
    check_device_name(device)
    if report_ia:
        seeds, ks = _int_list(ia_seeds, "--ia-seeds"), _int_list(ia_k, "--ia-k", example="2,5,10")
        if not seeds or not ks:
            raise GeochangeError("--report-ia needs at least one seed (--ia-seeds) and one k (--ia-k)")
        _report_ia(model, data, out, seeds, ks, device, split)
        return
    name = model or (None if init else "")
    folder = out or Path("runs") / (model or (init.parent.name + "_ft" if init else "model"))
    opts = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed, out=folder,
                        resume=resume, workers=workers, split=split, ddp=ddp)
    if labels is not None:
        from geochange.train.marks import train_on_marks

        if data is not None or init is not None or not model:
            raise GeochangeError("--labels trains a named model on marks over --pair scenes: give MODEL, "
                                 "not --data or --init")
        summary = train_on_marks(model, [_parse_pair(p) for p in pair], labels, opts, _parse_params(param),
                                 field=label_field)
    elif data is None:
        raise GeochangeError("give --data (a dataset folder) or --labels with --pair (marks on scenes)")
    else:
        summary = train_model(name, str(data), opts, _parse_params(param), init=str(init) if init else None)
    if not quiet and summary.get("rank", 0) == 0:  # under torchrun, one line for the run, not one per rank
        last = summary["history"][-1] if summary["history"] else {}
        loss = f", final loss {last['loss']:.4g}" if "loss" in last else ""
        stdout.print(f"[green]done[/green]: {summary['model']} trained {summary['epochs']} epochs on "
                     f"{summary['samples']} samples ({summary['device']}){loss} -> {summary['checkpoint']}",
                     highlight=False, soft_wrap=True)


@app.command("build-wdc", cls=_Command, epilog="Examples:\n\n"
             "  geochange build-wdc --manifest data_manifests/wdc.yaml --out wdc/ --download\n\n"
             "  geochange build-wdc --manifest city.yaml --out ds/ --patch 128 --noisy 20000 --workers 8\n\n"
             "  geochange build-wdc --manifest city.yaml --out ds/ --scheduler tcp://10.0.0.5:8786\n\n"
             "  geochange build-wdc --manifest examples/wdc_naip.yaml --out wdc_example/   (offline, seconds)\n\n"
             "The manifest format and the summary are described in docs/datasets.md.")
@user_errors
def build_wdc(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="YAML manifest: imagery and footprints per year, pairs, filter year."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (shards/, index.csv, dataset.json, changes_*.gpkg, summary.json)."),
    download: bool = typer.Option(False, "--download", help="Fetch the manifest's url entries into --cache first (resumes, checks SHA-256)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for downloaded files \\[default: $GEOCHANGE_CACHE or ~/.cache/geochange]."),
    patch: Optional[int] = typer.Option(None, "--patch", show_default=False, help="Patch side in pixels of the earlier image's grid \\[default: 128]."),
    noisy: Optional[int] = typer.Option(None, "--noisy", show_default=False, help="Noisy negatives in all (random crops, 9:1 with/without buildings) \\[default: 250000]."),
    positives: Optional[int] = typer.Option(None, "--positives", help="Positive patches at most \\[default: one per annotated change]."),
    negatives: Optional[int] = typer.Option(None, "--negatives", help="Negative patches \\[default: as many as the positives]."),
    building_share: Optional[float] = typer.Option(None, "--building-share", show_default=False, help="Share of noisy patches containing a building of the filter year \\[default: 0.9]."),
    split: Optional[str] = typer.Option(None, show_default=False, help="Train,val,test fractions of the spatial blocks \\[default: 0.7,0.1,0.2]."),
    block: Optional[int] = typer.Option(None, show_default=False, help="Side of a split block, in patches \\[default: 8]: each block goes whole to one split, and so does each changed building (the split of the block holding its centre)."),
    margin: Optional[int] = typer.Option(None, help="Pixels around a negative patch that hold no change \\[default: patch/2]."),
    seed: Optional[int] = typer.Option(None, show_default=False, help="Seed of the splits and of every random draw (same seed, same dataset) \\[default: 0]."),
    min_valid: Optional[float] = typer.Option(None, "--min-valid", show_default=False, help="Skip patches with a smaller share of pixels valid in both dates \\[default: 0.99]."),
    bands: Optional[str] = typer.Option(None, help="Bands to keep, e.g. 1,2,3 \\[default: the common first N]."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler \\[default: a local cluster]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes of the local cluster; 0 runs in this process \\[default: min(4, CPUs)]."),
    shard_size: int = typer.Option(2048, "--shard-size", help="Patches per shard file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
) -> None:
    """Building-change patch dataset from multi-year footprints and imagery (Hamaguchi et al. 2019, appendix A).

    Defaults of the options that shape the dataset (--patch, --noisy, --block, ...): the manifest's `options:` where it sets them (a flag given here wins), else the ones shown.
    """
    from geochange.data.wdc import build_wdc as run_build

    _set_quiet(quiet)
    check_local_folder(out)
    given = dict(patch=patch, noisy=noisy, positives=positives, negatives=negatives, building_share=building_share,
                 split=_parse_split(split) if split is not None else None, block=block, margin=margin, seed=seed,
                 min_valid=min_valid, bands=_parse_bands(bands), scheduler=scheduler, workers=workers)
    options = {k: v for k, v in given.items() if v is not None}   # the others: the manifest's options, or the defaults
    summary = run_build(manifest, out, cache=cache, download=download,
                        options={**options, "shard_size": shard_size, "overwrite": overwrite})
    if not quiet:
        p = summary["patches"]
        stdout.print("buildings: " + ", ".join(f"{y} {n}" for y, n in summary["buildings"].items()), highlight=False)
        for pair, c in summary["changes"].items():
            stdout.print(f"changes {pair}: {c['new']} new, {c['destroyed']} destroyed", highlight=False)
        for kind, s in summary["kinds"].items():
            stdout.print(f"{kind}: train {s['train']}, val {s['val']}, test {s['test']}", highlight=False)
        stdout.print(f"[green]done[/green]: {p['total']} patch pairs (train {p['train']}, val {p['val']}, "
                     f"test {p['test']}) in {summary['seconds']:.1f} s -> {out} (summary.json)",
                     highlight=False, soft_wrap=True)
        for note in summary["notes"]:
            stdout.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)


def _report_ia(model: Optional[str], data: Path, out: Optional[Path], seeds: list[int], ks: list[int],
               device: str, split: str) -> None:
    """``train cdcluster --report-ia``: the Initial Alignment table, printed and saved as CSV."""
    if model != "cdcluster":
        raise GeochangeError("--report-ia is CDCluster's Initial Alignment: use `geochange train cdcluster --report-ia`")
    from geochange.io.atomic import write_text
    from geochange.models.cdcluster import initial_alignment

    table = initial_alignment(str(data), seeds, ks, device=device, split=split)
    folder = out or Path("runs") / "cdcluster"
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "initial_alignment.csv", table.to_csv(index=False))
    grid = Table("k", *[f"seed {s}" for s in seeds], "mean", title="Initial Alignment (adjusted NMI)")
    for k, rows in table.groupby("k"):
        values = dict(zip(rows["seed"], rows["ia"]))
        grid.add_row(str(k), *[f"{values[s]:.4f}" for s in seeds], f"{rows['ia'].mean():.4f}")
    stdout.print(grid)
    stdout.print(f"-> {folder / 'initial_alignment.csv'}", highlight=False)


@app.command("qgis-install", epilog="Examples:\n\n"
             "  geochange qgis-install\n\n"
             "  geochange qgis-install --profile work\n\n"
             "  geochange qgis-install --plugins-dir /path/to/QGIS3/profiles/default/python/plugins\n\n"
             "Then enable 'geochange' once in QGIS: Plugins > Manage and Install Plugins > Installed (docs/qgis.md).")
@user_errors
def qgis_install(
    plugins_dir: Optional[Path] = typer.Option(None, "--plugins-dir", help="QGIS's plugin folder \\[default: the profile's python/plugins]."),
    profile: str = typer.Option("default", "--profile", help="QGIS user profile."),
) -> None:
    """Install the QGIS plugin: a Processing provider (Detect, Evaluate) that runs this environment's geochange."""
    from geochange.qgis.install import install

    try:
        target = install(plugins_dir, profile)
    except OSError as exc:
        raise GeochangeError(f"cannot install the QGIS plugin: {exc}") from None
    stdout.print(f"[green]done[/green]: QGIS plugin in {target}; enable 'geochange' once in QGIS (Plugins > "
                 "Manage and Install Plugins > Installed), then find it in the Processing toolbox",
                 highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geochange {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Debug messages too (of geochange and of GDAL), e.g. geochange -v detect ...")) -> None:
    """Find change between two dates of georeferenced imagery, on rasters of any size."""
    from geochange.logs import configure_cli_logging

    configure_cli_logging(verbose)
    _catch_sigterm()


def main() -> None:
    """Console-script entry point."""
    _one_malloc_arena()
    app(prog_name="geochange")


def _one_malloc_arena() -> None:
    """One glibc heap for the command's process (``mallopt(M_ARENA_MAX, 1)``, what ``MALLOC_ARENA_MAX=1``
    does): glibc gives each thread that allocates (the engine's reader and writer, torch's) a heap of
    its own and keeps what they free, so peak RSS grew by up to 100 MiB for nothing; inference was
    no slower (benchmarks/bench_models.py). A process that imports geochange as a library is left alone;
    an explicit ``MALLOC_ARENA_MAX`` wins."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 1)   # M_ARENA_MAX
    except (OSError, AttributeError):   # not glibc (musl, ...): nothing to set
        pass


if __name__ == "__main__":
    main()
