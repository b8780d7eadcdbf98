"""The patch-pair dataset format: co-registered chips of two dates and their change labels.

A dataset is a folder::

    dataset.json              format, version, patch size, bands, dtype, CRS, sources, counts, parameters
    index.csv                 one row per patch (see INDEX_COLUMNS): where it is stored, its split and
                              label, and where it comes from (pixel window and bounds in the source CRS)
    shards/shard_00000.tif    GeoTIFF stacks of up to ``shard_size`` patches each

A shard is ``size`` pixels wide and ``n * size`` pixels high; patch ``k`` of the shard occupies rows
``[k * size, (k + 1) * size)``. Its bands are BEFORE's C bands, AFTER's C bands, then the label band,
all in one dtype (the imagery's). The label band holds 0 (unchanged), 1 (changed) or 255 (unknown:
no label, or no data in either date), which every dtype the writer accepts holds exactly; readers get
it back as uint8. One GDAL block is one patch with all its bands (pixel interleaved; DEFLATE level 1
with a predictor, or ZSTD on request), so reading a patch is one windowed read that decompresses
one block. Blocks are tiles when ``size`` is a multiple of 16 (GeoTIFF's rule for tiles) and strips
of ``size`` rows otherwise: the same thing for a raster one patch wide. Shards carry no
georeferencing (their patches come from many places); ``index.csv`` holds it per patch.

:class:`PatchWriter` writes a dataset atomically (a hidden folder beside ``out``, renamed when
complete); :class:`PatchDataset` reads one with random access; :class:`LevirDataset` reads the
LEVIR-CD folder layout (``A/``, ``B/``, ``label/``) into the same items; :func:`open_dataset` picks.
"""

from __future__ import annotations

import collections
import csv
import datetime
import json
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.io.atomic import discard, temp_path, write_text

FORMAT = "geochange-patches"
VERSION = 1
SPLITS = ("train", "val", "test")
UNKNOWN = 255
INDEX_COLUMNS = ("id", "shard", "index_in_shard", "split", "label", "changed_fraction", "pair",
                 "row_off", "col_off", "size", "minx", "miny", "maxx", "maxy", "crs", "valid_fraction")
# dtypes a shard may use: every one holds the label values 0, 1 and 255 exactly (int8 does not)
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


class PatchWriter:
    """Write patch pairs into a new dataset folder ``out_dir``.

    ``size`` is the patch side in pixels, ``bands`` the number of bands of each date (C), ``dtype``
    the pixel type of both dates (one of :data:`DTYPES`). ``shard_size`` patches go into each shard.
    ``sources`` (list of dicts) and ``params`` (dict) are recorded in ``dataset.json``; they may be
    set as attributes before :meth:`close`. ``extra_columns`` are more index columns, filled from
    the ``meta`` given to :meth:`add`. ``compress`` is the shards' compression: deflate (the
    default, level 1), zstd (level 1: reads about twice as fast, needs GDAL >= 2.3 to open), lzw or
    none. Shards are written as patches arrive; the last one, when it is not full, is rewritten
    once at its exact height on :meth:`close`.

    Everything is written into ``.<name>.partial`` beside ``out_dir`` and renamed onto it by
    :meth:`close`; an error or Ctrl-C inside ``with PatchWriter(...)`` leaves nothing behind. An
    existing dataset at ``out_dir`` is refused unless ``overwrite`` (it is then replaced only when
    the new one is complete); a folder that holds other files is always refused.
    """

    def __init__(self, out_dir: str | Path, size: int, bands: int, dtype, shard_size: int = 2048, *,
                 overwrite: bool = False, band_names: Sequence[str] | None = None,
                 sources: list[dict] | None = None, params: dict | None = None,
                 extra_columns: Sequence[str] = (), compress: str = "deflate") -> None:
        self.out_dir = Path(out_dir).absolute()
        self.size, self.bands, self.shard_size = int(size), int(bands), int(shard_size)
        if self.size < 1 or self.bands < 1 or self.shard_size < 1:
            raise ValueError(f"size, bands and shard_size must be positive (got {size}, {bands}, {shard_size})")
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in DTYPES:
            raise ValueError(f"dtype {self.dtype.name} cannot be stored (use one of {', '.join(DTYPES)})")
        if band_names is None:
            band_names = [str(b) for b in range(1, self.bands + 1)]
        if len(band_names) != self.bands:
            raise ValueError(f"{len(band_names)} band names for {self.bands} bands")
        self.band_names = [str(b) for b in band_names]
        self.sources = list(sources or [])
        self.params = dict(params or {})
        self.extra_columns = tuple(c for c in extra_columns if c not in INDEX_COLUMNS)
        self.overwrite = overwrite
        self.compress = str(compress).lower()
        if self.compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {', '.join(COMPRESSIONS)}, not {compress!r}")
        check_out_dir(self.out_dir, overwrite)

        self._tmp = temp_path(self.out_dir)
        discard(self._tmp)
        (self._tmp / "shards").mkdir(parents=True)
        self._index_file = open(self._tmp / "index.csv", "w", newline="", encoding="utf-8")
        self._index = csv.writer(self._index_file)
        self._index.writerow(INDEX_COLUMNS + self.extra_columns)
        self._tags = shard_tags(self.sources)
        self._shard: rasterio.io.DatasetWriter | None = None
        self._shard_no = -1
        self._in_shard = 0
        self.count = 0
        self.counts = {s: 0 for s in SPLITS}
        self.labels = {"changed": 0, "unchanged": 0, "unknown": 0}
        self._crs: set[str] = set()
        self._closed = False

    # -- writing ------------------------------------------------------------------------------

    def add(self, before: np.ndarray, after: np.ndarray, label: np.ndarray | None = None,
            meta: dict | None = None) -> int:
        """Append one patch pair and return its id (0, 1, 2, ... in the order added).

        ``before`` and ``after`` are ``(C, size, size)`` arrays (cast to the dataset's dtype; a
        cast that would change values is refused). ``label`` is ``(size, size)``: 0 unchanged,
        1 changed, 255 unknown (bool accepted), or None for unknown everywhere. ``meta`` fills the
        index: ``split`` (train/val/test, default train), ``pair``, ``row_off``, ``col_off``,
        ``minx``, ``miny``, ``maxx``, ``maxy``, ``crs``, ``valid_fraction`` and the extra columns.
        """
        if self._closed:
            raise RuntimeError("PatchWriter is closed")
        meta = dict(meta or {})
        n, c = self.size, self.bands
        before = self._as_stored(before, "before")
        after = self._as_stored(after, "after")
        if label is None:
            label = np.full((n, n), UNKNOWN, np.uint8)
        label = np.asarray(label)
        if label.shape != (n, n):
            raise ValueError(f"label has shape {label.shape}, expected {(n, n)}")
        if label.dtype == bool:
            label = label.astype(np.uint8)
        if not np.isin(label, (0, 1, UNKNOWN)).all():
            raise ValueError("label values must be 0 (unchanged), 1 (changed) or 255 (unknown)")
        split = str(meta.get("split", "train"))
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")

        if self._shard is None or self._in_shard == self.shard_size:
            self._next_shard()
        stack = np.empty((2 * c + 1, n, n), self.dtype)
        stack[:c], stack[c:2 * c], stack[2 * c] = before, after, label
        self._shard.write(stack, window=Window(0, self._in_shard * n, n, n))

        n_changed = int(np.count_nonzero(label == 1))
        n_known = n_changed + int(np.count_nonzero(label == 0))
        patch_label = 1 if n_changed else (0 if n_known else -1)
        self.labels[{1: "changed", 0: "unchanged", -1: "unknown"}[patch_label]] += 1
        crs = meta.get("crs", "")
        crs = "" if crs is None else (crs if isinstance(crs, str) else crs.to_string())
        if crs:
            self._crs.add(crs)
        row = {
            "id": self.count, "shard": shard_name(self._shard_no), "index_in_shard": self._in_shard,
            "split": split, "label": patch_label,
            "changed_fraction": round(n_changed / n_known, 6) if n_known else "",
            "pair": meta.get("pair", ""), "row_off": meta.get("row_off", ""),
            "col_off": meta.get("col_off", ""), "size": n,
            **{k: _number(meta.get(k, "")) for k in ("minx", "miny", "maxx", "maxy")},
            "crs": crs, "valid_fraction": _number(meta.get("valid_fraction", ""), 6),
        }
        self._index.writerow([row[k] for k in INDEX_COLUMNS] + [meta.get(k, "") for k in self.extra_columns])
        self._in_shard += 1
        self.counts[split] += 1
        self.count += 1
        return self.count - 1

    def _as_stored(self, array: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.shape != (self.bands, self.size, self.size):
            raise ValueError(f"{name} has shape {array.shape}, expected {(self.bands, self.size, self.size)}")
        if array.dtype == self.dtype:
            return array
        out = array.astype(self.dtype)
        if not np.array_equal(out, array, equal_nan=out.dtype.kind == "f"):
            raise ValueError(f"{name}: its {array.dtype} values do not fit the dataset's {self.dtype} exactly")
        return out

    def _next_shard(self) -> None:
        self._close_shard()
        self._shard_no += 1
        self._in_shard = 0
        self._shard = _open_shard(self._tmp / shard_name(self._shard_no), self.size, self.shard_size,
                                  self.bands, self.dtype, self.band_names, self.compress, self._tags)

    def _close_shard(self) -> None:
        """Close the shard being written; one holding fewer than ``shard_size`` patches is cut to its length."""
        if self._shard is None:
            return
        ds, self._shard = self._shard, None
        ds.close()
        if self._in_shard < self.shard_size:
            path = Path(ds.name)
            short = path.with_name(f".{path.name}.short")
            n = self.size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
            with src, _open_shard(short, n, self._in_shard, self.bands, self.dtype, self.band_names,
                                  self.compress, self._tags) as dst:
                for k in range(self._in_shard):
                    win = Window(0, k * n, n, n)
                    dst.write(src.read(window=win), window=win)
            os.replace(short, path)

    # -- finishing ----------------------------------------------------------------------------

    def close(self) -> dict:
        """Finish the last shard, write ``dataset.json`` and move the dataset onto ``out_dir``.

        Returns the content of ``dataset.json``.
        """
        if self._closed:
            raise RuntimeError("PatchWriter is closed")
        try:
            self._close_shard()
            self._index_file.close()
            info = self.describe()
            write_text(self._tmp / "dataset.json", json.dumps(info, indent=2, default=str) + "\n")
            check_out_dir(self.out_dir, self.overwrite)  # still true now that the work is done
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return info

    def describe(self) -> dict:
        """What ``dataset.json`` holds."""
        c = self.bands
        crs = sorted(self._crs)
        from geochange import __version__

        return {
            "format": FORMAT,
            "version": VERSION,
            "size": self.size,
            "bands": c,
            "band_names": self.band_names,
            "dtype": self.dtype.name,
            "shard_bands": [f"before_{b}" for b in self.band_names] + [f"after_{b}" for b in self.band_names]
                           + ["label"],
            "label_values": {"0": "unchanged", "1": "changed", "255": "unknown (no label or no data)"},
            "crs": crs[0] if len(crs) == 1 else (crs or None),
            "shard_size": self.shard_size,
            "compress": self.compress,
            "shards": self._shard_no + 1,
            "counts": {"total": self.count, **self.counts},
            "labels": dict(self.labels),
            "sources": self.sources,
            "params": self.params,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "geochange_version": __version__,
        }

    def _publish(self) -> None:
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old")
            discard(old)
            os.replace(self.out_dir, old)
        try:
            os.replace(self._tmp, self.out_dir)
        except BaseException:
            if old is not None:
                os.replace(old, self.out_dir)
            raise
        if old is not None:
            discard(old)

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        if not self._index_file.closed:
            self._index_file.close()
        discard(self._tmp)
        self._closed = True

    def __enter__(self) -> "PatchWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds a dataset (unless ``overwrite``) or anything else."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise GeochangeError(f"{out_dir}: exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    if (out_dir / "dataset.json").is_file():
        if overwrite:
            return
        raise GeochangeError(f"{out_dir}: holds a dataset already (use --overwrite to replace it)")
    raise GeochangeError(f"{out_dir}: the folder holds other files; choose a new or empty folder")


def shard_name(number: int) -> str:
    return f"shards/shard_{number:05d}.tif"


def shard_tags(sources: list[dict]) -> dict[str, str]:
    """What every shard says about how it was made (``io.provenance``): geochange's version, the date,
    the imagery it was cut from."""
    from geochange import __version__
    from geochange.io.provenance import now, source_path, tiff_tags

    pairs = [{k: source_path(s[k]) for k in ("before", "after") if s.get(k)} for s in sources]
    return tiff_tags({"GEOCHANGE_VERSION": __version__, "CREATED": now().isoformat(),
                      "SOURCES": json.dumps(pairs)}, "patch pairs of a geochange dataset (see dataset.json)")


def _open_shard(path: Path, size: int, n: int, bands: int, dtype: np.dtype, band_names: Sequence[str],
                compress: str, tags: dict[str, str] | None = None) -> rasterio.io.DatasetWriter:
    profile = dict(driver="GTiff", width=size, height=n * size, count=2 * bands + 1, dtype=dtype.name,
                   interleave="pixel", bigtiff="if_safer", blockysize=size, sparse_ok=True)
    if compress != "none":
        profile.update(compress=compress, predictor=3 if dtype.kind == "f" else 2)
    # level 1: DEFLATE writes 4x faster than at GDAL's default level 6, for files 2-3 % bigger
    if compress == "deflate":
        profile["zlevel"] = 1
    elif compress == "zstd":
        profile["zstd_level"] = 1
    if size % 16 == 0:
        profile.update(tiled=True, blockxsize=size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path, "w", **profile)
    names = [f"before_{b}" for b in band_names] + [f"after_{b}" for b in band_names] + ["label"]
    for i, name in enumerate(names, start=1):
        ds.set_band_description(i, name)
    ds.update_tags(FORMAT=FORMAT, PATCH_SIZE=str(size), PATCHES=str(n), **(tags or {}))
    ds.update_tags(len(names), VALUES=f"0: unchanged, 1: changed, {UNKNOWN}: unknown")
    return ds


def _number(value, digits: int = 10):
    """Floats written with enough digits to round-trip coordinates, blanks kept blank."""
    if value is None or value == "":
        return ""
    value = float(value)
    if math.isnan(value):
        return ""
    return repr(round(value, digits))


# --- reading ------------------------------------------------------------------------------------

class PatchDataset:
    """Random access to a dataset written by :class:`PatchWriter`.

    ``split`` keeps only the patches of one split (train, val or test) or of several (a list).
    ``dataset[i]`` is ``{"before": (C, H, W), "after": (C, H, W), "label": (H, W) uint8,
    "meta": the index row as a dict}``, the images in the dataset's dtype. ``info`` is
    ``dataset.json``; ``index`` the index table of the selected patches (pandas).

    Shards are opened on first use and up to ``max_open`` stay open. The object pickles without
    its open files and reopens them in the process that reads, so it is safe in a torch
    ``DataLoader`` with worker processes.
    """

    def __init__(self, path: str | Path, split: str | Iterable[str] | None = None, *, max_open: int = 32) -> None:
        import pandas as pd

        self.path = Path(path)
        self.info = read_info(self.path)
        self.size = int(self.info["size"])
        self.bands = int(self.info["bands"])
        self.dtype = np.dtype(self.info["dtype"])
        index = pd.read_csv(self.path / "index.csv", keep_default_na=False,
                            na_values={"changed_fraction": [""], "valid_fraction": [""]},
                            dtype={"shard": str, "split": str, "pair": str, "crs": str})
        if split is not None:
            wanted = [split] if isinstance(split, str) else list(split)
            bad = [s for s in wanted if s not in SPLITS]
            if bad:
                raise GeochangeError(f"unknown split {bad[0]!r} (splits: {', '.join(SPLITS)})")
            index = index[index["split"].isin(wanted)].reset_index(drop=True)
        self.split = split
        self.index = index
        self._columns = {c: index[c].to_numpy() for c in index.columns}
        self._shards = self._columns["shard"]
        self._slots = self._columns["index_in_shard"].astype(np.int64)
        self.max_open = max_open
        self._handles: collections.OrderedDict[str, rasterio.io.DatasetReader] = collections.OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"patch {i} out of range ({n} patches)")
        ds = self._open(self._shards[i])
        s, c = self.size, self.bands
        stack = ds.read(window=Window(0, int(self._slots[i]) * s, s, s))
        return {"before": stack[:c], "after": stack[c:2 * c], "label": stack[2 * c].astype(np.uint8),
                "meta": {k: _py(v[i]) for k, v in self._columns.items()}}

    def _open(self, shard: str) -> rasterio.io.DatasetReader:
        if os.getpid() != self._pid:  # forked into a worker: never share GDAL handles across processes
            self._handles = collections.OrderedDict()
            self._pid = os.getpid()
        ds = self._handles.get(shard)
        if ds is not None:
            self._handles.move_to_end(shard)
            return ds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(self.path / shard)
        self._handles[shard] = ds
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)[1].close()
        return ds

    def close(self) -> None:
        """Close the open shards (they reopen on the next read)."""
        for ds in self._handles.values():
            ds.close()
        self._handles.clear()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = collections.OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __enter__(self) -> "PatchDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatchDataset({str(self.path)!r}, split={self.split!r}: {len(self)} patches of {self.size} px)"


def read_info(path: Path) -> dict:
    """``dataset.json`` of a patch dataset, checked."""
    file = Path(path) / "dataset.json"
    if not file.is_file():
        raise GeochangeError(f"{path}: not a patch dataset (no dataset.json)")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeochangeError(f"{file}: not valid JSON ({exc})") from None
    if info.get("format") != FORMAT:
        raise GeochangeError(f"{file}: not a {FORMAT} dataset")
    if int(info.get("version", 0)) > VERSION:
        raise GeochangeError(f"{file}: format version {info['version']} is newer than this geochange "
                             f"reads ({VERSION}); update geochange")
    return info


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


class LevirDataset:
    """Change-detection pairs in the LEVIR-CD layout: ``A/`` (before), ``B/`` (after), ``label/``.

    Files in the three folders share their names (matched by stem, so ``A/x.jpg`` pairs with
    ``label/x.png``): PNG, TIFF, JPEG or BMP. The folders sit either in ``path`` itself or in
    ``path/train``, ``path/val`` and ``path/test``; ``split`` chooses among the latter. Labels
    are read as changed where > 0 (LEVIR's 0/255 become 0/1); without ``label/`` every pixel is
    255 (unknown). Items are those of :class:`PatchDataset`, images ``(C, H, W)`` in the files' dtype.

    Each image is cut into ``tile`` x ``tile`` windows (read as windows, so memory per item is bounded
    whatever the image size; the last row and column of windows are shifted inwards to stay whole);
    an image smaller than ``tile`` is one item. ``meta`` holds the image's ``id`` (its windows share
    it: they are one pair of dates) and the window's ``row_off``, ``col_off``.
    """

    EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

    def __init__(self, path: str | Path, split: str | Iterable[str] | None = None, tile: int = 256) -> None:
        if tile < 1:
            raise GeochangeError(f"tile must be a positive number of pixels (got {tile})")
        self.path = Path(path)
        self.tile = int(tile)
        if not self.path.is_dir():
            raise GeochangeError(f"{path}: no such folder")
        if (self.path / "A").is_dir():
            roots = [("", self.path)]
            if split is not None:
                raise GeochangeError(f"{path}: has no train/val/test subfolders, so no split {split!r}")
        else:
            roots = [(s, self.path / s) for s in SPLITS if (self.path / s / "A").is_dir()]
            if not roots:
                raise GeochangeError(f"{path}: not a LEVIR-CD layout (no A/ folder, nor train/A, val/A, test/A)")
            if split is not None:
                wanted = [split] if isinstance(split, str) else list(split)
                have = [s for s, _ in roots]
                missing = [s for s in wanted if s not in have]
                if missing:
                    raise GeochangeError(f"{path}: no split {missing[0]!r} (found {', '.join(have)})")
                roots = [(s, r) for s, r in roots if s in wanted]
        self.split = split
        self.items: list[dict] = []
        for name, root in roots:
            a = self._images(root / "A")
            b = self._images(root / "B")
            labels = self._images(root / "label") if (root / "label").is_dir() else {}
            missing = sorted(set(a) - set(b))
            if missing:
                raise GeochangeError(f"{root / 'A' / a[missing[0]].name}: no matching image in {root / 'B'}")
            if labels and set(a) - set(labels):
                stem = sorted(set(a) - set(labels))[0]
                raise GeochangeError(f"{a[stem]}: no matching label in {root / 'label'}")
            for stem in sorted(a):
                chip = {"id": f"{name}/{stem}" if name else stem, "name": stem, "split": name,
                        "a": str(a[stem]), "b": str(b[stem]), "label": str(labels[stem]) if stem in labels else ""}
                height, width = _image_size(chip["a"])
                for row in _offsets(height, self.tile):
                    for col in _offsets(width, self.tile):
                        self.items.append({**chip, "row_off": row, "col_off": col,
                                           "height": min(self.tile, height), "width": min(self.tile, width)})

    @classmethod
    def _images(cls, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise GeochangeError(f"{folder}: no such folder (LEVIR-CD layout: A/, B/, label/)")
        return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in cls.EXTENSIONS and p.is_file()}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        meta = self.items[i]
        before, after = _read_window(meta["a"], meta), _read_window(meta["b"], meta)
        label = self.read_label(i)
        if before.shape[1:] != after.shape[1:] or before.shape[1:] != label.shape:
            raise GeochangeError(f"{meta['id']}: A, B and label differ in size "
                                 f"({before.shape[1:]}, {after.shape[1:]}, {label.shape})")
        return {"before": before, "after": after, "label": label, "meta": dict(meta)}

    def read_label(self, i: int) -> np.ndarray:
        """The label window of item ``i`` alone (0/1, or 255 everywhere without ``label/``)."""
        meta = self.items[i]
        if not meta["label"]:
            return np.full((meta["height"], meta["width"]), UNKNOWN, np.uint8)
        return (_read_window(meta["label"], meta)[0] > 0).astype(np.uint8)

    def __repr__(self) -> str:
        return f"LevirDataset({str(self.path)!r}, split={self.split!r}: {len(self)} pairs)"


def _offsets(length: int, tile: int) -> list[int]:
    """Window starts covering ``length`` with whole windows of ``tile`` (the last one shifted inwards)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _image_size(path: str) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.height, ds.width


def _read_window(path: str, meta: dict) -> np.ndarray:
    """One item's window of an image of a LEVIR-CD style folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(window=Window(meta["col_off"], meta["row_off"], meta["width"], meta["height"]))


def open_dataset(path: str | Path, split: str | Iterable[str] | None = None):
    """A :class:`PatchDataset` when ``path`` holds ``dataset.json``, else a :class:`LevirDataset`."""
    path = Path(path)
    if (path / "dataset.json").is_file():
        return PatchDataset(path, split)
    if (path / "A").is_dir() or any((path / s / "A").is_dir() for s in SPLITS):
        return LevirDataset(path, split)
    raise GeochangeError(f"{path}: neither a patch dataset (dataset.json) nor a LEVIR-CD layout (A/, B/, label/)")
