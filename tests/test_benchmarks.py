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
