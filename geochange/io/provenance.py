"""How an output was made, written into the output itself: geochange's version, the date, the inputs,
the model with its settings and threshold, and the region rule.

One flat ``{KEY: text}`` dict per run (:func:`run_provenance`), stored as GeoTIFF metadata
(``gdalinfo`` lists it under ``Metadata:``; the standard ``TIFFTAG_SOFTWARE`` and ``TIFFTAG_DATETIME``
tags too) and as the GeoPackage layer's metadata (GDAL's ``gpkg_metadata`` tables). A Shapefile has
no place for it beyond the date of its ``.dbf`` header (:func:`dbf_date`); ``summary.json`` holds the same and more.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import geochange


def now() -> dt.datetime:
    """The time a run's outputs are stamped with (UTC, whole seconds)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def source_path(path: str | None) -> str:
    """An input as a reader elsewhere can find it: local paths made absolute, URLs and /vsi paths kept."""
    if not path:
        return ""
    text = str(path)
    if "://" in text or text.startswith("/vsi"):
        return text
    return os.path.abspath(text)


def run_provenance(before: str, after: str, model: dict, created: dt.datetime, *, checkpoint: str | None = None,
                   labels: str | None = None, rule: dict | None = None, settings: dict | None = None) -> dict[str, str]:
    """The provenance of one ``detect`` run as metadata items (keys in upper case, values text).

    ``model`` is the model's ``params()`` (name, config, threshold); ``rule`` the region rule's
    ``as_dict()``; ``settings`` the engine's (tile, overlap, normalisation, ...).
    """
    items = {
        "GEOCHANGE_VERSION": geochange.__version__,
        "CREATED": created.isoformat(),
        "BEFORE": source_path(before),
        "AFTER": source_path(after),
        "MODEL": str(model.get("name", "")),
        "MODEL_PARAMS": _json(model.get("config", {})),
        "THRESHOLD": _number(model.get("threshold")),
    }
    if checkpoint:
        items["CHECKPOINT"] = source_path(checkpoint)
    if labels:
        items["LABELS"] = source_path(labels)
    for key, value in (rule or {}).items():
        items[key.upper()] = _number(value)
    if settings:
        items["SETTINGS"] = _json(settings)
    return items


def tiff_tags(provenance: dict[str, str], what: str) -> dict[str, str]:
    """Dataset tags of a GeoTIFF: the provenance, and the standard TIFF tags other readers show
    (software, date and time, an image description ``what``)."""
    created = provenance.get("CREATED")
    stamp = dt.datetime.fromisoformat(created) if created else now()
    return {"TIFFTAG_SOFTWARE": f"geochange {provenance.get('GEOCHANGE_VERSION', geochange.__version__)}",
            "TIFFTAG_DATETIME": stamp.strftime("%Y:%m:%d %H:%M:%S"),
            "TIFFTAG_IMAGEDESCRIPTION": what, **provenance}


def describe_run(provenance: dict[str, str]) -> str:
    """One line about a run, for a layer's description: ``geochange 0.1.0, cva (threshold 0.42): a.tif -> b.tif``."""
    model = provenance.get("MODEL", "?")
    threshold = provenance.get("THRESHOLD")
    thr = f" (threshold {threshold})" if threshold else ""
    return (f"geochange {provenance.get('GEOCHANGE_VERSION', '')}, {model}{thr}: "
            f"{os.path.basename(provenance.get('BEFORE', ''))} -> {os.path.basename(provenance.get('AFTER', ''))}, "
            f"{provenance.get('CREATED', '')}")


def dbf_date(provenance: dict[str, str]) -> str | None:
    """The date for a Shapefile's ``.dbf`` header (GDAL's ``DBF_DATE_LAST_UPDATE``), YYYY-MM-DD."""
    created = provenance.get("CREATED")
    return created[:10] if created else None


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))


def _number(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)
