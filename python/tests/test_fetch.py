"""fedrecon.fetch against a local HTTP server on 127.0.0.1 serving a generated zip."""

import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

import fedrecon
from fedrecon.datasets import DownloadError


def make_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        lines = "".join(f"{u}::{m}::{1 + (u * m) % 5}::97830{u:04d}\n"
                        for u in range(1, 40) for m in range(1, 30))
        z.writestr("ml-1m/ratings.dat", lines)
        z.writestr("ml-1m/movies.dat", "".join(f"{m}::Movie {m} (1999)::Drama|Comedy\n"
                                                for m in range(1, 30)))
    return buf.getvalue()


class Server:
    """Serves one body with Range support; `truncate_once` cuts the first response short."""

    def __init__(self, body):
        self.body = body
        self.truncate_once = False
        self.ranges = []
        self.honour_range = True
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.endswith(".md5"):
                    text = hashlib.md5(outer.body).hexdigest() + "  ml-1m.zip\n"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text.encode())
                    return
                start = 0
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                if rng and outer.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.body) - 1}/{len(outer.body)}")
                else:
                    self.send_response(200)
                body = outer.body[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.truncate_once:
                    outer.truncate_once = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets/movielens/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server(make_zip())
    yield s
    s.close()


def md5(b):
    return hashlib.md5(b).hexdigest()


def test_good_checksum_unzips_and_returns_the_folder(server, tmp_path, capsys):
    path = fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5=md5(server.body))
    assert path == os.path.join(tmp_path, "ml-1m")
    assert "100.0%" in capsys.readouterr().err  # the progress bar reached the end
    d = fedrecon.load_movielens(path)
    assert (len(d), d.users, d.items) == (39 * 29, 39, 29)
    assert not os.path.exists(os.path.join(tmp_path, "ml-1m.zip"))
    # Already there: no second request.
    n = len(server.ranges)
    assert fedrecon.fetch("ml-1m", tmp_path, base_url=server.url) == path
    assert len(server.ranges) == n


def test_bad_checksum_is_refused_and_deleted(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5="0" * 32, progress=False)
    assert os.listdir(tmp_path) == []
    # The pinned ML-1M checksum is GroupLens's, which the generated zip does not have.
    with pytest.raises(DownloadError, match="c4d9eecfca2ab87c1945afe126590906"):
        fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, progress=False)


def test_truncated_download_is_kept_and_resumed(server, tmp_path):
    server.truncate_once = True
    with pytest.raises(DownloadError, match="truncated at .* run again to resume"):
        fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5=md5(server.body), progress=False)
    part = os.path.join(tmp_path, "ml-1m.zip.part")
    assert 0 < os.path.getsize(part) < len(server.body)
    have = os.path.getsize(part)
    path = fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5=md5(server.body), progress=False)
    assert server.ranges[-1] == f"bytes={have}-"
    assert os.path.isfile(os.path.join(path, "ratings.dat"))
    assert not os.path.exists(part)


def test_a_server_ignoring_the_range_restarts_cleanly(server, tmp_path):
    server.truncate_once = True
    server.honour_range = False
    with pytest.raises(DownloadError, match="truncated"):
        fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5=md5(server.body), progress=False)
    path = fedrecon.fetch("ml-1m", tmp_path, base_url=server.url, md5=md5(server.body), progress=False)
    assert os.path.isfile(os.path.join(path, "ratings.dat"))


def test_published_md5_file_is_used_without_a_pinned_checksum(tmp_path, monkeypatch):
    s = Server(make_zip())
    try:
        monkeypatch.setitem(fedrecon.DATASETS["ml-1m"], "md5", None)
        path = fedrecon.fetch("ml-1m", tmp_path, base_url=s.url, progress=False)
        assert os.path.isfile(os.path.join(path, "ratings.dat"))
        assert any(r is None for r in s.ranges)
    finally:
        s.close()


def test_unknown_dataset_and_unreachable_server(tmp_path):
    with pytest.raises(DownloadError, match="unknown dataset 'ml-2m'"):
        fedrecon.fetch("ml-2m", tmp_path)
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        fedrecon.fetch("ml-100k", tmp_path, base_url="http://127.0.0.1:9/", progress=False, timeout=5)


def test_checksums_are_the_command_lines():
    """The Python table and `fedrecon data fetch`'s (host-sim/src/data/fetch.rs) pin the same
    MD5 for every release."""
    import re

    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "host-sim", "src", "data",
                            "fetch.rs")).read()
    rust = dict(re.findall(r'name: "(ml-[0-9a-z]+)",\s*zip: "[^"]+",\s*md5: Some\("([0-9a-f]{32})"\)',
                           src))
    assert set(rust) == set(fedrecon.DATASETS), rust
    for name, spec in fedrecon.DATASETS.items():
        assert spec["md5"] == rust[name], name
