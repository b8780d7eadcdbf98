"""``geochange detect-many``: many before/after pairs, one Dask task each; a failed pair never stops the rest.

The pairs come from a CSV with columns ``before``, ``after``, ``out`` (one output folder per pair)
and, optionally, per-pair ``model`` and ``checkpoint``; other settings are shared (:class:`DetectOptions`).
Every pair runs ``detect`` on a worker of a Dask cluster (``--scheduler`` or a local one). The result
is a table of pairs with their status (``ok`` or ``failed``), error message, changed area and time,
written as ``detect_many.csv`` beside the pairs file (or at ``report``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
import traceback
from pathlib import Path

from geochange.detect import DetectOptions
from geochange.errors import GeochangeError
from geochange.io.atomic import write_text
from geochange.progress import task

REQUIRED = ("before", "after", "out")
OPTIONAL = ("model", "checkpoint")
REPORT_COLUMNS = ("before", "after", "out", "status", "error", "changed_area_m2", "polygons", "seconds")


def read_pairs(path: str | Path) -> list[dict]:
    """Rows of the pairs CSV, checked: the required columns, no unknown ones, no output folder twice."""
    path = Path(path)
    if not path.is_file():
        raise GeochangeError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise GeochangeError(f"{path}: missing column {missing[0]!r} (need {', '.join(REQUIRED)})")
        unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
        if unknown:
            raise GeochangeError(f"{path}: unknown column {unknown[0]!r} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise GeochangeError(f"{path}: no pairs")
    base = path.parent
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        for key in REQUIRED:
            if not row.get(key):
                raise GeochangeError(f"{path}, line {line}: empty {key!r}")
        for key in ("before", "after", "out", "checkpoint"):  # relative paths are relative to the CSV
            if row.get(key) and not _is_remote(row[key]) and not Path(row[key]).is_absolute():
                row[key] = str(base / row[key])
        out = str(Path(row["out"]).resolve())
        if out in seen:
            raise GeochangeError(f"{path}, line {line}: output folder {row['out']} also used on line {seen[out]}")
        seen[out] = line
    return rows


def detect_many(pairs_csv: str | Path, options: DetectOptions | None = None, *, scheduler: str | None = None,
                workers: int | None = None, report: str | Path | None = None) -> list[dict]:
    """Run ``detect`` on every pair of ``pairs_csv`` on a Dask cluster; returns the report rows."""
    from distributed import as_completed

    from geochange.scheduler import dask_client

    rows = read_pairs(pairs_csv)
    opts = options or DetectOptions()
    results: list[dict | None] = [None] * len(rows)
    with dask_client(scheduler, workers) as client, task("pairs", len(rows), unit="pairs") as advance:
        futures = {client.submit(run_pair, row, opts, pure=False, key=f"detect-pair-{i}"): i
                   for i, row in enumerate(rows)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # a worker died: report the pair, keep the others
                results[i] = _failed(rows[i], f"worker lost: {exc}", 0.0)
            advance(1)
    report = Path(report) if report else Path(pairs_csv).with_name("detect_many.csv")
    write_text(report, _csv(results))
    return results


def run_pair(row: dict, opts: DetectOptions) -> dict:
    """One pair on a worker: detect, and a report row whatever happens."""
    from geochange.detect import detect
    from geochange.progress import set_quiet

    set_quiet(True)
    t0 = time.perf_counter()
    pair_opts = dataclasses.replace(opts, model=row.get("model") or opts.model,
                                    checkpoint=row.get("checkpoint") or opts.checkpoint)
    try:
        summary = detect(row["before"], row["after"], row["out"], pair_opts)
    except GeochangeError as exc:
        return _failed(row, str(exc), time.perf_counter() - t0)
    except Exception as exc:  # a bug or a library error: the message and where, not a crash of the batch
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _failed(row, f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})",
                       time.perf_counter() - t0)
    return {"before": row["before"], "after": row["after"], "out": row["out"], "status": "ok", "error": "",
            "changed_area_m2": round(summary["changed_area_m2"], 2), "polygons": summary["polygons"],
            "seconds": round(time.perf_counter() - t0, 2)}


def _failed(row: dict, message: str, seconds: float) -> dict:
    return {"before": row["before"], "after": row["after"], "out": row["out"], "status": "failed",
            "error": message.splitlines()[0] if message else "failed", "changed_area_m2": "", "polygons": "",
            "seconds": round(seconds, 2)}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _is_remote(path: str) -> bool:
    return "://" in path or path.startswith("/vsi")
