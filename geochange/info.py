"""``geochange info``: what a raster holds (CRS, size, resolution, bands, nodata) and how two overlap."""

from __future__ import annotations

from geochange.io.align import open_raster


def describe_raster(path: str) -> dict:
    """The facts about one raster a user checks before comparing it with another."""
    with open_raster(path) as ds:
        crs = ds.crs
        return {
            "path": path,
            "driver": ds.driver,
            "crs": crs.to_string() if crs else None,
            "crs_name": _crs_name(crs),
            "width": ds.width,
            "height": ds.height,
            "res": [abs(ds.transform.a), abs(ds.transform.e)] if crs else None,
            "bounds": list(ds.bounds) if crs else None,
            "bands": ds.count,
            "dtype": ds.dtypes[0],
            "nodata": ds.nodata,
            "alpha": any(ci.name == "alpha" for ci in ds.colorinterp),
            "descriptions": [d for d in ds.descriptions],
        }


def describe_overlap(before: str, after: str) -> dict:
    """Where AFTER covers BEFORE, in BEFORE's pixels: the window detect would process."""
    from geochange.errors import GeochangeError
    from geochange.io.pair import RasterPair

    try:
        with RasterPair.open(before, after) as pair:
            win = pair.offset
            with open_raster(before) as ds:
                frac = (win.width * win.height) / (ds.width * ds.height)
            return {"overlap": True, "width": int(win.width), "height": int(win.height),
                    "col_off": int(win.col_off), "row_off": int(win.row_off),
                    "bounds": list(pair.grid.bounds), "fraction_of_before": round(frac, 4),
                    "after_warped": pair.describe()["after_warped"], "bands_compared": pair.count}
    except GeochangeError as exc:
        return {"overlap": False, "reason": str(exc)}


def _crs_name(crs) -> str | None:
    if crs is None:
        return None
    try:
        import pyproj

        return pyproj.CRS.from_user_input(crs).name
    except Exception:  # an exotic WKT: the string form is still shown
        return None
