"""Fetch a manifest's remote files into a cache: resumable (HTTP Range), checked (SHA-256), with a progress bar.

A file is downloaded into ``<cache>/<file>.part`` and renamed onto ``<cache>/<file>`` only once it is
complete and its checksum (when the manifest gives one) matches, so the cache never holds a
half-written file under its final name. An interrupted download keeps its ``.part`` and the next
run asks the server for the rest (``Range: bytes=N-``); a server that ignores ranges (200 instead of
206) makes it start over. A checksum mismatch removes the download and stops with one line.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from geochange import __version__
from geochange.data.manifest import Manifest, cache_path, sha256_of
from geochange.errors import GeochangeError
from geochange.progress import say, task

CHUNK = 1 << 20


def download_manifest(manifest: Manifest, cache: str | Path, *, timeout: float = 60.0) -> list[dict]:
    """Fetch every ``url`` entry of ``manifest`` into ``cache``; return one record per file."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    records = []
    for e in manifest.remote_entries():
        dest = cache_path(cache, e.file)
        records.append({"entry": e.label, **fetch(e.url, dest, e.sha256, timeout=timeout)})
    return records


def fetch(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = 60.0) -> dict:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``sha256``; return what was done.

    ``status`` is ``cached`` (``dest`` was there and checks out), ``downloaded`` or ``resumed``.
    """
    dest = Path(dest)
    if dest.is_file():
        if sha256 is None or sha256_of(dest).lower() == sha256.lower():
            return {"url": url, "path": str(dest), "status": "cached", "bytes": dest.stat().st_size}
        dest.unlink()   # a cached copy that no longer matches: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    status = _get(url, part, have, timeout)
    if sha256 is not None:
        got = sha256_of(part)
        if got.lower() != sha256.lower():
            part.unlink(missing_ok=True)
            raise GeochangeError(f"{url}: checksum mismatch (manifest sha256 {sha256[:12]}..., downloaded "
                                 f"{got[:12]}...); the download was removed: check the manifest or the server")
    os.replace(part, dest)
    return {"url": url, "path": str(dest), "status": status, "bytes": dest.stat().st_size}


def _get(url: str, part: Path, have: int, timeout: float) -> str:
    """Append the bytes of ``url`` from offset ``have`` to ``part``; 'downloaded' or 'resumed'."""
    headers = {"User-Agent": f"geochange/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:   # nothing left to send: the part is complete
            return "resumed"
        raise GeochangeError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GeochangeError(f"{url}: cannot download ({reason})") from None
    with response:
        resumed = have > 0 and response.status == 206
        if resumed:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise GeochangeError(f"{url}: the server resumed at byte {start}, not {have}; "
                                     f"delete {part} and run again")
        else:
            have = 0   # no range support (200): start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = have
        try:
            with open(part, "ab" if resumed else "wb") as f, \
                    task(f"downloading {part.name[:-5]}", total=total, unit="bytes") as advance:
                advance(have)
                while block := response.read(CHUNK):
                    f.write(block)
                    received += len(block)
                    advance(len(block))
        except (http.client.IncompleteRead, OSError, TimeoutError) as exc:
            raise GeochangeError(f"{url}: download interrupted after {received} bytes ({type(exc).__name__}); "
                                 "run again to resume") from None
    if total is not None and received < total:
        raise GeochangeError(f"{url}: download interrupted after {received} of {total} bytes; run again to resume")
    if resumed:
        say(f"resumed {url} from byte {have}")
    return "resumed" if resumed else "downloaded"


def _range_start(content_range: str) -> int:
    """The first byte of ``Content-Range: bytes START-END/TOTAL`` (-1 when absent or malformed)."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
