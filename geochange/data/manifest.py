"""Dataset manifests: the imagery and building footprints of one city, year by year (``build-wdc``).

A manifest is a YAML file (see ``data_manifests/wdc.yaml`` and docs/datasets.md)::

    name: wdc
    crs: EPSG:26985                 # working CRS: imagery grids, footprints, split blocks
    pairs: [[1999, 2005], [2010, 2015]]   # footprint pairs annotated (appendix A.1)
    noisy_pairs: consecutive        # imagery pairs for noisy negatives (A.2); or a list of pairs
    filter_year: 2015               # footprints that steer the 9:1 building filter (A.3)
    imagery:
      1999: {source: <GDAL path, /vsicurl/ URL or GDAL WMS XML>, crs: ..., resolution: ..., licence: ...}
      2005: {url: https://..., file: ortho_2005.tif, sha256: ..., ...}
    footprints:
      1999: {source: buildings_1999.gpkg, layer: ..., id_field: GIS_ID, year_field: CAPTUREYEAR, ...}
    options: {patch: 32, block: 2, noisy: 200}   # optional: this city's build-wdc defaults

Every entry names its data either by ``source`` (read where it is: a local path, relative to the
manifest's folder, or any GDAL string) or by ``url`` (fetched into the cache by ``--download``, under
``file``, a plain relative name). Validation is strict and each problem is one line: unknown keys,
years missing for a pair or for the filter, a local path that does not exist, a bad SHA-256, a CRS
PROJ does not know. Paths are confined: a cache name cannot leave the cache (no absolute path, no
``..``), and a GDAL WMS description with a ``<Cache>`` (GDAL would write tiles wherever it says) is
refused, so nothing in a manifest makes the tool write outside the output folder or the cache.
``options`` holds the city's defaults for the build-wdc options that shape the dataset (patch size,
block, numbers of patches, ...; :data:`OPTION_TYPES`); flags given on the command line override them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from geochange.errors import GeochangeError

TOP_KEYS = ("name", "description", "crs", "resolution", "licence", "attribution", "notes", "pairs",
            "noisy_pairs", "filter_year", "imagery", "footprints", "options")
# build-wdc options a manifest may set (its defaults for this city; command-line flags override them):
# what shapes the dataset, not how or where it runs
OPTION_TYPES = {"patch": int, "noisy": int, "positives": int, "negatives": int, "building_share": float,
                "split": list, "block": int, "margin": int, "seed": int, "min_valid": float, "resampling": str}
COMMON_KEYS = ("source", "url", "file", "sha256", "crs", "licence", "provenance", "notes")
IMAGERY_KEYS = COMMON_KEYS + ("resolution", "bands")
FOOTPRINT_KEYS = COMMON_KEYS + ("layer", "id_field", "year_field")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")   # WMS:..., GPKG:...; not a Windows drive "C:"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Entry:
    """One year's imagery or footprints, as the manifest gives it."""

    kind: str                      # "imagery" or "footprints"
    year: int
    source: str | None = None      # read in place: local path (absolute, resolved) or a GDAL string
    url: str | None = None         # fetched into the cache by --download
    file: str | None = None        # the cache name of ``url`` (relative, confined)
    sha256: str | None = None
    crs: str | None = None
    resolution: float | None = None
    bands: tuple[int, ...] | None = None
    layer: str | None = None
    id_field: str | None = None
    year_field: str | None = None
    licence: str | None = None
    provenance: str | None = None
    notes: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}.{self.year}"

    @property
    def remote(self) -> bool:
        return self.url is not None

    @property
    def local_file(self) -> Path | None:
        """The local file of a ``source`` that is a plain path (None for GDAL strings and URLs)."""
        if self.source is None or not is_local_path(self.source):
            return None
        return Path(self.source)

    def path(self, cache: Path | None) -> str:
        """What GDAL/OGR opens: the cached file of a ``url``, else ``source``."""
        if self.url is None:
            return str(self.source)
        if cache is None:
            raise GeochangeError(f"{self.label}: {self.url} needs a cache folder (--cache)")
        return str(cache_path(cache, self.file))


@dataclass
class Manifest:
    """A validated manifest. Years are ints; ``pairs`` and ``noisy_pairs`` are ``(y0, y1)`` with y0 < y1."""

    path: Path
    name: str
    crs: str | None
    imagery: dict[int, Entry]
    footprints: dict[int, Entry]
    pairs: list[tuple[int, int]]
    noisy_pairs: list[tuple[int, int]]
    filter_year: int | None
    resolution: float | None = None
    description: str | None = None
    licence: str | None = None
    attribution: str | None = None
    notes: str | None = None
    options: dict = field(default_factory=dict)   # build-wdc option defaults of this city (OPTION_TYPES)
    extra: dict = field(default_factory=dict)

    def entries(self) -> list[Entry]:
        return [*self.imagery.values(), *self.footprints.values()]

    def remote_entries(self) -> list[Entry]:
        return [e for e in self.entries() if e.remote]

    def describe(self) -> dict:
        """The manifest as recorded in ``summary.json`` and ``dataset.json``."""
        def entry(e: Entry) -> dict:
            return {k: v for k, v in (("source", e.source), ("url", e.url), ("file", e.file),
                                      ("sha256", e.sha256), ("crs", e.crs), ("licence", e.licence),
                                      ("provenance", e.provenance)) if v is not None}
        return {"path": str(self.path), "name": self.name, "crs": self.crs,
                "pairs": [f"{a}-{b}" for a, b in self.pairs],
                "noisy_pairs": [f"{a}-{b}" for a, b in self.noisy_pairs], "filter_year": self.filter_year,
                "imagery": {y: entry(e) for y, e in sorted(self.imagery.items())},
                "footprints": {y: entry(e) for y, e in sorted(self.footprints.items())},
                "options": dict(self.options)}


def load_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest; raise :class:`GeochangeError` (one line) on the first problem.

    ``check_files`` also requires every local ``source`` to exist (off for manifests that are only
    inspected on another machine).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise GeochangeError(f"{path}: no such manifest file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise GeochangeError(f"{path}: not a valid YAML manifest{at}") from None
    if not isinstance(data, dict):
        raise GeochangeError(f"{path}: a manifest is a mapping of keys (name, imagery, footprints, pairs, ...)")
    where = path.name
    _check_keys(data, TOP_KEYS, where, "")
    base = path.parent.resolve()
    crs = _crs(data.get("crs"), where, "crs")
    imagery = _entries(data.get("imagery"), "imagery", IMAGERY_KEYS, base, where, check_files)
    footprints = _entries(data.get("footprints") or {}, "footprints", FOOTPRINT_KEYS, base, where, check_files)
    if not imagery:
        raise GeochangeError(f"{where}: 'imagery' needs at least one year")

    pairs = [_pair(p, where, "pairs") for p in _list(data.get("pairs", []), where, "pairs")]
    for y0, y1 in pairs:
        for y in (y0, y1):
            if y not in imagery:
                raise GeochangeError(f"{where}: pair {y0}-{y1}: no imagery for {y} (imagery years: {_years(imagery)})")
            if y not in footprints:
                raise GeochangeError(f"{where}: pair {y0}-{y1}: no footprints for {y} "
                                     f"(footprint years: {_years(footprints) or 'none'})")
    noisy = data.get("noisy_pairs", "consecutive")
    if noisy == "consecutive":
        years = sorted(imagery)
        noisy_pairs = list(zip(years[:-1], years[1:]))
    elif noisy in ("pairs", "same"):
        noisy_pairs = list(pairs)
    else:
        noisy_pairs = [_pair(p, where, "noisy_pairs") for p in _list(noisy, where, "noisy_pairs")]
        for y0, y1 in noisy_pairs:
            for y in (y0, y1):
                if y not in imagery:
                    raise GeochangeError(f"{where}: noisy pair {y0}-{y1}: no imagery for {y} "
                                         f"(imagery years: {_years(imagery)})")
    filter_year = data.get("filter_year")
    if filter_year is not None:
        filter_year = _year(filter_year, where, "filter_year")
        if filter_year not in footprints:
            raise GeochangeError(f"{where}: filter_year {filter_year} has no footprints "
                                 f"(footprint years: {_years(footprints) or 'none'})")
    resolution = _positive(data.get("resolution"), where, "resolution")
    options = _options(data.get("options"), where)
    return Manifest(path=path, name=str(data.get("name") or path.stem), crs=crs, imagery=imagery,
                    footprints=footprints, pairs=pairs, noisy_pairs=noisy_pairs, filter_year=filter_year,
                    resolution=resolution, description=_text(data.get("description")),
                    licence=_text(data.get("licence")), attribution=_text(data.get("attribution")),
                    notes=_text(data.get("notes")), options=options)


# --- paths --------------------------------------------------------------------------------------

def is_local_path(source: str) -> bool:
    """True for a plain file path; False for URLs, /vsi paths, inline XML and driver prefixes (WMS:...)."""
    s = source.strip()
    return not (s.startswith("<") or s.startswith("/vsi") or "://" in s or _DRIVER_PREFIX.match(s))


def cache_name(name: str, where: str) -> str:
    """A cache file name that stays inside the cache: relative, no ``..``, plain characters."""
    p = PurePosixPath(name)
    if not name or name.startswith(("/", "\\", "~")) or "\\" in name or p.is_absolute():
        raise GeochangeError(f"{where}: file {name!r} must be a relative name inside the cache")
    parts = p.parts
    if not parts or any(part in ("..", ".") for part in parts) or not all(_SAFE_NAME.match(part) for part in parts):
        raise GeochangeError(f"{where}: file {name!r} must stay inside the cache "
                             "(letters, digits, '.', '_', '-' and '/' only, no '..')")
    return str(p)


def cache_path(cache: Path, name: str) -> Path:
    """``cache/name``, checked once more to lie inside ``cache``."""
    cache = Path(cache).resolve()
    target = (cache / name).resolve()
    if cache not in target.parents:
        raise GeochangeError(f"{name}: resolves outside the cache {cache}")
    return target


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_local_checksums(manifest: Manifest) -> None:
    """Check the SHA-256 of every local ``source`` that declares one (cached downloads are checked on fetch)."""
    for e in manifest.entries():
        f = e.local_file
        if e.sha256 and f is not None and f.is_file():
            got = sha256_of(f)
            if got.lower() != e.sha256.lower():
                raise GeochangeError(f"{e.label}: checksum mismatch for {f} (manifest sha256 {e.sha256[:12]}..., "
                                     f"file {got[:12]}...)")


# --- validation helpers -------------------------------------------------------------------------

def _entries(raw, kind: str, keys: tuple[str, ...], base: Path, where: str, check_files: bool) -> dict[int, Entry]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise GeochangeError(f"{where}: '{kind}' is a mapping of year -> entry")
    out: dict[int, Entry] = {}
    for key, value in raw.items():
        year = _year(key, where, kind)
        label = f"{kind}.{year}"
        if isinstance(value, str):
            value = {"source": value}
        if not isinstance(value, dict):
            raise GeochangeError(f"{where}: {label} must be a mapping (source or url, crs, licence, ...)")
        _check_keys(value, keys, where, label)
        out[year] = _entry(kind, year, value, base, f"{where}: {label}", check_files)
    return out


def _entry(kind: str, year: int, v: dict, base: Path, where: str, check_files: bool) -> Entry:
    source, url = _text(v.get("source")), _text(v.get("url"))
    if (source is None) == (url is None):
        raise GeochangeError(f"{where}: give exactly one of 'source' (read in place) or 'url' (downloaded)")
    file = None
    if url is not None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise GeochangeError(f"{where}: url {url!r} is not an http(s) URL")
        default = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(PurePosixPath(parsed.path).name)).lstrip(".")
        file = cache_name(_text(v.get("file")) or default or f"{kind}_{year}", where)
    elif v.get("file") is not None:
        raise GeochangeError(f"{where}: 'file' names the cached copy of a 'url'; this entry has none")
    if source is not None:
        if "<cache" in source.lower():
            raise GeochangeError(f"{where}: the GDAL description has a <Cache> element; remove it "
                                 "(GDAL would write tiles outside the output folder)")
        if is_local_path(source):
            local = Path(source).expanduser()
            local = local if local.is_absolute() else base / local
            if check_files and not local.exists():
                raise GeochangeError(f"{where}: {source}: no such file (paths are relative to the manifest's folder)")
            if local.suffix.lower() in (".xml", ".vrt") and local.is_file() and local.stat().st_size < 1 << 20:
                if "<cache" in local.read_text(errors="replace").lower():
                    raise GeochangeError(f"{where}: {source} has a <Cache> element; remove it "
                                         "(GDAL would write tiles outside the output folder)")
            source = str(local)
    sha = _text(v.get("sha256"))
    if sha is not None and not _SHA256.match(sha):
        raise GeochangeError(f"{where}: sha256 must be 64 hexadecimal digits")
    bands = v.get("bands")
    if bands is not None:
        if not isinstance(bands, list) or not bands or not all(isinstance(b, int) and b >= 1 for b in bands):
            raise GeochangeError(f"{where}: bands must be a list of band numbers from 1, e.g. [1, 2, 3]")
        bands = tuple(bands)
    for key in ("layer", "id_field", "year_field"):
        if key in v and not isinstance(v[key], str):
            raise GeochangeError(f"{where}: {key} must be a text")
    return Entry(kind=kind, year=year, source=source, url=url, file=file, sha256=sha,
                 crs=_crs(v.get("crs"), where, "crs"), resolution=_positive(v.get("resolution"), where, "resolution"),
                 bands=bands, layer=v.get("layer"), id_field=v.get("id_field"), year_field=v.get("year_field"),
                 licence=_text(v.get("licence")), provenance=_text(v.get("provenance")), notes=_text(v.get("notes")))


def _options(raw, where: str) -> dict:
    """The manifest's build-wdc option defaults: known keys, values of the right kind (ranges are
    checked with the command line's)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise GeochangeError(f"{where}: 'options' is a mapping of build-wdc options, e.g. {{patch: 32, block: 2}}")
    _check_keys(raw, tuple(OPTION_TYPES), where, "options")
    out = {}
    for key, value in raw.items():
        kind = OPTION_TYPES[key]
        if value is None and key in ("positives", "negatives", "margin"):
            out[key] = None
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
        elif kind is str and isinstance(value, str):
            out[key] = value
        elif kind is list and isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out[key] = [float(v) for v in value]
        else:
            what = {int: "a whole number", float: "a number", str: "a text",
                    list: "three fractions [train, val, test]"}[kind]
            raise GeochangeError(f"{where}: options.{key} must be {what}, not {value!r}")
    return out


def _check_keys(d: dict, known: tuple[str, ...], where: str, label: str) -> None:
    for key in d:
        if key not in known:
            at = f" in {label}" if label else ""
            raise GeochangeError(f"{where}: unknown key {key!r}{at} (known: {', '.join(known)})")


def _year(value, where: str, what: str) -> int:
    try:
        year = int(str(value).strip())
    except ValueError:
        raise GeochangeError(f"{where}: {what}: {value!r} is not a year") from None
    if not 1800 <= year <= 2200:
        raise GeochangeError(f"{where}: {what}: {year} is not a plausible year")
    return year


def _pair(value, where: str, what: str) -> tuple[int, int]:
    if isinstance(value, str) and "-" in value:
        value = value.split("-")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise GeochangeError(f"{where}: {what}: {value!r} is not a pair of years like [1999, 2005]")
    y0, y1 = _year(value[0], where, what), _year(value[1], where, what)
    if y0 >= y1:
        raise GeochangeError(f"{where}: {what}: {y0}-{y1}: the earlier year comes first")
    return y0, y1


def _list(value, where: str, what: str) -> list:
    if not isinstance(value, list):
        raise GeochangeError(f"{where}: {what} must be a list of year pairs, e.g. [[1999, 2005], [2010, 2015]]")
    return value


def _crs(value, where: str, what: str) -> str | None:
    if value is None:
        return None
    import pyproj

    try:
        crs = pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError:
        raise GeochangeError(f"{where}: {what}: {value!r} is not a CRS PROJ knows (e.g. EPSG:26985)") from None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _positive(value, where: str, what: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = -1.0
    if not x > 0:
        raise GeochangeError(f"{where}: {what} must be a positive number, not {value!r}")
    return x


def _text(value) -> str | None:
    return None if value is None else str(value)


def _years(d: dict) -> str:
    return ", ".join(str(y) for y in sorted(d))
