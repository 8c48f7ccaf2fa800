"""Data sets for bench_faiss.py, written to a work folder in chunks and reused by later runs.

``real``  1,045,000 300-d vectors derived from the 27,500 real tiny-objects-50 photos
          (``../shared/data/tiny-objects-50``). 1,375 photos (5 %, seeded) are held out for
          queries; each of the other 26,125 photos gets 8 random augmentations
          (RandomResizedCrop to 64 px, scale 0.35-1, ratio 3/4-4/3; horizontal flip p=0.5;
          ColorJitter 0.3/0.3/0.3/0.05) put through the frozen ImageNet SqueezeNet 1.1
          convolutional body (``../shared/weights``, standard ImageNet normalisation) at the
          photos' own 64 px, giving a 512x3x3 ReLU feature map. Each map yields 5 vectors: its
          global average pool and the average pools of its four 2x2 corner windows (a crop in
          feature space). 26,125 x 8 x 5 = 1,045,000 512-d vectors, projected onto their top
          300 principal components (mean and covariance of all of them), scaled to unit length.
          Queries: one fresh augmentation of each of 1,000 of the held-out photos, global pool
          only, through the same projection. No query photo is in the base.
``synthetic``  N clustered unit vectors (default 10M x 300), labelled synthetic: 1,000 random
          unit centres, each point a centre plus isotropic Gaussian noise of norm ~0.6 (as
          bench_search.py's clustered set), re-normalised; queries drawn the same way. Made
          chunk by chunk from per-chunk seeds, so the set is never in memory as a whole.

Every set is a folder holding ``base.f32`` (raw little-endian float32, C order),
``queries.npy``, ``truth.npy`` (exact top-k ids by cosine, streamed over the base in chunks)
and ``info.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = "data/tiny-objects-50/JPEGImages"
WEIGHTS = "weights/squeezenet1_1-imagenet-onnxzoo.pth"
CHUNK = 200_000


class RawVectors:
    """A (n, d) float32 file read in row ranges with plain reads (no mmap, so no RSS growth)."""

    def __init__(self, path: str | Path, dim: int):
        self.path, self.dim = Path(path), dim
        self.n = self.path.stat().st_size // (4 * dim)
        self.shape = (self.n, dim)

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(start * 4 * self.dim)
            x = np.fromfile(f, np.float32, (stop - start) * self.dim)
        return x.reshape(-1, self.dim)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def exact_truth(base: RawVectors, queries: np.ndarray, k: int = 10, chunk: int = CHUNK
                ) -> np.ndarray:
    """Exact top-k ids by inner product (unit rows: cosine), streamed over the base."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for s in range(0, base.n, chunk):
        sim = queries @ base.read(s, min(s + chunk, base.n)).T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sim, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + s], 1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i


def _finish(folder: Path, queries: np.ndarray, info: dict, k: int) -> dict:
    base = RawVectors(folder / "base.f32", queries.shape[1])
    t = time.perf_counter()
    np.save(folder / "truth.npy", exact_truth(base, queries, k))
    np.save(folder / "queries.npy", queries)
    info = {**info, "n": base.n, "dim": base.dim, "queries": len(queries), "k": k,
            "truth_s": round(time.perf_counter() - t, 1)}
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --- synthetic -------------------------------------------------------------------------------

def synthetic_chunk(i: int, m: int, centres: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, i])
    x = rng.standard_normal((m, centres.shape[1]), dtype=np.float32)
    x *= noise / np.sqrt(centres.shape[1])
    x += centres[rng.integers(0, len(centres), m)]
    return unit(x)


def make_synthetic(folder: Path, n: int, dim: int = 300, n_queries: int = 1000, k: int = 10,
                   clusters: int = 1000, noise: float = 0.6, seed: int = 0) -> dict:
    """Clustered unit vectors written chunk by chunk; queries drawn the same way."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = unit(np.random.default_rng(seed).standard_normal((clusters, dim), np.float32))
    with open(folder / "base.f32", "wb") as f:
        for i, s in enumerate(range(0, n, CHUNK)):
            synthetic_chunk(i, min(CHUNK, n - s), centres, noise, seed).tofile(f)
    queries = synthetic_chunk(10**6, n_queries, centres, noise, seed)
    info = {"set": "synthetic", "how": f"{clusters} random unit centres + N(0, {noise}^2/d) "
            "noise per coordinate, re-normalised (labelled synthetic)"}
    return _finish(folder, queries, info, k)


# --- real-derived ----------------------------------------------------------------------------

def _photos(root: Path) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {root}: the real set needs ../shared ({PHOTOS})")
    return files


def _load_uint8(paths: list[Path]):
    import torch
    from PIL import Image

    arr = np.empty((len(paths), 3, 64, 64), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            arr[i] = np.asarray(im.convert("RGB").resize((64, 64))).transpose(2, 0, 1)
    return torch.from_numpy(arr)


def _features(body, imgs, aug, seed: int, batch: int = 256):
    """(n, 512, 3, 3) float16 feature maps of one random augmentation of each image."""
    import torch

    torch.manual_seed(seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for s in range(0, len(imgs), batch):
            x = torch.stack([aug(im) for im in imgs[s:s + batch]]).float() / 255
            out.append(body((x - mean) / std).half().numpy())
    return np.concatenate(out)


def _views(maps: np.ndarray) -> np.ndarray:
    """Global pool and the four 2x2 corner-window pools of (n, c, 3, 3) maps: (n, 5, c)."""
    m = maps.astype(np.float32)
    pools = [m.mean((2, 3))] + [m[:, :, i:i + 2, j:j + 2].mean((2, 3))
                                for i in (0, 1) for j in (0, 1)]
    return np.stack(pools, 1)


def make_real(folder: Path, n_aug: int = 8, n_queries: int = 1000, dim: int = 300, k: int = 10,
              seed: int = 0, shared: Path = SHARED, limit: int | None = None, log=print) -> dict:
    import torch
    import torchvision
    import torchvision.transforms.v2 as T

    torch.set_num_threads(2)
    folder.mkdir(parents=True, exist_ok=True)
    paths = _photos(shared / PHOTOS)[:limit]
    rng = np.random.default_rng(seed)
    held = np.zeros(len(paths), bool)
    held[rng.choice(len(paths), len(paths) // 20, replace=False)] = True
    base_p = [p for p, h in zip(paths, held) if not h]
    query_p = [paths[i] for i in rng.choice(np.flatnonzero(held), n_queries, replace=False)]
    net = torchvision.models.squeezenet1_1()
    net.load_state_dict(torch.load(shared / WEIGHTS, weights_only=True))
    body = net.features.eval()
    aug = T.Compose([T.RandomResizedCrop(64, scale=(0.35, 1.0), antialias=True),
                     T.RandomHorizontalFlip(), T.ColorJitter(0.3, 0.3, 0.3, 0.05)])
    imgs = _load_uint8(base_p)
    raw = np.lib.format.open_memmap(folder / "feats512.npy", "w+", np.float16,
                                    (n_aug, len(base_p), 5, 512))
    t = time.perf_counter()
    for a in range(n_aug):
        raw[a] = _views(_features(body, imgs, aug, seed * 1000 + a)).astype(np.float16)
        log(f"  augmentation {a + 1}/{n_aug}: {time.perf_counter() - t:.0f} s")
    q512 = _views(_features(body, _load_uint8(query_p), aug, seed * 1000 + 999))[:, 0]
    flat = raw.reshape(-1, 512)
    mean, comps = _pca(flat, dim)
    with open(folder / "base.f32", "wb") as f:
        for s in range(0, len(flat), CHUNK):
            unit((flat[s:s + CHUNK].astype(np.float32) - mean) @ comps).tofile(f)
    queries = unit((q512 - mean) @ comps)
    del raw, flat
    (folder / "feats512.npy").unlink()
    info = {"set": "real-derived", "photos": len(paths), "base_photos": len(base_p),
            "augmentations": n_aug, "views_per_augmentation": 5, "feature_s":
            round(time.perf_counter() - t), "how": __doc__.split("``real``")[1].split(
                "``synthetic``")[0].strip()}
    return _finish(folder, queries, info, k)


def _pca(x: np.ndarray, dim: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-``dim`` principal axes (columns) of the rows of x, in chunks."""
    d = x.shape[1]
    s1, s2 = np.zeros(d), np.zeros((d, d))
    for s in range(0, len(x), chunk):
        c = x[s:s + chunk].astype(np.float64)
        s1 += c.sum(0)
        s2 += c.T @ c
    mean = s1 / len(x)
    w, v = np.linalg.eigh(s2 / len(x) - np.outer(mean, mean))
    return mean.astype(np.float32), v[:, ::-1][:, :dim].astype(np.float32).copy()
