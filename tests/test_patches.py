"""The patch-pair dataset format: PatchWriter -> shards + index.csv + dataset.json -> PatchDataset; LEVIR-CD."""

from __future__ import annotations

import csv
import json
import multiprocessing
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from geochange.data import LevirDataset, PatchDataset, PatchWriter, open_dataset
from geochange.data.patches import INDEX_COLUMNS
from geochange.errors import GeochangeError


def random_patches(n: int, size: int, bands: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    for i in range(n):
        if info is not None:
            before = rng.integers(info.min, info.max, (bands, size, size), endpoint=True, dtype=dtype)
            after = rng.integers(info.min, info.max, (bands, size, size), endpoint=True, dtype=dtype)
        else:
            before = rng.normal(0, 1000, (bands, size, size)).astype(dtype)
            after = rng.normal(0, 1000, (bands, size, size)).astype(dtype)
        label = rng.choice(np.array([0, 1, 255], np.uint8), size=(size, size), p=[0.7, 0.2, 0.1])
        if i % 4 == 1:
            label[:] = 0          # a patch with no change
        if i % 4 == 2:
            label[:] = 255        # a patch with no label
        meta = {"split": ("train", "val", "test")[i % 3], "pair": "1999-2005", "row_off": 10 * i,
                "col_off": 3 * i, "minx": 500000.5 + i, "miny": 4099000.25, "maxx": 500032.5 + i,
                "maxy": 4099032.25, "crs": "EPSG:32615", "valid_fraction": 1.0}
        yield before, after, label, meta


def write_dataset(out: Path, n: int, size: int, bands: int, dtype: str, shard_size: int, compress: str = "deflate"):
    patches = list(random_patches(n, size, bands, dtype))
    with PatchWriter(out, size, bands, dtype, shard_size=shard_size, params={"test": True}, compress=compress) as w:
        ids = [w.add(*p) for p in patches]
    assert ids == list(range(n))
    return patches


@pytest.mark.parametrize("dtype,size,compress", [("uint8", 32, "deflate"), ("uint16", 20, "deflate"),
                                                  ("float32", 16, "deflate"), ("uint16", 16, "zstd")])
def test_round_trip_is_bit_exact(tmp_path, dtype, size, compress):
    # 10 patches in shards of 4: two full shards and a short one; size 20 is not a multiple of 16 (strips)
    patches = write_dataset(tmp_path / "ds", 10, size, 3, dtype, shard_size=4, compress=compress)
    ds = PatchDataset(tmp_path / "ds")
    assert len(ds) == 10 and ds.dtype == np.dtype(dtype)
    for i, (before, after, label, meta) in enumerate(patches):
        item = ds[i]
        assert item["before"].dtype == np.dtype(dtype) and item["before"].shape == (3, size, size)
        np.testing.assert_array_equal(item["before"], before)
        np.testing.assert_array_equal(item["after"], after)
        assert item["label"].dtype == np.uint8
        np.testing.assert_array_equal(item["label"], label)
        assert item["meta"]["id"] == i and item["meta"]["split"] == meta["split"]
        assert item["meta"]["minx"] == meta["minx"] and item["meta"]["maxy"] == meta["maxy"]
    shards = sorted((tmp_path / "ds" / "shards").iterdir())
    assert [p.name for p in shards] == ["shard_00000.tif", "shard_00001.tif", "shard_00002.tif"]
    for path, n in zip(shards, (4, 4, 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as shard:
                assert (shard.width, shard.height, shard.count) == (size, n * size, 7)
                assert shard.block_shapes[0] == (size, size)   # one block = one patch
                assert shard.compression.name == compress
                assert shard.descriptions[-1] == "label" and shard.descriptions[0] == "before_1"
    assert not list(tmp_path.glob(".ds.partial*"))


def test_index_and_dataset_json(tmp_path):
    patches = write_dataset(tmp_path / "ds", 9, 16, 2, "uint8", shard_size=4)
    with open(tmp_path / "ds" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == INDEX_COLUMNS
    for i, (row, (_, _, label, meta)) in enumerate(zip(rows, patches)):
        assert row["shard"] == f"shards/shard_{i // 4:05d}.tif" and int(row["index_in_shard"]) == i % 4
        changed, known = np.count_nonzero(label == 1), np.count_nonzero(label != 255)
        assert int(row["label"]) == (1 if changed else 0 if known else -1)
        if known:
            assert float(row["changed_fraction"]) == pytest.approx(changed / known, abs=1e-6)
        else:
            assert row["changed_fraction"] == ""
        assert row["pair"] == "1999-2005" and row["crs"] == "EPSG:32615" and int(row["size"]) == 16
        assert float(row["minx"]) == meta["minx"] and int(row["row_off"]) == meta["row_off"]
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["format"] == "geochange-patches" and info["version"] == 1
    assert info["size"] == 16 and info["bands"] == 2 and info["dtype"] == "uint8"
    assert info["counts"] == {"total": 9, "train": 3, "val": 3, "test": 3}
    assert info["shards"] == 3 and info["crs"] == "EPSG:32615" and info["params"] == {"test": True}
    assert sum(info["labels"].values()) == 9
    labels = [int(r["label"]) for r in rows]
    assert info["labels"] == {"changed": labels.count(1), "unchanged": labels.count(0), "unknown": labels.count(-1)}
    assert info["shard_bands"] == ["before_1", "before_2", "after_1", "after_2", "label"]


def same_meta(a: dict, b: dict) -> bool:
    """Index rows are equal (an unknown changed_fraction is NaN in both)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def test_random_access_split_and_pickle(tmp_path):
    write_dataset(tmp_path / "ds", 12, 16, 3, "uint8", shard_size=5)
    ds = PatchDataset(tmp_path / "ds", max_open=2)
    sequential = [ds[i] for i in range(len(ds))]
    for i in np.random.default_rng(3).permutation(len(ds)):
        item = ds[int(i)]
        np.testing.assert_array_equal(item["before"], sequential[i]["before"])
        np.testing.assert_array_equal(item["label"], sequential[i]["label"])
        assert same_meta(item["meta"], sequential[i]["meta"])
    np.testing.assert_array_equal(ds[-1]["after"], sequential[-1]["after"])
    with pytest.raises(IndexError):
        ds[12]
    assert len(ds._handles) <= 2

    val = PatchDataset(tmp_path / "ds", split="val")
    assert len(val) == 4 and {val[i]["meta"]["split"] for i in range(4)} == {"val"}
    np.testing.assert_array_equal(val[0]["before"], sequential[val[0]["meta"]["id"]]["before"])
    assert len(PatchDataset(tmp_path / "ds", split=["train", "test"])) == 8
    with pytest.raises(GeochangeError, match="unknown split"):
        PatchDataset(tmp_path / "ds", split="validation")

    clone = pickle.loads(pickle.dumps(val))   # open handles are not pickled; reopened on use
    assert clone._handles == {} and len(clone) == 4
    np.testing.assert_array_equal(clone[2]["after"], val[2]["after"])


def _checksum(args):
    ds, i = args
    item = ds[i]
    return int(item["before"].sum()) + int(item["after"].sum()) + int(item["label"].sum())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_workers_read_the_same(tmp_path):
    write_dataset(tmp_path / "ds", 6, 16, 3, "uint16", shard_size=4)
    ds = PatchDataset(tmp_path / "ds")
    expected = [_checksum((ds, i)) for i in range(len(ds))]   # handles open in the parent
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_checksum, [(ds, i) for i in range(len(ds))]) == expected


def test_writer_is_atomic_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with PatchWriter(out, 16, 3, "uint8") as w:
            w.add(*next(random_patches(1, 16, 3, "uint8")))
            raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.glob(".ds.partial*"))

    write_dataset(out, 3, 16, 3, "uint8", shard_size=8)
    with pytest.raises(GeochangeError, match="overwrite"):
        PatchWriter(out, 16, 3, "uint8")
    with PatchWriter(out, 16, 3, "uint8", overwrite=True) as w:
        w.add(*next(random_patches(1, 16, 3, "uint8")))
    assert len(PatchDataset(out)) == 1 and len(list((out / "shards").iterdir())) == 1

    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(GeochangeError, match="other files"):
        PatchWriter(other, 16, 3, "uint8", overwrite=True)
    (tmp_path / "empty").mkdir()
    with PatchWriter(tmp_path / "empty", 16, 3, "uint8") as w:
        w.add(*next(random_patches(1, 16, 3, "uint8")))
    assert (tmp_path / "empty" / "dataset.json").is_file()


def test_writer_refuses_bad_patches(tmp_path):
    with PatchWriter(tmp_path / "ds", 8, 1, "uint8") as w:
        ok = np.zeros((1, 8, 8), np.uint8)
        with pytest.raises(ValueError, match="fit"):
            w.add(np.full((1, 8, 8), 300, np.uint16), ok)
        with pytest.raises(ValueError, match="shape"):
            w.add(np.zeros((2, 8, 8), np.uint8), ok)
        with pytest.raises(ValueError, match="label values"):
            w.add(ok, ok, np.full((8, 8), 2, np.uint8))
        with pytest.raises(ValueError, match="split"):
            w.add(ok, ok, None, {"split": "holdout"})
        w.add(ok.astype(np.float32), ok, np.ones((8, 8), bool))   # exact casts are fine
    item = PatchDataset(tmp_path / "ds")[0]
    assert item["label"].min() == 1 and item["meta"]["label"] == 1
    with pytest.raises(ValueError, match="int8"):
        PatchWriter(tmp_path / "ds8", 8, 1, "int8")


# --- LEVIR-CD layout ----------------------------------------------------------------------------

def write_levir(root: Path, names, size: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        lab = np.where(rng.random((size, size)) < 0.3, 255, 0).astype(np.uint8)
        Image.fromarray(a).save(root / "A" / f"{name}.png")
        Image.fromarray(b).save(root / "B" / f"{name}.png")
        Image.fromarray(lab).save(root / "label" / f"{name}.png")
        arrays[name] = (a, b, lab)
    return arrays


def test_levir_flat_layout(tmp_path):
    arrays = write_levir(tmp_path / "levir", ["train_1", "train_2", "x"])
    ds = LevirDataset(tmp_path / "levir")
    assert len(ds) == 3
    item = ds[0]
    a, b, lab = arrays[item["meta"]["name"]]
    assert item["before"].shape == (3, 12, 12) and item["before"].dtype == np.uint8
    np.testing.assert_array_equal(item["before"], a.transpose(2, 0, 1))
    np.testing.assert_array_equal(item["after"], b.transpose(2, 0, 1))
    np.testing.assert_array_equal(item["label"], (lab == 255).astype(np.uint8))
    assert isinstance(open_dataset(tmp_path / "levir"), LevirDataset)
    with pytest.raises(GeochangeError, match="no train/val/test"):
        LevirDataset(tmp_path / "levir", split="train")
    (tmp_path / "levir" / "B" / "x.png").unlink()
    with pytest.raises(GeochangeError, match="no matching image"):
        LevirDataset(tmp_path / "levir")


def test_levir_split_folders(tmp_path):
    write_levir(tmp_path / "cd" / "train", ["1", "2", "3"])
    write_levir(tmp_path / "cd" / "test", ["4"], seed=1)
    assert len(LevirDataset(tmp_path / "cd")) == 4
    test = LevirDataset(tmp_path / "cd", split="test")
    assert len(test) == 1 and test[0]["meta"]["split"] == "test" and test[0]["meta"]["id"] == "test/4"
    with pytest.raises(GeochangeError, match="no split 'val'"):
        LevirDataset(tmp_path / "cd", split="val")
    assert isinstance(open_dataset(tmp_path / "cd", split="train"), LevirDataset)
    with pytest.raises(GeochangeError, match="neither"):
        open_dataset(tmp_path)


def test_levir_on_dsifn_layout(tmp_path):
    """The DSIFN samples' layout (A/, B/, label/ of 256² RGB PNGs named like 0_2.png, label 0/255)."""
    write_levir(tmp_path / "dsifn", [f"{i}_{i % 3}" for i in range(10)], size=256)
    ds = open_dataset(tmp_path / "dsifn")
    assert isinstance(ds, LevirDataset) and len(ds) == 10
    changed = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["before"].shape == item["after"].shape == (3, 256, 256)
        assert item["label"].shape == (256, 256) and set(np.unique(item["label"])) <= {0, 1}
        changed += int(item["label"].sum())
    assert changed > 0


def test_open_dataset_picks_patch_dataset(tmp_path):
    write_dataset(tmp_path / "ds", 3, 16, 1, "uint8", shard_size=8)
    ds = open_dataset(tmp_path / "ds", split="train")
    assert isinstance(ds, PatchDataset) and len(ds) == 1


def test_levir_images_are_read_as_whole_tile_windows(tmp_path):
    arrays = write_levir(tmp_path / "big", ["chip"], size=600)
    ds = LevirDataset(tmp_path / "big", tile=256)
    assert len(ds) == 9  # rows and columns at 0, 256 and 344 (the last shifted inwards to stay whole)
    a, b, lab = arrays["chip"]
    for i in range(len(ds)):
        item = ds[i]
        r, c = item["meta"]["row_off"], item["meta"]["col_off"]
        assert item["before"].shape == (3, 256, 256) and item["meta"]["id"] == "chip"
        np.testing.assert_array_equal(item["before"], a[r:r + 256, c:c + 256].transpose(2, 0, 1))
        np.testing.assert_array_equal(item["after"], b[r:r + 256, c:c + 256].transpose(2, 0, 1))
        np.testing.assert_array_equal(item["label"], (lab[r:r + 256, c:c + 256] == 255).astype(np.uint8))
        np.testing.assert_array_equal(ds.read_label(i), item["label"])
    assert sorted({ds[i]["meta"]["row_off"] for i in range(9)}) == [0, 256, 344]
