"""Fetch AwA2 and the fastText vectors: resumable, verified, safely unpacked.

The files are large (AwA2 is about 13 GB) and the links slow, so a download goes
to ``<dest>.part`` and resumes with an HTTP Range request after an interruption.
It gets its final name only after its size and sha256 check out, so a file with
the final name is always whole. Archives are checked entry by entry before
anything is written (no absolute paths, ``..`` or symlinks: zip-slip), unpacked
into a hidden folder and renamed into place, so a half-unpacked dataset never
looks done.

    python -m devise_utils download awa2
    python -m devise_utils download fasttext [--bin]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import stat
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from devise_utils.core.config import Config


class DownloadError(RuntimeError):
    """A download or unpack failed; the message names the URL or file and the fix."""


class ChecksumError(DownloadError):
    """The bytes are not the expected ones; the bad file was moved aside."""


class UnsafeArchiveError(DownloadError):
    """An archive entry would be written outside the target folder."""


@dataclass(frozen=True)
class Source:
    """Where a file comes from and what its archive unpacks to."""

    url: str
    archive: str                # file name the download is saved under
    unpacks_to: str             # the usable file/folder inside the archive
    size: int | None = None     # bytes of the archive, when known for certain
    sha256: str | None = None   # of the archive, when known for certain (never guessed)


_FASTTEXT = "https://dl.fbaipublicfiles.com/fasttext/vectors-english/"

#: Known sources. Sizes and checksums stay None until published values are known.
SOURCES: dict[str, Source] = {
    "awa2": Source("https://cvml.ista.ac.at/AwA2/AwA2-data.zip", "AwA2-data.zip",
                   "Animals_with_Attributes2"),
    "fasttext": Source(_FASTTEXT + "wiki-news-300d-1M.vec.zip", "wiki-news-300d-1M.vec.zip",
                       "wiki-news-300d-1M.vec"),
    "fasttext-bin": Source(_FASTTEXT + "wiki-news-300d-1M-subword.bin.zip",
                           "wiki-news-300d-1M-subword.bin.zip",
                           "wiki-news-300d-1M-subword.bin"),
}

#: Names the CLI accepts (``fasttext --bin`` selects ``fasttext-bin``).
NAMES = ("awa2", "fasttext")


def source(name: str, *, bin: bool = False) -> Source:
    """The registry entry for ``name`` (``bin`` picks fastText's subword model)."""
    if bin and name != "fasttext":
        raise ValueError(f"--bin applies only to 'fasttext', not {name!r}")
    key = "fasttext-bin" if bin else name
    if key not in SOURCES:
        raise ValueError(f"unknown download {name!r}; choose one of {', '.join(NAMES)}")
    return SOURCES[key]


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _check_hex(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    h = sha256.strip().lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return h


def _hasher_of(path: Path, chunk: int = 1 << 20):
    """A sha256 object fed with the file so far (resuming continues from it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _check_space(folder: Path, needed: int | None, what: str) -> None:
    if needed is None or needed <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"{folder} has {_gb(free)} free but {what} needs {_gb(needed)}; "
                            "free some space or pass --data-dir on a larger disk")


def _network_error(url: str, dest: Path, why: object, part: Path | None = None) -> DownloadError:
    kept = f" (the partial file {part} is kept)" if part is not None and part.exists() else ""
    return DownloadError(
        f"downloading {url} failed: {why}. Re-run the same command to resume{kept}, or "
        f"download {url} by hand (e.g. `wget -c` or `curl -C -`) and place the file at {dest}"
    )


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` -> (start, total); None where unknown."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = int(span.split("-")[0]) if span[:1].isdigit() else None
    return start, int(total) if total.isdigit() else None


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "devise-utils (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _accept(part: Path, dest: Path, digest: str, n: int, url: str,
            sha256: str | None, size: int | None) -> Path:
    """Give ``part`` its final name if it matches; else move it aside and raise."""
    wrong = []
    if size is not None and n != size:
        wrong.append(f"{n} bytes, expected {size}")
    if sha256 is not None and digest != sha256:
        wrong.append(f"sha256 {digest}, expected {sha256}")
    if wrong:
        bad = _sibling(dest, ".corrupt")
        os.replace(part, bad)
        _sibling(bad, ".sha256").write_text(f"{digest}  {bad.name}\n")
        raise ChecksumError(
            f"{dest} from {url} has {'; '.join(wrong)}. The bad file was moved to {bad} and "
            "is not used. Re-run to download it again; if the source changed on purpose, "
            f"check it and pass --sha256 {digest}"
        )
    _sibling(dest, ".sha256").write_text(f"{digest}  {dest.name}\n")
    os.replace(part, dest)  # atomic: the final name appears only for verified bytes
    return dest


def _verify_existing(dest: Path, sha256: str | None, size: int | None, url: str) -> Path:
    """A file already at ``dest`` is used only if it matches (placed by hand, or ours)."""
    record = _sibling(dest, ".sha256")
    recorded = record.read_text().split()[0] if record.is_file() and record.stat().st_size else None
    if (recorded is not None and (sha256 is None or recorded == sha256)
            and (size is None or dest.stat().st_size == size)):
        return dest  # verified when it was written; don't re-hash gigabytes
    digest = _hasher_of(dest).hexdigest()
    tmp = _sibling(dest, ".part")
    if tmp.exists():
        tmp.unlink()
    os.replace(dest, tmp)
    return _accept(tmp, dest, digest, tmp.stat().st_size, url, sha256, size)


def download(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True, chunk: int = 1 << 20, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part``; verified before it is renamed.

    ``size``/``sha256`` are the expected values when known; the server's
    Content-Length (or Content-Range total) is always checked, and the
    computed sha256 is written to ``dest.sha256``. A file already at ``dest``
    is not downloaded again.
    """
    dest = Path(dest)
    sha256 = _check_hex(sha256)
    if dest.exists():
        return _verify_existing(dest, sha256, size, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _sibling(dest, ".part")
    for _ in range(3):  # a restart (Range ignored or misanswered) takes one more request
        offset = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:  # nothing left to send: the .part may be whole
                total = _parse_content_range(e.headers.get("Content-Range"))[1]
                if total == offset:
                    return _accept(part, dest, _hasher_of(part).hexdigest(), offset, url,
                                   sha256, size)
                part.unlink()  # larger than the file: start over
                continue
            raise _network_error(url, dest, f"HTTP {e.code} {e.reason}", part) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
            raise _network_error(url, dest, getattr(e, "reason", e), part) from e
        with resp:
            status = resp.status or 200  # file:// URLs have no status
            if status == 206:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:  # not the bytes we asked for: start over
                    part.unlink()
                    continue
            else:
                start = 0  # 200: the server ignored Range, so the body is the whole file
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is not None and size is not None and total != size:
                raise DownloadError(f"{url} is {total} bytes but {dest} should be {size}; "
                                    "the source changed or the URL is wrong: check --url")
            _check_space(dest.parent, None if total is None else total - start, url)
            n, digest = _stream(resp, part, start, total, url, dest, progress, chunk)
        if total is not None and n != total:
            raise _network_error(url, dest, f"the connection closed after {n} of {total} bytes",
                                 part)
        return _accept(part, dest, digest, n, url, sha256, size)
    raise DownloadError(f"{url} kept answering Range requests with the wrong bytes; delete "
                        f"{part} and re-run, or download it by hand and place it at {dest}")


def _stream(resp, part: Path, start: int, total: int | None, url: str, dest: Path,
            progress: bool, chunk: int) -> tuple[int, str]:
    """Append the response to ``part`` from ``start``; returns (bytes in part, sha256)."""
    hasher = _hasher_of(part) if start else hashlib.sha256()
    got = start
    if progress:
        how = f"resuming at {_gb(start)}" if start else "downloading"
        print(f"{how} {url} -> {dest}", file=sys.stderr)
    with open(part, "ab" if start else "wb") as f, tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=dest.name, file=sys.stderr, disable=not progress or not sys.stderr.isatty(),
    ) as bar:
        try:
            while block := resp.read(chunk):
                f.write(block)
                hasher.update(block)
                got += len(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            f.flush()
            raise _network_error(url, dest, f"{e!r} after {got} bytes", part) from e
    return got, hasher.hexdigest()


def _check_members(zf: zipfile.ZipFile, archive: Path) -> list[str]:
    """Reject entries that could land outside the target; returns the top-level names."""
    tops = set()
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or name[1:2] == ":" or ".." in parts:
            raise UnsafeArchiveError(
                f"{archive}: entry {info.filename!r} would be written outside the target "
                "folder; nothing was unpacked. The archive is damaged or malicious: delete "
                "it and download it again from the official source")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(
                f"{archive}: entry {info.filename!r} is a symbolic link, which could point "
                "outside the target folder; nothing was unpacked. Delete the archive and "
                "download it again from the official source")
        if parts:
            tops.add(parts[0])
    return sorted(tops)


def extract_zip(archive: str | Path, target_dir: str | Path) -> Path:
    """Unpack ``archive`` into ``target_dir``; returns ``target_dir``.

    Every entry is checked before anything is written. The archive is unpacked
    into a hidden folder inside ``target_dir`` and each top-level entry is then
    renamed into place, so an interrupted run never leaves a half-tree under
    the final name (the hidden folder is cleared on the next run).
    """
    archive, target = Path(archive), Path(target_dir)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{archive} is not a readable zip archive ({e}); delete it and "
                            "re-run the download") from e
    with zf:
        tops = _check_members(zf, archive)
        target.mkdir(parents=True, exist_ok=True)
        clash = [t for t in tops if (target / t).exists()]
        if clash:
            raise DownloadError(f"{', '.join(str(target / t) for t in clash)} already exist(s); "
                                f"move or delete them to unpack {archive} again")
        _check_space(target, sum(i.file_size for i in zf.infolist()), f"unpacking {archive}")
        tmp = target / f".{archive.name}.unpacking"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
        try:
            zf.extractall(tmp)  # safe: every name was checked above
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # bad CRC, truncated, disk full
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError(f"unpacking {archive} into {target} failed ({e}); if the disk "
                                "is full free some space, else the archive is damaged: delete "
                                "it and re-run the download") from e
    for t in tops:
        os.replace(tmp / t, target / t)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(name: str, data_dir: str | Path, *, url: str | None = None, sha256: str | None = None,
          bin: bool = False, keep_zip: bool = False, progress: bool = True) -> Path:
    """Download and unpack a known source; returns the usable folder or file.

    ``url`` replaces the source (a mirror, a test server); the registry's size
    and sha256 describe the official file, so with ``url`` only ``sha256`` is
    checked. Nothing is fetched when the usable path already exists.
    """
    src = source(name, bin=bin)
    data_dir = Path(data_dir)
    final = data_dir / src.unpacks_to
    if final.exists():
        if progress:
            print(f"{final} already exists; nothing to do", file=sys.stderr)
        return final
    archive = data_dir / src.archive
    download(url or src.url, archive, sha256=sha256 or (None if url else src.sha256),
             size=None if url else src.size, progress=progress)
    if progress:
        print(f"unpacking {archive} into {data_dir}", file=sys.stderr)
    extract_zip(archive, data_dir)
    if not final.exists():
        raise DownloadError(f"{archive} was unpacked into {data_dir} but holds no "
                            f"{src.unpacks_to}; check that --url points at the right file")
    if not keep_zip:
        archive.unlink()
    return final


def command(args: argparse.Namespace) -> int:
    path = fetch(args.name, args.data_dir or Config().data_dir, url=args.url, sha256=args.sha256,
                 bin=args.bin, keep_zip=args.keep_zip, progress=not args.quiet)
    print(path)
    return 0
