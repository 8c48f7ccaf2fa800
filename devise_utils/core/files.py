"""Atomic file writes: a crash mid-write never leaves a half-written artifact behind; and
a file lock, so two processes sharing one runs/ folder never do the same work at once."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name beside the target (same file system, so the rename is atomic); not
    # mkstemp, whose 0600 mode would stick to reports and caches.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise OSError(e.errno, f"disk full while writing {path}: {kept}; free some space "
                                   "and run the same command again") from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write pretty JSON (NumPy scalars and paths become plain values)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_plain)
    return atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cached(path: str | Path, source: str | Path, load: Callable[[Path], T],
           compute: Callable[[], T], save: Callable[[T, Path], Any], log=print) -> T:
    """A derived artifact at ``path``: loaded while newer than ``source``, else computed and
    saved. A cache that cannot be read (truncated, corrupt) is never trusted: it is said so
    and rebuilt."""
    path = Path(path)
    if path.is_file() and path.stat().st_mtime >= Path(source).stat().st_mtime:
        try:
            return load(path)
        except Exception as e:  # any damage: rebuild instead of failing or trusting it
            log(f"cache {path} is damaged ({type(e).__name__}: {e}); rebuilding it")
    value = compute()
    save(value, path)
    return value


def _plain(o: Any) -> Any:
    if hasattr(o, "to_dict") and hasattr(o, "columns"):  # a DataFrame: one dict per row
        return o.to_dict(orient="records")
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def existing_file(path: str | Path, what: str, fix: str = "check the path") -> Path:
    """``path`` as a Path if it is a file; otherwise an error naming it, what it is, the fix."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} does not exist; {fix}")
    return p


@contextmanager
def file_lock(path: str | Path, log: Callable[..., None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the block; another process asking waits.

    An ``fcntl.flock`` lock belongs to the open file, so the kernel drops it when its holder
    exits in any way (SIGKILL included): a crash never leaves a stale lock behind. The file
    holds the holder's pid while locked. Without ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield Path(path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                holder = path.read_text(encoding="utf-8").strip() or "another process"
                log(f"waiting for process {holder}, which holds {path}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield path
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def locked_once(lock: str | Path, find: Callable[[], T | None], make: Callable[[], T],
                log: Callable[..., None] | None = None) -> T:
    """``find()``'s result if there is one, else ``make()`` under ``lock``: ``find`` is asked
    again once the lock is held, so what another process made meanwhile is used, not redone."""
    if (hit := find()) is not None:
        return hit
    with file_lock(lock, log):
        if (hit := find()) is not None:
            return hit
        return make()
