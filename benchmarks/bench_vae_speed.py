#!/usr/bin/env python3
"""Enc-VGG training speed on the CPU: where a step of the disentangled VAE spends its time (issue 13).

One representation step (Eq. 3: forward, backward, Adam) on random ``--patch`` px pairs, 3 bands,
``--batch`` pairs, one torch thread (the trainer's default), for each channel ``--widths`` x head
convolution: ``direct`` (torch's convolution for the hidden layers' 64x64 ... 8x8 kernels, as before)
and ``fft`` (``vae.fft_conv2d``, the default). Prints seconds per training pair, and for the first
setting the forward time of each module (hooks), so the expensive layers show.

    nice -n 10 python3 benchmarks/bench_vae_speed.py [--patch 128] [--batch 4] [--widths 1 0.5 0.25]
"""

from __future__ import annotations

import argparse
import time


def step_seconds(patch: int, width: float, batch: int, fft: bool, kernels=None, breakdown: bool = False) -> dict:
    import torch

    from geochange.models import vae

    vae.FFT_MIN_KERNEL = 8 if fft else 10**9
    torch.manual_seed(0)
    extra = {"kernels": tuple(kernels)} if kernels else {}
    model = vae.DisentangledVAE(vae.VAEConfig(arch="vgg", patch=patch, width=width, **extra))
    model.build(3)
    times: dict[str, float] = {}
    if breakdown:
        named = [(f"{group}{i}", m) for group in ("enc", "hidden", "unhidden", "merge", "dec")
                 for i, m in enumerate(getattr(model.net, group))]
        for name, module in named:
            module.register_forward_pre_hook(lambda m, i, n=name: times.__setitem__(n, times.get(n, 0.0) - time.perf_counter()))
            module.register_forward_hook(lambda m, i, o, n=name: times.__setitem__(n, times[n] + time.perf_counter()))
    x = torch.randn(batch, 3, patch, patch)
    y = x + 0.1 * torch.randn_like(x)
    opt = model.make_optimizer()
    t0 = time.perf_counter()
    loss = model.representation_losses(x, y, beta=0.5)["loss"]
    t1 = time.perf_counter()
    opt.zero_grad()
    loss.backward()
    opt.step()
    t2 = time.perf_counter()
    params = sum(p.numel() for p in model.net.parameters())
    return {"forward": t1 - t0, "backward": t2 - t1, "per_pair": (t2 - t0) / batch, "params_m": params / 1e6,
            "modules": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="pairs per step")
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    ap.add_argument("--kernels", type=int, nargs=5, default=None, help="hidden kernels (default Table 6: 64 32 16 8 1)")
    ap.add_argument("--skip-direct", action="store_true", help="only the FFT heads (direct ones take minutes at width 1)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    print(f"Enc-VGG representation step, {args.patch} px, {args.batch} pairs, 1 thread; seconds per pair")
    first = True
    for width in args.widths:
        for fft in ((True,) if args.skip_direct else (False, True)):
            r = step_seconds(args.patch, width, args.batch, fft, args.kernels, breakdown=first)
            print(f"  width {width:<5} heads {'fft' if fft else 'direct':6}: {r['per_pair']:7.2f} s/pair "
                  f"(forward {r['forward']:.2f} s, backward + step {r['backward']:.2f} s; {r['params_m']:.1f} M parameters)",
                  flush=True)
            if first:
                total = sum(r["modules"].values())
                top = sorted(r["modules"].items(), key=lambda kv: -kv[1])[:6]
                print("    forward by module: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in top))
                first = False


if __name__ == "__main__":
    main()
