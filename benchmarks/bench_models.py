#!/usr/bin/env python3
"""Learned models in ``detect``: inference rate against the model's own, DRLnet's fit and memory (issue 15).

(a) Inference, for each learned model on one synthetic pair (``bench_detect.make_pair``, ``--size``):
    "predict": the model alone on the engine's batches (the same window plan and batches of
    ``--batch-size`` as detect, each batch read first, only ``predict`` timed), torch on one CPU
    thread; "detect": ``geochange.detect.detect`` in this process with ``torch_threads`` = each of
    ``--threads``, its ``timings_s["inference"]`` (read, predict, blend, write, polygons of every
    window). Both are given in Mpx/s of the raster (the predict time is that of all the plan's
    windows, overlaps included), and their ratio: goal >= 0.8 at the faster thread count.
    The models: ``drlnet`` fitted on the scene as detect fits it (paper defaults); ``vae`` and
    ``rscvae`` briefly trained on the pair (``scene_patches``/``scene_epochs`` small: the speed of
    inference does not depend on how well they learned), ``cdcluster`` as initialised; the last
    three run in detect from a checkpoint of that model.
(b) DRLnet's fit on a ``--fit-size`` pair (default 2048) with the paper's defaults: CPU seconds
    (``time.process_time``) of the fit alone, in a fresh subprocess, as detect fits it (the same
    normalisation and scene sample). Goal < 60 CPU-s.
(c) Peak RSS of ``python -m geochange detect A B --out D --quiet --overwrite --model drlnet``
    against ``--model cva`` on a ``--rss-size`` pair (default 4096), each the only child of a
    wrapper process (``bench_detect.run_for_peak_rss``). Goal: drlnet <= cva + 300 MiB.

``--load N`` runs (a) with N busy processes beside it (another job on the machine: the case where a
second torch thread hurts most).

``--device cuda`` runs (a) on the GPU instead: detect's end-to-end Mpx/s against the model alone on
the same batches (its pure forward pass, the inputs already read; goal >= 0.9), and skips (b), (c).
It refuses to run where torch sees no CUDA GPU. ``--tiny`` is the test suite's smoke run (a 256 px
pair, tiny fits, seconds).

    python3 benchmarks/bench_models.py --workdir /tmp/gcm                    # all parts, CPU
    python3 benchmarks/bench_models.py --workdir /tmp/gcm --skip-fit --skip-rss --load 1   # (a) beside a busy process
    python3 benchmarks/bench_models.py --workdir /tmp/gcm --device cuda      # on a GPU
    python3 benchmarks/bench_models.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ("drlnet", "vae", "rscvae", "cdcluster")
#: quick settings of the models trained on the pair (inference speed does not depend on them)
QUICK = {"vae": {"scene_patches": 200, "scene_epochs": 1}, "rscvae": {"scene_patches": 200, "scene_epochs": 1}}
TINY_DRLNET = {"max_samples": 300, "pretrain_epochs": 1, "stage_epochs": 1}

#: the fit of (b), run in a fresh interpreter: prints the fit's CPU and wall seconds and sample count
_FIT = """
import json, sys, time
from geochange.detect import DetectOptions
from geochange.io.pair import RasterPair
from geochange.models import create_model
from geochange.progress import set_quiet
set_quiet(True)
before, after, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
opts = DetectOptions()
with RasterPair.open(before, after) as pair:
    samples = pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size, seed=0)
    model = create_model("drlnet", device="cpu", **params)
    t, w = time.process_time(), time.perf_counter()
    model.fit([(s.before, s.after, s.valid) for s in samples], seed=0)
    print(json.dumps({"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w,
                      "n_samples": model.n_samples}))
"""


# --------------------------------------------------------------------------------------------------
# (a) inference
# --------------------------------------------------------------------------------------------------

def _samples(pair, opts):
    return pair.fit_normalization(opts.normalize, n_windows=opts.sample_windows, size=opts.sample_size,
                                  seed=opts.seed)


def prepare_model(name: str, pair, opts, device: str, workdir: Path, params: dict):
    """The model ready to predict, and the DetectOptions that make detect run the same model."""
    import dataclasses

    from geochange.models import create_model

    if name == "drlnet":
        model = create_model("drlnet", device=device, **params)
        model.fit([(s.before, s.after, s.valid) for s in _samples(pair, opts)], seed=opts.seed)
        return model, dataclasses.replace(opts, model="drlnet", model_params=dict(params))
    from geochange.train.checkpoint import save_checkpoint

    model = create_model(name, device=device, **QUICK.get(name, {}))
    if name == "cdcluster":
        model.build(pair.count)
        model.net.to(device)
    else:
        model.fit([(s.before, s.after, s.valid) for s in _samples(pair, opts)], seed=opts.seed)
    ckpt = save_checkpoint(workdir / f"bench_models_{name}.pt", model)
    return model, dataclasses.replace(opts, model=name, checkpoint=str(ckpt))


def predict_alone(model, pair, plan, batch_size: int, device: str) -> tuple[float, int]:
    """Seconds of ``predict`` (``predict_with_types`` for typed models) over every batch of the plan, the
    inputs read before each call (not timed); one torch thread on the CPU. Returns (seconds, windows)."""
    from geochange.device import torch_threads
    from geochange.engine.sliding import plan_batches, whole_plan

    typed = getattr(model, "n_types", 0) > 0
    seconds, windows = 0.0, 0
    sync = _cuda_sync(device)
    with torch_threads(1, device):
        for items in plan_batches(plan, batch_size, whole_plan(plan)):
            wps = [pair.read(w) for _, w in items]
            before = np.stack([w.before for w in wps])
            after = np.stack([w.after for w in wps])
            valid = np.stack([w.valid for w in wps])
            sync()
            t = time.perf_counter()
            out = model.predict_with_types(before, after, valid) if typed else model.predict(before, after, valid)
            sync()
            seconds += time.perf_counter() - t
            windows += len(items)
            del out
    return seconds, windows


def _cuda_sync(device: str):
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return torch.cuda.synchronize


def detect_inference(before: Path, after: Path, out: Path, opts) -> dict:
    from geochange.detect import detect

    shutil.rmtree(out, ignore_errors=True)
    summary = detect(str(before), str(after), out, opts)
    shutil.rmtree(out, ignore_errors=True)
    return summary


def _spin(stop) -> None:
    """A busy process (pure Python, one core): the "other work" of ``--load``."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class Load:
    """``n`` busy processes while the block runs (``--load``): another job on the machine."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list = []

    def __enter__(self) -> "Load":
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for proc in self.procs:
            proc.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.procs:
            self.stop.set()
            for proc in self.procs:
                proc.join(10)


def bench_inference(pair_paths: tuple[Path, Path], args, params: dict) -> list[dict]:
    import dataclasses

    from geochange.detect import DetectOptions
    from geochange.device import resolve_device
    from geochange.engine.plan import plan_windows
    from geochange.io.pair import RasterPair
    from geochange.progress import set_quiet

    set_quiet(True)
    device = resolve_device(args.device)
    threads = args.threads if device == "cpu" else [None]
    opts = DetectOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=device,
                         overwrite=True)
    has_threads = "torch_threads" in {f.name for f in dataclasses.fields(DetectOptions)}
    rows = []
    before, after = pair_paths
    for name in args.models:
        with RasterPair.open(str(before), str(after)) as pair:
            t = time.perf_counter()
            model, mopts = prepare_model(name, pair, opts, device, args.workdir, params if name == "drlnet" else {})
            prep = time.perf_counter() - t
            plan = plan_windows(pair.grid.height, pair.grid.width, args.tile, args.overlap)
            pixels = pair.grid.height * pair.grid.width
            with Load(args.load):
                alone = min(predict_alone(model, pair, plan, args.batch_size, device)[0] for _ in range(args.repeats))
        row = {"model": name, "device": device, "load": args.load, "pixels": pixels, "windows": len(plan),
               "prepare_s": prep,
               "predict_s": alone, "predict_mpx_s": pixels / alone / 1e6, "detect": {}}
        for n in threads:
            if n is not None and not has_threads and n != threads[0]:
                continue  # an older geochange: detect has no torch_threads option
            run_opts = dataclasses.replace(mopts, torch_threads=n) if n is not None and has_threads else mopts
            best = None
            for _ in range(args.repeats):
                with Load(args.load):
                    s = detect_inference(before, after, args.workdir / f"out_models_{name}", run_opts)
                tm = s["timings_s"]
                if best is None or tm["inference"] < best["inference"]:
                    best = {"inference": tm["inference"], "model": tm.get("model"), "fit": tm.get("fit")}
            best["mpx_s"] = pixels / best["inference"] / 1e6
            best["ratio"] = best["mpx_s"] / row["predict_mpx_s"]
            row["detect"][str(n or device)] = best
        rows.append(row)
        print(_inference_line(row), flush=True)
    return rows


def _inference_line(row: dict) -> str:
    parts = [f"  {row['model']:<10} predict alone {row['predict_mpx_s']:6.2f} Mpx/s"]
    for n, d in row["detect"].items():
        what = f"{n} thread{'s' if n != '1' else ''}" if n.isdigit() else n
        parts.append(f"detect ({what}) {d['mpx_s']:6.2f} Mpx/s = {d['ratio']:.2f}x (model {d['model']:.1f} s of "
                     f"{d['inference']:.1f} s)")
    return "; ".join(parts)


def print_inference(rows: list[dict], goal: float) -> None:
    if not rows:
        return
    r0 = rows[0]
    side = int(round(r0["pixels"] ** 0.5))
    load = r0.get("load", 0)
    busy = f", {load} busy process{'es' if load > 1 else ''} beside it" if load else ""
    print(f"\n(a) inference on the {side}x{side} pair ({r0['windows']} windows), {r0['device']}{busy}: Mpx/s of the "
          "raster")
    cols = list(r0["detect"])
    hdr = f"{'model':<10} {'predict alone':>13}" + "".join(f" {'detect ' + c:>14} {'ratio':>6}" for c in cols)
    print(hdr + "   best")
    print("-" * (len(hdr) + 8))
    for r in rows:
        line = f"{r['model']:<10} {r['predict_mpx_s']:>13.2f}"
        for c in cols:
            d = r["detect"].get(c)
            line += f" {d['mpx_s']:>14.2f} {d['ratio']:>6.2f}" if d else f" {'-':>14} {'-':>6}"
        best_c = max(r["detect"], key=lambda c: r["detect"][c]["mpx_s"])
        best = r["detect"][best_c]["ratio"]
        print(f"{line}   {best_c}: {best:.2f} {'ok' if best >= goal else 'BELOW'} (goal >= {goal})")
    print("(predict alone: the model on the engine's batches, one torch thread, inputs read beforehand; detect: "
          "timings_s['inference'], with torch_threads = the column)")


# --------------------------------------------------------------------------------------------------
# (b) DRLnet's fit, (c) peak RSS
# --------------------------------------------------------------------------------------------------

def bench_fit(pair_paths: tuple[Path, Path], params: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", _FIT, str(pair_paths[0]), str(pair_paths[1]), json.dumps(params)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the drlnet fit failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_rss(pair_paths: tuple[Path, Path], workdir: Path, params: dict, n: int) -> dict:
    from bench_detect import run_for_peak_rss

    out = {}
    for method in ("cva", "drlnet"):
        dest = workdir / f"out_models_rss_{method}"
        cmd = [sys.executable, "-m", "geochange", "detect", str(pair_paths[0]), str(pair_paths[1]), "--out", str(dest),
               "--quiet", "--overwrite", "--model", method, "--device", "cpu"]
        if method == "drlnet":
            for k, v in params.items():
                cmd += ["--param", f"{k}={json.dumps(v)}"]
        mib, wall, _ = run_for_peak_rss(cmd, f"detect --model {method} on the {n}x{n} pair")
        summary = json.loads((dest / "summary.json").read_text())
        out[method] = {"peak_mib": mib, "wall_s": wall, "timings_s": summary["timings_s"]}
        print(f"  detect --model {method:<7} peak RSS {mib:6.0f} MiB (wall {wall:.1f} s, "
              f"inference {summary['timings_s'].get('inference', 0):.1f} s)", flush=True)
        shutil.rmtree(dest, ignore_errors=True)
    out["excess_mib"] = out["drlnet"]["peak_mib"] - out["cva"]["peak_mib"]
    return out


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None, help="pairs (reused) and outputs [a temporary folder]")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models of part (a) [all]")
    p.add_argument("--size", type=int, default=2048, help="side of the pair of part (a) [2048]")
    p.add_argument("--fit-size", type=int, default=2048, help="side of the pair of part (b) [2048]")
    p.add_argument("--rss-size", type=int, default=4096, help="side of the pair of part (c) [4096]")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch threads of detect in (a) [1 2; --tiny: 1]")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="repeats of each timing in (a), best kept [1]")
    p.add_argument("--load", type=int, default=0,
                   help="(a) with this many busy processes running beside it (another job on the machine) [0]")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: part (a) on the GPU against the forward pass")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-fit", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--drlnet-param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a DRLnetConfig field (value read as JSON)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 256 px pairs, tiny fits (the test suite)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    params = {}
    for item in args.drlnet_param:
        k, _, v = item.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    if args.tiny:
        args.size = args.fit_size = args.rss_size = 256
        args.tile, args.overlap, args.batch_size = 128, 16, 4
        params = {**TINY_DRLNET, **params}
        args.threads = args.threads or [1]
        QUICK.update(vae={"scene_patches": 16, "scene_epochs": 1}, rscvae={"scene_patches": 100, "scene_epochs": 1})
    args.threads = args.threads or [1, 2]
    cuda = args.device.lower().startswith("cuda")
    if cuda:
        from geochange.device import resolve_device
        from geochange.errors import GeochangeError

        try:
            args.device = resolve_device(args.device)
        except GeochangeError as exc:
            print(f"bench_models.py --device {args.device}: {exc}; this mode needs a GPU", file=sys.stderr)
            return 2
        args.skip_fit = args.skip_rss = True

    from bench_detect import make_pair

    temp = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="geochange-models-")) if temp else args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"params": params, "device": args.device, "cpus": os.cpu_count()}
    try:
        print(f"workdir: {args.workdir} (cpus: {os.cpu_count()}, device {args.device}, drlnet overrides: "
              f"{params or 'none (paper defaults)'})", flush=True)
        if not args.skip_inference:
            print(f"\n(a) inference, {args.size}x{args.size} pair", flush=True)
            rows = bench_inference(make_pair(args.workdir, args.size), args, params)
            results["inference"] = rows
            print_inference(rows, 0.9 if cuda else 0.8)
        if not args.skip_fit:
            print(f"\n(b) drlnet fit, {args.fit_size}x{args.fit_size} pair, fresh subprocess", flush=True)
            fit = bench_fit(make_pair(args.workdir, args.fit_size), params)
            results["fit"] = fit
            print(f"  fit: {fit['cpu_s']:.1f} CPU-s ({fit['wall_s']:.1f} s wall) on {fit['n_samples']} superpixel "
                  f"samples: {'ok' if fit['cpu_s'] < 60 else 'ABOVE'} (goal < 60 CPU-s)")
        if not args.skip_rss:
            print(f"\n(c) peak RSS, {args.rss_size}x{args.rss_size} pair", flush=True)
            rss = bench_rss(make_pair(args.workdir, args.rss_size), args.workdir, params, args.rss_size)
            results["rss"] = rss
            print(f"  drlnet - cva: {rss['excess_mib']:+.0f} MiB: {'ok' if rss['excess_mib'] <= 300 else 'ABOVE'} "
                  "(goal <= +300 MiB)")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    finally:
        if temp:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
