"""The benchmarks must not rot: each runs in its tiny mode (synthetic scenes only, no shared data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_bench_accuracy_tiny(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "bench_accuracy.py"), "--tiny", "--workdir", str(tmp_path),
                          "--data", str(tmp_path / "no-shared-data")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # the table has a row per scene and method, and the last lines compare the default with the references
    assert any(line.startswith("illumination    cva ") for line in lines)
    assert any(line.startswith("crs             cva+otsu") for line in lines)
    assert any(line.startswith("[synthetic] default (cva) mean kappa") for line in lines)
    kappa = float(next(line for line in lines if line.startswith("illumination    cva ")).split()[2])
    assert kappa > 0.9  # a planted change under an illumination change is found


def _run(script: str, *args: str, cwd: Path) -> list[str]:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                         timeout=600, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_bench_detect_tiny(tmp_path):
    lines = _run("bench_detect.py", "--sizes", "512", "--efficiency-sizes", "512", "--repeats", "1", "--tile", "256",
                 "--overlap", "32", "--workdir", str(tmp_path), cwd=tmp_path)
    assert any("engine efficiency" in line for line in lines)
    assert any(line.strip().startswith("512:") and "MiB" in line for line in lines)


def test_bench_scale_tiny(tmp_path):
    lines = _run("bench_scale.py", "--size", "768", "--tile", "256", "--block-size", "256", "--workdir", str(tmp_path),
                 cwd=tmp_path)
    assert any("identical outputs:" in line and "True" in line for line in lines)


def test_bench_rscvae_tiny(tmp_path):
    lines = _run("bench_rscvae.py", "--classes", "0", "1", "--epochs", "1", cwd=tmp_path)
    assert any(line.strip().startswith("mean") for line in lines)


def test_bench_vae_tiny(tmp_path):
    lines = _run("bench_vae.py", "--labels", "50", "--runs", "1", "--negatives", "300", "--rep-epochs", "1",
                 "--ft-epochs", "1", "--test-pairs", "100", cwd=tmp_path)
    assert any("VAE w/ sim.:" in line for line in lines)


def test_bench_wdc_tiny(tmp_path):
    lines = _run("bench_wdc.py", "--footprints", "2000", "--overlay-subset", "500", "--workers", "1", "--noisy", "100",
                 "--size", "512", cwd=tmp_path)
    assert any(line.startswith("(b) extraction, this process:") and "patches/s" in line for line in lines)


def test_bench_drlnet_tiny(tmp_path):
    lines = _run("bench_drlnet.py", "--workdir", str(tmp_path), "--scenes", "illumination", "--skip-big",
                 "--drlnet-param", "max_samples=500", "--drlnet-param", "pretrain_epochs=0",
                 "--drlnet-param", "stage_epochs=0", cwd=tmp_path)
    assert any(line.startswith("illumination") and " drlnet " in line for line in lines)


def test_bench_vae_speed_tiny(tmp_path):
    lines = _run("bench_vae_speed.py", "--patch", "112", "--batch", "1", "--widths", "0.125", "--skip-direct",
                 cwd=tmp_path)
    assert sum("heads fft" in line and "s/pair" in line for line in lines) == 1
    assert any("forward by module" in line for line in lines)


def test_bench_vae_sigma_tiny(tmp_path):
    lines = _run("bench_vae_sigma.py", "--variant", "plain", "--sigmas", "1", "--lambdas", "1", "--negatives", "200",
                 "--epochs", "1", "--test-pairs", "100", "--probe-train", "200", cwd=tmp_path)
    assert any(line.split()[:3] == ["plain", "1", "1"] for line in lines)


def test_bench_cdcluster_synthetic_tiny(tmp_path):
    lines = _run("bench_cdcluster_synthetic.py", "--train", "8", "--test", "4", "--seeds", "0",
                 "--setting", "short:epochs=3,warmup_epochs=2,recluster_every=1,unsup_lr=0", cwd=tmp_path)
    assert any(line.strip().startswith("short |") for line in lines)
