"""Downloads against a local HTTP server: resume, restart, checksums, zip-slip, fetch, CLI."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from devise_utils import cli
from devise_utils.data.awa2 import read_awa2
from devise_utils.data.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    extract_zip,
    fetch,
)

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
MAX_REQUESTS = 20


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range unless told not to; can drop once mid-body."""

    def log_message(self, *args) -> None:
        pass

    def _reply(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.server.log.append({"path": self.path, "range": self.headers.get("Range"),
                                "status": code})
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        drop, self.server.drop_after = self.server.drop_after, None
        if drop is not None:  # send part of the body, then close the connection
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        if len(srv.log) >= MAX_REQUESTS:
            return self._reply(503, {"Content-Length": "0"})
        body = srv.files.get(self.path)
        if body is None:
            return self._reply(404, {"Content-Length": "0"})
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return self._reply(416, {"Content-Range": f"bytes */{len(body)}",
                                         "Content-Length": "0"})
            return self._reply(206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}",
                                     "Content-Length": str(len(body) - start)}, body[start:])
        self._reply(200, {"Content-Length": str(len(body))}, body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.log, srv.drop_after, srv.ignore_range = {"/f.bin": PAYLOAD}, [], None, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _get(dest: Path, srv, **kw) -> Path:
    return download(srv.url + "/f.bin", dest, progress=False, chunk=16_384, timeout=10, **kw)


def test_download_verifies_records_and_is_not_repeated(server, tmp_path):
    dest = tmp_path / "sub" / "f.bin"
    assert _get(dest, server, sha256=PAYLOAD_SHA.upper(), size=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert (tmp_path / "sub" / "f.bin.sha256").read_text().split() == [PAYLOAD_SHA, "f.bin"]
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    assert [r["status"] for r in server.log] == [200]
    _get(dest, server, sha256=PAYLOAD_SHA)  # completed and verified: no second request
    assert len(server.log) == 1


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "f.bin"
    server.drop_after = 100_000
    with pytest.raises(DownloadError) as e:
        _get(dest, server, sha256=PAYLOAD_SHA)
    msg = str(e.value)
    assert "/f.bin" in msg and "Re-run" in msg and str(dest) in msg
    part = tmp_path / "f.bin.part"
    assert part.stat().st_size == 100_000 and not dest.exists()
    _get(dest, server, sha256=PAYLOAD_SHA)
    assert server.log[-1] == {"path": "/f.bin", "range": "bytes=100000-", "status": 206}
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"garbage that must not survive" * 100)
    server.ignore_range = True
    _get(dest, server, sha256=PAYLOAD_SHA)
    assert server.log[-1]["range"] == "bytes=2900-" and server.log[-1]["status"] == 200
    assert dest.read_bytes() == PAYLOAD


def test_whole_part_file_is_finished_on_416(server, tmp_path):
    """Killed between the last byte and the rename: the next run just verifies."""
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    _get(dest, server, sha256=PAYLOAD_SHA)
    assert server.log[-1]["status"] == 416 and dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("kw", [{"sha256": "0" * 64}, {"size": len(PAYLOAD) + 1}])
def test_mismatch_sets_the_file_aside(server, tmp_path, kw):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as e:
        _get(dest, server, **kw)
    assert str(dest) in str(e.value)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    if "sha256" in kw:
        assert isinstance(e.value, ChecksumError)
        assert (tmp_path / "f.bin.corrupt").read_bytes() == PAYLOAD
        assert "f.bin.corrupt" in str(e.value) and PAYLOAD_SHA in str(e.value)


def test_bad_file_placed_by_hand_is_not_used(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"not it")
    with pytest.raises(ChecksumError, match="moved to"):
        _get(dest, server, sha256=PAYLOAD_SHA)
    assert not dest.exists() and (tmp_path / "f.bin.corrupt").read_bytes() == b"not it"
    assert server.log == []
    _get(dest, server, sha256=PAYLOAD_SHA)  # re-run: downloads the right bytes
    assert dest.read_bytes() == PAYLOAD


def test_network_errors_name_the_url_and_the_fix(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        download(server.url + "/missing.zip", tmp_path / "m.zip", progress=False)
    assert "/missing.zip" in str(e.value) and "by hand" in str(e.value)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}/x.zip.*place the file at"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)


def _zip_bytes(entries: dict[str | zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/devise-evil.txt", "a/../../evil.txt",
                                 "a\\..\\..\\evil.txt", _symlink("link")])
def test_zip_slip_is_rejected_and_nothing_written(tmp_path, bad):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_bytes({"ok/fine.txt": b"fine", bad: b"/etc/passwd"}))
    target = tmp_path / "data" / "out"
    with pytest.raises(UnsafeArchiveError, match="bad.zip"):
        extract_zip(archive, target)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.zip"]
    assert not Path("/tmp/devise-evil.txt").exists()


def test_damaged_archive_leaves_no_half_tree(tmp_path):
    data = bytearray(_zip_bytes({"top/a.txt": b"A" * 1000, "top/b.txt": b"B" * 1000}))
    data[data.index(b"B" * 100) + 10] ^= 0xFF  # bad CRC in the second member
    archive = tmp_path / "d.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="damaged"):
        extract_zip(archive, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip"]


def test_extract_zip_renames_into_place(tmp_path):
    archive = tmp_path / "g.zip"
    archive.write_bytes(_zip_bytes({"top/a.txt": b"A", "top/sub/b.txt": b"B", "v.vec": b"1 1"}))
    assert extract_zip(archive, tmp_path / "t") == tmp_path / "t"
    assert (tmp_path / "t" / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["top", "v.vec"]
    with pytest.raises(DownloadError, match="already exist"):
        extract_zip(archive, tmp_path / "t")


@pytest.fixture(scope="module")
def awa2_zip() -> bytes:
    """A tiny archive in AwA2's layout (Animals_with_Attributes2/...)."""
    root = "Animals_with_Attributes2/"
    classes = ["antelope", "grizzly+bear", "dolphin"]
    entries = {
        root + "classes.txt": "".join(f"{i}\t{c}\n" for i, c in enumerate(classes, 1)).encode(),
        root + "trainclasses.txt": b"antelope\ngrizzly+bear\n",
        root + "testclasses.txt": b"dolphin\n",
    }
    for k, c in enumerate(classes):
        for n in range(2):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (40 * k, 90, 20 * n)).save(buf, "JPEG")
            entries[f"{root}JPEGImages/{c}/{c}_1000{n}.jpg"] = buf.getvalue()
    return _zip_bytes(entries)


def test_fetch_awa2_gives_a_readable_dataset(server, tmp_path, awa2_zip):
    server.files["/AwA2-data.zip"] = awa2_zip
    url = server.url + "/AwA2-data.zip"
    sha = hashlib.sha256(awa2_zip).hexdigest()
    root = fetch("awa2", tmp_path / "data", url=url, sha256=sha, progress=False)
    assert root == tmp_path / "data" / "Animals_with_Attributes2"
    ds = read_awa2(root)
    assert ds.test_classes == ["dolphin"] and ds.n_images == 6
    assert not (tmp_path / "data" / "AwA2-data.zip").exists()  # no --keep-zip
    assert (tmp_path / "data" / "AwA2-data.zip.sha256").read_text().startswith(sha)
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []
    assert fetch("awa2", tmp_path / "data", url=url, progress=False) == root
    assert len(server.log) == 1  # already there: not fetched again


def test_fetch_fasttext_bin_picks_the_subword_model(server, tmp_path):
    server.files["/ft.zip"] = _zip_bytes({"wiki-news-300d-1M-subword.bin": b"model"})
    got = fetch("fasttext", tmp_path, url=server.url + "/ft.zip", bin=True, keep_zip=True,
                progress=False)
    assert got == tmp_path / "wiki-news-300d-1M-subword.bin" and got.read_bytes() == b"model"
    assert (tmp_path / "wiki-news-300d-1M-subword.bin.zip").is_file()
    with pytest.raises(ValueError, match="--bin applies only"):
        fetch("awa2", tmp_path, bin=True)


def test_fetch_wrong_archive_says_so(server, tmp_path):
    server.files["/other.zip"] = _zip_bytes({"something_else.vec": b"1 1\na 1\n"})
    with pytest.raises(DownloadError, match="holds no wiki-news-300d-1M.vec.*--url"):
        fetch("fasttext", tmp_path, url=server.url + "/other.zip", progress=False)


def test_cli_download_awa2_end_to_end(server, tmp_path, awa2_zip, capsys, monkeypatch):
    server.files["/AwA2-data.zip"] = awa2_zip
    argv = ["download", "awa2", "--url", server.url + "/AwA2-data.zip",
            "--data-dir", str(tmp_path), "--keep-zip"]
    assert cli.main(argv) == 0
    root = tmp_path / "Animals_with_Attributes2"
    assert capsys.readouterr().out.strip() == str(root)
    assert read_awa2(root).n_images == 6 and (tmp_path / "AwA2-data.zip").is_file()
    bad = ["download", "fasttext", "--url", server.url + "/nope.zip", "--data-dir",
           str(tmp_path / "ft"), "--quiet"]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: downloading") and "HTTP 404" in err
    assert cli.main(["download", "awa2", "--url", server.url + "/AwA2-data.zip", "--sha256", "xyz",
                 "--data-dir", str(tmp_path / "n")]) == 2
    assert "64 hex digits" in capsys.readouterr().err
