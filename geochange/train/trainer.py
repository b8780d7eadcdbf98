"""The one training loop every trainable model shares (``geochange train`` and self-training in detect).

The loop owns data, device, AMP, seeds, optimiser steps, checkpoints, ``--resume``, metrics.csv and
progress; a model (``models.base.TrainableModel``) owns its network, its loss and its hooks. Seeds
are drawn per epoch from ``(seed, epoch)``, so a run resumed after epoch ``e`` continues exactly as
the uninterrupted run would have (on the CPU; CUDA kernels are not all deterministic).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geochange.device import resolve_device, torch_threads
from geochange.errors import GeochangeError
from geochange.io.atomic import discard, write_text
from geochange.models.base import TrainableModel
from geochange.progress import say, task, untold
from geochange.train import distributed
from geochange.train.checkpoint import config_values, load_checkpoint, save_checkpoint
from geochange.train.data import TrainData, open_training_data

LAST = "last.pt"


@dataclass
class TrainOptions:
    """What ``train`` can be told; None means the model's config value (the paper's default)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    seed: int = 0
    out: str | Path | None = None   # run folder: last.pt, epoch_NNN.pt, metrics.csv; None keeps nothing
    resume: bool = False            # continue from out/last.pt
    amp: bool = True                # mixed precision on CUDA (ignored on the CPU)
    workers: int = 0                # reader processes (torch DataLoader workers)
    standardize: bool = True        # standardise each date per pair as detect does; False: items already are
    split: str | None = "train"     # which split of a dataset folder to train on
    keep_every_epoch: bool = True   # epoch_NNN.pt besides last.pt
    threads: int | None = 1         # torch CPU threads during training (see device.torch_threads); None: torch's
    ddp: bool = False               # one process of a torchrun launch (DistributedDataParallel; see distributed.py)


def train(model: TrainableModel, data, options: TrainOptions | None = None) -> dict:
    """Train ``model`` on ``data`` (a dataset folder or a sequence of item dicts); returns a summary.

    The summary holds ``epochs`` (done), ``history`` (one dict of mean scalars per epoch) and
    ``checkpoint`` (the last one written, or None without ``out``).
    """
    import torch

    opts = options or TrainOptions()
    ctx, device = distributed.setup(opts.ddp, resolve_device(opts.device))
    out = Path(opts.out) if opts.out is not None else None
    resume_from = _resume_checkpoint(out, model, opts.resume, fresh_ok=not ctx.main)
    if resume_from:  # the run's own configuration; --epochs may extend it
        model.config = model.config_class(**config_values(resume_from))
    _apply_overrides(model, opts)
    items = open_training_data(data, opts.split)
    tdata = TrainData(items, opts.standardize, device, opts.workers, opts.seed)
    tdata.dist = ctx
    if model.net is None:
        model.configure(tdata)   # settings that follow the data (before the batch size is read)
    epochs = int(getattr(model.config, "epochs", 1))
    batch_size = int(getattr(model.config, "batch_size", 16))
    if epochs < 0 or batch_size < 1:
        raise GeochangeError(f"epochs must be >= 0 and batch size >= 1 (got {epochs}, {batch_size})")
    if model.net is None:
        torch.manual_seed(opts.seed)
        model.build(tdata.in_bands)
    elif model.in_bands != tdata.in_bands:
        raise GeochangeError(f"the model was built for {model.in_bands} bands per date, the data has {tdata.in_bands}")
    model.net.to(device)
    model.device = device

    optimizer = model.make_optimizer()
    scheduler = model.make_scheduler(optimizer, epochs, math.ceil(len(tdata) / (batch_size * ctx.world)))
    history: list[dict] = []
    start = 0
    if resume_from:
        model.net.load_state_dict(resume_from["state_dict"])
        model.load_extra_state(resume_from.get("extra") or {})
        if "optimizer" in resume_from:
            optimizer.load_state_dict(resume_from["optimizer"])
        if scheduler is not None and "scheduler" in resume_from:
            scheduler.load_state_dict(resume_from["scheduler"])
        history, start = list(resume_from.get("history") or []), int(resume_from["epoch"])
        say(f"resuming {model.name} after epoch {start} of {epochs}")

    step_fn = distributed.wrap(model, ctx, device)
    use_amp = opts.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    checkpoint = None
    with _run_folder(out if ctx.main else None), \
            torch_threads(opts.threads, device) if opts.threads else contextlib.nullcontext(), \
            task(f"training {model.name}", epochs, unit="epochs") if ctx.main else untold() as advance_epochs:
        advance_epochs(start)
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            torch.manual_seed(opts.seed * 100_003 + epoch)
            rng = np.random.default_rng([opts.seed, epoch])
            model.net.eval()
            logged = dict(model.start_epoch(epoch, tdata) or {})
            positions = model.select(epoch, tdata.index, rng)
            positions = np.arange(len(tdata)) if positions is None else np.asarray(positions, np.int64)
            if len(positions) == 0:
                raise GeochangeError(f"{model.name}: epoch {epoch + 1} has no samples to train on")
            mine = ctx.shard(rng.permutation(positions))
            model.net.train()
            sums = _run_epoch(model, step_fn, tdata, mine, batch_size, epoch, epochs, optimizer, scheduler, scaler,
                              use_amp, ctx)
            distributed.sync_buffers(model.net, ctx)  # each rank's BN statistics moved on its own last batch
            row = {"epoch": epoch + 1, **sums, **logged, "lr": optimizer.param_groups[0]["lr"],
                   "samples": len(positions), "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if ctx.main:
                say(f"{model.name} epoch {epoch + 1}/{epochs}: loss {row['loss']:.4g}")
            advance_epochs(1, f"loss {row['loss']:.4g}")
            if out is not None and ctx.main:
                kwargs = dict(epoch=epoch + 1, history=history, optimizer=optimizer, scheduler=scheduler)
                if opts.keep_every_epoch:
                    save_checkpoint(out / f"epoch_{epoch + 1:03d}.pt", model, **kwargs)
                checkpoint = save_checkpoint(out / LAST, model, **kwargs)
                write_text(out / "metrics.csv", metrics_csv(history))
            distributed.barrier(ctx)
        model.net.eval()
        if epochs > 0:  # fitted on the trained network, saved into the final checkpoint (again on --resume)
            finished = {k: v for k, v in (model.finish(tdata) or {}).items() if isinstance(v, (int, float))}
            if history:
                history[-1].update({f"finish_{k}": v for k, v in finished.items()})
            if out is not None and ctx.main:
                checkpoint = save_checkpoint(out / LAST, model, epoch=epochs, history=history,
                                             optimizer=optimizer, scheduler=scheduler)
                write_text(out / "metrics.csv", metrics_csv(history))
            distributed.barrier(ctx)
    if out is not None and checkpoint is None and start == epochs and (out / LAST).exists():
        checkpoint = out / LAST
    del step_fn  # DDP's reducer holds the process group: free it before the group ends
    distributed.teardown(ctx)
    return {"model": model.name, "epochs": len(history), "history": history,
            "checkpoint": str(checkpoint) if checkpoint else None, "device": device,
            "samples": len(tdata), "config": dataclasses.asdict(model.config),
            "rank": ctx.rank, "world_size": ctx.world}


def _run_epoch(model: TrainableModel, step_fn, tdata: TrainData, positions: np.ndarray, batch_size: int,
               epoch: int, epochs: int, optimizer, scheduler, scaler, use_amp: bool, ctx) -> dict[str, float]:
    """One pass over ``positions`` (already shuffled, this rank's share); the mean of each logged scalar."""
    import torch

    sums: dict[str, float] = {}
    n_batches = math.ceil(len(positions) / batch_size)
    with (task(f"{model.name} epoch {epoch + 1}/{epochs}", n_batches, unit="batches", transient=True) if ctx.main
          else untold()) as advance:
        for step, batch in enumerate(tdata.batches(positions, batch_size)):
            with torch.autocast("cuda", enabled=use_amp):
                outputs = step_fn(batch, epoch)
            loss = outputs["loss"]
            if not torch.isfinite(loss):
                raise GeochangeError(f"{model.name}: the loss became {loss.item()} at epoch {epoch + 1}, "
                                     f"batch {step + 1}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            for key, value in outputs.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            advance(1)
    return distributed.mean_over_ranks({k: v / n_batches for k, v in sums.items()}, ctx)


def _apply_overrides(model: TrainableModel, opts: TrainOptions) -> None:
    """Put --epochs, --batch-size and --lr into the model's config (so checkpoints record them)."""
    changes = {k: v for k, v in (("epochs", opts.epochs), ("batch_size", opts.batch_size), ("lr", opts.lr))
               if v is not None}
    names = {f.name for f in dataclasses.fields(model.config)}
    unknown = [k for k in changes if k not in names]
    if unknown:
        raise GeochangeError(f"model {model.name} has no {unknown[0]!r} setting")
    if changes:
        model.config = dataclasses.replace(model.config, **changes)


@contextlib.contextmanager
def _run_folder(out: Path | None):
    """Create the run folder; if the run fails before its first checkpoint, remove the folder it created
    (an error, Ctrl-C, SIGTERM): no empty run folder is left behind. A folder with checkpoints stays,
    for --resume."""
    created = None   # the topmost folder this run creates
    if out is not None:
        for folder in (out, *out.parents):
            if folder.exists():
                break
            created = folder
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GeochangeError(f"{out}: cannot create the run folder ({exc.strerror or exc})") from None
    try:
        yield
    except BaseException:
        if created is not None and not (out / LAST).exists():
            discard(created)
        raise


def _resume_checkpoint(out: Path | None, model: TrainableModel, resume: bool, fresh_ok: bool = False) -> dict | None:
    """The checkpoint to resume from, or None; refuses to overwrite a finished run by accident
    (``fresh_ok``: ranks other than 0, which never write, skip that check)."""
    if out is None:
        if resume:
            raise GeochangeError("--resume needs the run folder (--out) of the run to continue")
        return None
    last = out / LAST
    if not resume:
        if last.exists() and not fresh_ok:
            raise GeochangeError(f"{out}: holds a training run already; --resume to continue it, or another --out")
        return None
    if not last.exists():
        raise GeochangeError(f"{out}: nothing to resume (no {LAST})")
    ckpt = load_checkpoint(last)
    if ckpt["model"] != model.name:
        raise GeochangeError(f"{last}: a {ckpt['model']} run, not {model.name}")
    return ckpt


def metrics_csv(history: list[dict]) -> str:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def train_model(name: str | None, data, options: TrainOptions | None = None, params: dict | None = None,
                init: str | Path | None = None) -> dict:
    """``geochange train``: train model ``name`` (paper defaults, ``params`` overriding them) on ``data``.

    ``init`` starts from the weights of a checkpoint instead (e.g. fine-tuning a representation:
    ``geochange train vae --init run/last.pt -p stage=finetune``); its model is used when ``name`` is None.
    """
    from geochange.models import create_model
    from geochange.train.checkpoint import model_from_checkpoint

    if init is not None:
        ckpt = load_checkpoint(init)
        if name and name != ckpt["model"]:
            raise GeochangeError(f"{init}: a {ckpt['model']} checkpoint, not {name}")
        model = model_from_checkpoint(ckpt, "cpu", params)
    else:
        if not name:
            raise GeochangeError("name the model to train (or give --init)")
        model = create_model(name, **(params or {}))
    if not isinstance(model, TrainableModel):
        raise GeochangeError(f"model {model.name} is not trained (it fits itself on each scene in `detect`)")
    if not model.trains_on_datasets:
        raise GeochangeError(f"{model.name} learns from marks only: geochange train {model.name} --labels MARKS "
                             "--pair BEFORE,AFTER")
    return train(model, data, options)


def train_on_scene(model: TrainableModel, samples, *, patch: int, patches: int, epochs: int, seed: int = 0) -> dict:
    """Self-training in ``detect`` (no checkpoint): learn from ``patches`` noisy negatives of ``patch`` px
    cropped at random from the scene sample (``ChangeModel.fit``'s windows, already standardised);
    the trainer's ``finish`` hook then fits the model's scoring on them."""
    from geochange.train.data import scene_patches

    items = scene_patches(samples, patch, patches, seed)
    if len(items) < 2:
        raise GeochangeError(f"{model.name}: the scene sample holds fewer than two fully valid {patch}x{patch} "
                             "patches to learn from (a larger or less empty scene, or a smaller -p patch)")
    say(f"{model.name}: learning from {len(items)} patches of the scene itself ({epochs} epochs)")
    return train(model, items, TrainOptions(epochs=epochs, device=model.device, seed=seed, standardize=False))
