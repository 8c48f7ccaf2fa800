"""On-disk pieces of a large gallery index: unit vectors (float16) and labels, read lazily.

Millions of photos do not fit in RAM as float32 vectors plus a Python list of paths
(10M x 300 float32 is 12 GB; the paths another ~1 GB). Both are written once, in
chunks, and read back through memory maps, so a query touches only the rows it
needs. Sequential reads during a build use plain file reads: a memory map would
count the whole file in the process's resident memory.

Even random rows through a map add far more than their own pages: on a read fault Linux
maps the neighbouring pages already in the page cache too (fault-around; since large page
cache folios, the whole folio, up to 2 MB for a freshly written file: 0.7-2 MB a row was
measured on a 10M gallery, and neither ``MADV_RANDOM`` nor ``MADV_NOHUGEPAGE`` stops it).
So the 160,000 rows of one re-rank pass while tuning a 10M index (200 queries x depth
800) mapped most of its 6 GB vector file: a 7.66 GB peak RSS for a 0.8 GB build.
Those pages are clean and the kernel can drop them, yet they count in RSS;
:attr:`VectorStore.release_every` bounds them where that matters (the build),
:meth:`VectorStore.release` drops them.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

VECTORS = "vectors.f16"
ITEMS = "items.txt"
OFFSETS = "items.idx"


class VectorStore:
    """(n, dim) float16 unit rows in a headerless file; shape comes from the sidecar.

    ``release_every`` (rows): if set, :meth:`rows` gathers that many rows at a time and
    unmaps the pages after each batch, so the map holds at most ~2 MB a row of one batch.
    Off by default: a long-lived search keeps its pages mapped (no re-faults).
    """

    def __init__(self, path: str | Path, n: int, dim: int, *, release_every: int | None = None):
        self.path, self.n, self.dim = Path(path), int(n), int(dim)
        size = self.path.stat().st_size
        if size != self.n * self.dim * 2:
            raise ValueError(f"{self.path} holds {size} bytes, not {self.n} x {self.dim} "
                             "float16 rows: the index folder is damaged, rebuild it")
        self.release_every = release_every
        self._mmap: mmap.mmap | None = None
        self._map: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.dim

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop as float32, by a plain read (for sequential passes)."""
        stop = min(stop, self.n)
        with open(self.path, "rb") as f:
            f.seek(start * self.dim * 2)
            x = np.fromfile(f, np.float16, (stop - start) * self.dim)
        return x.reshape(-1, self.dim).astype(np.float32)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, self.n, size):
            yield s, self.read(s, s + size)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows by id (memory-mapped: only their pages are read), float32, ids' shape + (dim,)."""
        if self._map is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._map = np.frombuffer(self._mmap, np.float16).reshape(self.n, self.dim)
        ids = np.asarray(ids)
        step = self.release_every
        if not step or ids.size <= step:
            out = self._map[ids].astype(np.float32)
            if step:
                self.release()
            return out
        flat = ids.ravel()
        out = np.empty((flat.size, self.dim), np.float32)
        for s in range(0, flat.size, step):
            out[s:s + step] = self._map[flat[s:s + step]]
            self.release()
        return out.reshape(*ids.shape, self.dim)

    def release(self) -> None:
        """Unmap the pages :meth:`rows` touched; they stay in the page cache (no re-read)."""
        if self._mmap is not None and hasattr(self._mmap, "madvise"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


class Labels(Sequence):
    """Labels of a saved index, decoded one at a time from ``items.txt`` via ``items.idx``."""

    def __init__(self, folder: str | Path, n: int):
        folder = Path(folder)
        self._idx = np.memmap(folder / OFFSETS, np.int64, "r")
        if len(self._idx) != n + 1:
            raise ValueError(f"{folder / OFFSETS} holds {len(self._idx) - 1} labels, not {n}: "
                             "the index folder is damaged, rebuild it")
        self._txt = np.memmap(folder / ITEMS, np.uint8, "r")

    def __len__(self) -> int:
        return len(self._idx) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"label {i} out of range for {len(self)} items")
        return bytes(self._txt[self._idx[i]:self._idx[i + 1] - 1]).decode("utf-8")


def write_gallery(chunks: Iterable[tuple[np.ndarray, Sequence[str]]], folder: str | Path
                  ) -> tuple[int, int]:
    """Stream (vectors, labels) chunks to the vector store and label files; return (n, dim).

    Vectors are unit-normalised and stored as float16: half the disk of float32, and
    cosine errors of ~1e-3, below the gaps between neighbours that matter.
    """
    folder = Path(folder)
    n, dim, offset = 0, None, 0
    with open(folder / VECTORS, "wb") as fv, open(folder / ITEMS, "wb") as ft, \
            open(folder / OFFSETS, "wb") as fo:
        np.zeros(1, np.int64).tofile(fo)
        for vecs, labels in chunks:
            vecs = np.atleast_2d(np.asarray(vecs, np.float32))
            if len(labels) != len(vecs):
                raise ValueError(f"{len(labels)} labels for {len(vecs)} vectors")
            if dim is None:
                dim = vecs.shape[1]
            elif vecs.shape[1] != dim:
                raise ValueError(f"a chunk of {vecs.shape[1]}-d vectors after {dim}-d ones")
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            (vecs / np.maximum(norms, 1e-12)).astype(np.float16).tofile(fv)
            raw = [str(lab).encode("utf-8") + b"\n" for lab in labels]
            if any(b"\n" in r[:-1] for r in raw):
                raise ValueError("a label contains a newline; labels are one per line")
            ft.write(b"".join(raw))
            ends = offset + np.cumsum([len(r) for r in raw], dtype=np.int64)
            ends.tofile(fo)
            offset = int(ends[-1]) if len(ends) else offset
            n += len(vecs)
    if n == 0:
        raise ValueError("an index needs at least one vector, got none")
    return n, dim
