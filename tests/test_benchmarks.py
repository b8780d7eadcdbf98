"""The benchmarks must not rot: each runs in its tiny mode (synthetic scenes only, no shared data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # bench_labels' helpers are tested directly


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
    # the CPU table against the minimal hand-written pipeline: a row of figures for the size
    i = next(i for i, line in enumerate(lines) if "minimal hand-written pipeline" in line)
    row = lines[i + 2].split()
    assert row[0] == "512" and all(float(v) > 0 for v in row[1:5]) and row[-1] in ("ok", "HIGH")


def test_bench_scale_tiny(tmp_path):
    lines = _run("bench_scale.py", "--size", "768", "--tile", "256", "--block-size", "256", "--workdir", str(tmp_path),
                 cwd=tmp_path)
    assert any("identical outputs:" in line and "True" in line for line in lines)
    assert any("identical polygons (ids included):" in line and "True" in line for line in lines)
    assert any(line.strip().startswith("--workers 2 / plain:") and "goal <= 1.05" in line for line in lines)


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


def test_bench_drlnet_superpixels_tiny(tmp_path):
    lines = _run("bench_drlnet.py", "--workdir", str(tmp_path), "--scenes", "illumination", "--superpixels",
                 "--data", str(tmp_path / "no-shared-data"), cwd=tmp_path)
    row = next(line for line in lines if line.startswith("illumination ") and "|" in line).split("|")
    recall_masked, recall_now = (float(v) for v in row[1].split())
    assert recall_masked > 0.9 and recall_now > 0.9  # the planted changes' edges lie on superpixel edges


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


def test_bench_labels_tiny(tmp_path):
    lines = _run("bench_labels.py", "--tiny", "--workdir", str(tmp_path), "--data", str(tmp_path / "no-shared-data"),
                 "--json", str(tmp_path / "rows.json"), cwd=tmp_path)
    # the table: a header of methods, then the scene's row of kappa/F1/% flagged cells per method
    header = next(line for line in lines if line.startswith("scene ") and "marks" in line).split()
    row = next(line for line in lines if line.startswith("illumination ") and "/" in line.split()[1]).split()
    cells = dict(zip(header[3:], row[3:]))
    assert row[1] == "10/10"  # ten changed regions and ten unchanged squares drawn from the left half
    assert any(line.startswith("mean kappa, synthetic (1)") for line in lines)
    assert any(line.startswith("[synthetic] labels default") for line in lines)
    kappa = {m: float(c.split("/")[0]) for m, c in cells.items() if c != "-"}
    assert kappa["cva"] > 0.9       # the planted changes of the right half are found without labels
    assert kappa["rf"] > 0.5        # the random forest on 20 marks + cheap negatives beats chance by far
    assert "rf-nonneg" in kappa
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows["marks"]["illumination"]["changed"] == 10
    # every method's kappa at its kappa-best threshold (the oracle that separates ranking from amount)
    assert any(line.startswith("[synthetic] at each scene's kappa-best threshold") for line in lines)
    best = {r["method"]: r["kappa_best"] for r in rows["rows"]}
    assert best["cva"] > 0.9 and best["rf"] >= kappa["rf"] - 0.05
    if not any(line.startswith("note: geochange.detect.DetectOptions has no `labels`") for line in lines):
        assert kappa["logistic"] > 0.9  # the default label model, trained on the marks, finds the right half's change
        r = next(r for r in rows["rows"] if r["method"] == "logistic")
        assert r["fit_s"] > 0 and r["inference_s"] > 0


def test_bench_labels_corrections_tiny(tmp_path):
    """--corrections 3: 7 random marks of each class, then the first map's largest false alarms and misses."""
    lines = _run("bench_labels.py", "--tiny", "--workdir", str(tmp_path), "--data", str(tmp_path / "no-shared-data"),
                 "--corrections", "3", "--references", "--json", str(tmp_path / "rows.json"), cwd=tmp_path)
    assert any(line.startswith("[synthetic] labels default") for line in lines)
    marks = json.loads((tmp_path / "rows.json").read_text())["marks"]["illumination"]
    import geopandas as gpd

    first = gpd.read_file(tmp_path / "labels" / "illumination" / "marks-first.gpkg")
    final = gpd.read_file(tmp_path / "labels" / "illumination" / "marks.gpkg")
    assert (first["change"] == 1).sum() == 7 and (first["change"] == 0).sum() == 7
    added = len(final) - len(first)
    assert 0 <= marks["false_alarms"] <= 3 and added == marks["false_alarms"] + marks["changed"] - 7
    assert marks["changed"] <= 10 and marks["unchanged"] <= 10
    out = subprocess.run([sys.executable, str(BENCH / "bench_labels.py"), "--tiny", "--corrections", "10"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--corrections 10: give 0 < K < --marks (10)" in out.stderr


def test_oracle_kappa_is_the_best_threshold():
    """bench_accuracy.oracle_kappa (the rows' kappa_best): the best kappa over every cut, as a brute force finds it."""
    import bench_accuracy
    import numpy as np

    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.1
    score = np.round(rng.normal(truth * 1.5, 1.0), 1)       # ties, as a quantised probability has
    best, cut = bench_accuracy.oracle_kappa(score, truth)

    def kappa(pred):
        tp, fp = (pred & truth).sum(), (pred & ~truth).sum()
        fn, tn = (~pred & truth).sum(), (~pred & ~truth).sum()
        n = truth.size
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
        return ((tp + tn) / n - pe) / (1 - pe)

    brute = max(kappa(score >= t) for t in np.unique(score))
    assert abs(best - brute) < 1e-12 and 0.2 < best < 0.9
    tally = bench_accuracy.Tally()
    tally.add(score > cut, score, truth.astype(np.uint8), np.ones(truth.shape, bool))
    row = tally.row()
    assert abs(row["kappa_best"] - best) < 1e-12 and abs(row["kappa"] - best) < 1e-12   # flagged at its own cut
    assert bench_accuracy.oracle_kappa(np.where(truth, 2.0, 1.0), truth)[0] == 1.0


def test_bench_labels_marks():
    import bench_labels
    import numpy as np
    import shapely
    from affine import Affine

    t = Affine(10.0, 0, 500_000.0, 0, -10.0, 4_100_000.0)
    truth = np.full((80, 80), 255, np.uint8)     # sparse truth, as Taizhou's: 255 unlabelled
    truth[5:40, 2:37] = 1                         # a large changed region in the left half: cut to 400 px
    truth[50:52, 10:12] = 1                       # a small one (4 px)
    truth[60, 20] = 1                             # too small to be drawn
    truth[70:75, 25:30] = 0                       # room for one unchanged square only
    truth[77, 1:30:3] = 0                         # single labelled unchanged pixels
    truth[:, 40:] = 1                             # the right half is never drawn from
    geoms, values, counts = bench_labels.draw_marks(truth, t, 10, np.random.default_rng(0))
    assert counts == {"changed": 2, "unchanged": 10, "points": 9, "cut": 1, "components": 2, "false_alarms": 0}
    areas = sorted(g.area / 100 for g, v in zip(geoms, values) if v == 1)
    assert areas == [4, 400]                      # exact pixel outlines, in pixels
    assert [g.geom_type for g, v in zip(geoms, values) if v == 0].count("Polygon") == 1
    assert shapely.union_all(geoms).bounds[2] <= 500_000 + 40 * 10   # all within the left half
    # --unchanged false-alarms: a first run's false alarms in the left half are marked unchanged first
    alarms = np.zeros_like(truth, bool)
    alarms[70:73, 25:28] = True                   # 9 px on unchanged truth: a false alarm
    alarms[5:8, 2:5] = True                       # on changed truth: a hit, not a false alarm
    alarms[10:13, 60:63] = True                   # in the right half: never drawn from
    geoms, values, counts = bench_labels.draw_marks(truth, t, 10, np.random.default_rng(0), alarms)
    assert counts["false_alarms"] == 1 and counts["unchanged"] == 10
    assert sorted(g.area / 100 for g, v in zip(geoms, values) if v == 0 and g.geom_type == "Polygon")[-1] == 25
    assert any(g.area / 100 == 9 for g, v in zip(geoms, values) if v == 0)
    # --marks 0 (the ceiling): every labelled pixel of the left half, as exact outlines with its value
    geoms, values, counts = bench_labels.all_truth_marks(truth, t)
    left = truth[:, :40]
    assert sum(g.area / 100 for g, v in zip(geoms, values) if v == 1) == (left == 1).sum()
    assert sum(g.area / 100 for g, v in zip(geoms, values) if v == 0) == (left == 0).sum()
    assert counts["changed"] == 3 and shapely.union_all(geoms).bounds[2] <= 500_000 + 40 * 10
    # --square 3: unchanged squares of 3 x 3 px (one fits in the 5 x 5 unchanged block, points elsewhere)
    geoms, values, counts = bench_labels.draw_marks(truth, t, 10, np.random.default_rng(0), square=3)
    assert sorted(g.area / 100 for g, v in zip(geoms, values) if v == 0 and g.geom_type == "Polygon") == [9]
    assert counts["unchanged"] == 10 and counts["points"] == 9
    # the second round's regions: the largest ones, not a random draw
    mask = np.zeros((40, 40), bool)
    mask[0:2, 0:2] = True                         # 4 px
    mask[10:13, 10:13] = True                     # 9 px
    mask[20:25, 20:25] = True                     # 25 px
    geoms, cut = bench_labels._regions(mask, 2, None, t)
    assert sorted(g.area / 100 for g in geoms) == [9, 25] and cut == 0


def _cdcluster_data(root: Path) -> Path:
    """A tiny data root in bench_cdcluster's layouts: DSIFN samples (LEVIR-CD style A/, B/, label/ PNGs,
    0/255 masks) and OSCD bercy/paris (imgs_1|imgs_2/*_B0N.tif bands, train_labels/<city>/cm/<city>-cm_georef_01.tif),
    each pair a textured scene with planted bright and dark squares in the after date."""
    import numpy as np
    from affine import Affine
    from conftest import texture, write_tif
    from PIL import Image

    rng = np.random.default_rng(0)

    def pair(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        before = texture(rng, (size, size))
        after = before * 0.9 + 12 + rng.normal(0, 2, before.shape)
        label = np.zeros((size, size), np.uint8)
        for k in range(6):
            r, c = rng.integers(0, size - 12, 2)
            after[:, r:r + 12, c:c + 12] = 235 if k % 2 else 30
            label[r:r + 12, c:c + 12] = 1
        return before, after, label

    dsifn = root / "dsifn_samples"
    for name in ("A", "B", "label"):
        (dsifn / name).mkdir(parents=True)
    for i in range(3):
        before, after, label = pair(64)
        for name, arr in (("A", before), ("B", after)):
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(dsifn / name / f"{i}_1.png")
        Image.fromarray(label * 255).save(dsifn / "label" / f"{i}_1.png")
    t = Affine(10.0, 0, 450_000.0, 0, -10.0, 5_410_000.0)
    for city in ("bercy", "paris"):
        before, after, label = pair(64)
        for folder, arr in (("imgs_1", before), ("imgs_2", after)):
            (root / "oscd" / "images" / city / folder).mkdir(parents=True)
            for b, band in enumerate(("B04", "B03", "B02")):   # reflectance-like uint16, as Sentinel-2 L1C
                write_tif(root / "oscd" / "images" / city / folder / f"S2_T31UDQ_{band}.tif",
                          (arr[b] * 8 + 500).astype(np.uint16), "EPSG:32631", t)
        (root / "oscd" / "train_labels" / city / "cm").mkdir(parents=True)
        write_tif(root / "oscd" / "train_labels" / city / "cm" / f"{city}-cm_georef_01.tif", label, "EPSG:4326",
                  Affine(1e-4, 0, 2.36, 0, -1e-4, 48.87))       # 0/1 uint8 on WGS84, as OSCD's georef masks
    return root


def test_bench_cdcluster_tiny(tmp_path):
    data = _cdcluster_data(tmp_path / "data")
    lines = _run("bench_cdcluster.py", "--tiny", "--data", str(data), cwd=tmp_path)
    # 3 DSIFN pairs (1 for test) and two 64 px cities (bottom 16 px rows for test), in 16 px patches
    assert any(line.startswith("data: 56 train / 24 test patches of 16 px (DSIFN 2/1 pairs") for line in lines)
    assert any(line.startswith("warm-up") and "after warm-up" in line for line in lines)   # the table's header
    row = next(line for line in lines if line.startswith("random 30 %")).replace("|", " ").split()
    assert int(row[3]) > 0                       # warm-up pairs
    scores = [float(v) for v in row[4:14]]       # acc F1 kappa spec rec, after warm-up and at the end
    assert all(-1 <= v <= 1 for v in scores) and 0 <= scores[5] <= 1
    assert any(line.strip().startswith("mean ") for line in lines)        # Initial Alignment, k = 2
    assert sum(line.strip().startswith(("faiss", "sklearn")) and " s " in line for line in lines) == 3


def test_every_benchmark_is_run_here():
    """Benchmarks must not rot: each ``benchmarks/bench_*.py`` has a tiny run in this file."""
    source = Path(__file__).read_text()
    scripts = sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert scripts
    missing = [name for name in scripts if f'"{name}"' not in source]
    assert not missing, f"no tiny run of {', '.join(missing)} in tests/test_benchmarks.py"


def test_bench_models_tiny(tmp_path):
    lines = _run("bench_models.py", "--tiny", "--workdir", str(tmp_path), "--json", str(tmp_path / "models.json"),
                 cwd=tmp_path)
    models = ("drlnet", "vae", "rscvae", "cdcluster")
    table = [line.split() for line in lines if line.startswith(models) and "Mpx/s" not in line]  # the summary table
    assert [row[0] for row in table] == list(models)
    assert any(line.strip().startswith("fit:") and "CPU-s" in line for line in lines)
    assert any(line.strip().startswith("drlnet - cva:") for line in lines)
    figures = json.loads((tmp_path / "models.json").read_text())
    for row in figures["inference"]:
        assert row["predict_mpx_s"] > 0 and row["detect"]["1"]["ratio"] > 0
    assert figures["fit"]["cpu_s"] > 0 and figures["rss"]["cva"]["peak_mib"] > 0


def test_bench_models_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    out = subprocess.run([sys.executable, str(BENCH / "bench_models.py"), "--device", "cuda"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "needs a GPU" in out.stderr
