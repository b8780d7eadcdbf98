"""download: fetch a manifest's files from a real HTTP server on 127.0.0.1, resume, checksums."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from geochange.data.download import download_manifest, fetch
from geochange.data.manifest import load_manifest
from geochange.errors import GeochangeError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"       # ~1 MiB, not a multiple of the chunk size


class Server:
    """A tiny HTTP server in a thread: serves ``files``, honours Range, records the requests."""

    def __init__(self, files: dict[str, bytes], *, ranges: bool = True) -> None:
        self.files, self.ranges = files, ranges
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: int | None = None   # send only this many bytes of the next response, then hang up
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and outer.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if outer.cut_next is not None:
                    body, outer.cut_next = body[:outer.cut_next], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({"/data/ortho.tif": PAYLOAD, "/data/b.gpkg": b"footprints" * 1000})
    yield s
    s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_downloads_and_checks_then_uses_the_cache(server, tmp_path):
    dest = tmp_path / "cache" / "ortho.tif"
    rec = fetch(server.url + "/data/ortho.tif", dest, sha(PAYLOAD))
    assert rec["status"] == "downloaded" and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("ortho.tif.part").exists()
    rec = fetch(server.url + "/data/ortho.tif", dest, sha(PAYLOAD))
    assert rec["status"] == "cached" and len(server.requests) == 1     # no second request


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "ortho.tif"
    url = server.url + "/data/ortho.tif"
    server.cut_next = 300_000
    with pytest.raises(GeochangeError, match="interrupted after 300000 .*run again to resume"):
        fetch(url, dest, sha(PAYLOAD))
    part = dest.with_name("ortho.tif.part")
    assert part.stat().st_size == 300_000 and not dest.exists()
    rec = fetch(url, dest, sha(PAYLOAD))
    assert rec["status"] == "resumed"
    assert server.requests[-1] == ("/data/ortho.tif", "bytes=300000-")
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_a_partial_file_resumes_and_a_server_without_ranges_restarts(tmp_path):
    s = Server({"/f.bin": PAYLOAD}, ranges=False)
    try:
        dest = tmp_path / "f.bin"
        dest.with_name("f.bin.part").write_bytes(b"garbage that is not the start")
        rec = fetch(s.url + "/f.bin", dest, sha(PAYLOAD))
        assert s.requests[0][1] == "bytes=29-"          # it asked for the rest
        assert rec["status"] == "downloaded" and dest.read_bytes() == PAYLOAD   # got 200: started over
    finally:
        s.close()


def test_checksum_mismatch_is_one_clear_line_and_removes_the_download(server, tmp_path):
    dest = tmp_path / "ortho.tif"
    wrong = sha(b"something else")
    with pytest.raises(GeochangeError) as err:
        fetch(server.url + "/data/ortho.tif", dest, wrong)
    msg = str(err.value)
    assert "checksum mismatch" in msg and wrong[:12] in msg and sha(PAYLOAD)[:12] in msg and "\n" not in msg
    assert not dest.exists() and not dest.with_name("ortho.tif.part").exists()


def test_a_cached_file_that_no_longer_matches_is_fetched_again(server, tmp_path):
    dest = tmp_path / "ortho.tif"
    dest.write_bytes(b"corrupted")
    assert fetch(server.url + "/data/ortho.tif", dest, sha(PAYLOAD))["status"] == "downloaded"
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_are_one_line(server, tmp_path):
    with pytest.raises(GeochangeError, match=r"HTTP 404"):
        fetch(server.url + "/nope.tif", tmp_path / "x.tif")


def test_download_manifest_fetches_every_url_into_the_cache(server, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(f"""
imagery:
  2010: {{url: "{server.url}/data/ortho.tif", file: ortho/2010.tif, sha256: {sha(PAYLOAD)}}}
  2015: {{source: local.tif}}
footprints:
  2010: {{url: "{server.url}/data/b.gpkg"}}
""")
    (tmp_path / "local.tif").write_bytes(b"x")
    manifest = load_manifest(m)
    cache = tmp_path / "cache"
    records = download_manifest(manifest, cache)
    assert sorted(r["entry"] for r in records) == ["footprints.2010", "imagery.2010"]
    assert (cache / "ortho" / "2010.tif").read_bytes() == PAYLOAD
    assert (cache / "b.gpkg").read_bytes() == b"footprints" * 1000
    assert Path(manifest.imagery[2010].path(cache)) == (cache / "ortho" / "2010.tif").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "local.tif", "m.yaml"]   # nothing elsewhere
