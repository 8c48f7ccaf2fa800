"""The one-time image cache: every image decoded once, made RGB and shrunk, so training doesn't.

AwA2's photos are large JPEGs in every colour mode (grayscale, CMYK, palette,
RGBA, 16-bit); decoding them each epoch would dominate a CPU run. The cache
mirrors ``<class>/<file>.jpg`` with RGB JPEGs whose short side is at most
``short_side`` (never upsampled). Files already cached (and newer than their
source) are skipped, broken files are reported and skipped instead of
stopping the run, and every write is atomic (temporary file + rename).
The cache lives under ``cfg.data_dir/cache/``, never beside the dataset,
so a read-only dataset folder (``../shared``) is never written.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, ImageOps

from devise_utils.core.config import Config
from devise_utils.core.errors import DataError
from devise_utils.core.files import atomic_write
from devise_utils.data.awa2 import SPLITS, dataset_root, read_awa2, split_table

JPEG_QUALITY = 90


def _cache_name(src: Path) -> str:
    """``x.jpg`` stays ``x.jpg``; ``x.png`` becomes ``x.png.jpg`` (no clash with ``x.jpg``)."""
    return src.name if src.suffix.lower() in (".jpg", ".jpeg") else src.name + ".jpg"


def _is_fresh(src: Path, dst: Path) -> bool:
    try:
        return dst.stat().st_mtime >= src.stat().st_mtime
    except OSError:
        return False


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit scaled (not clipped), transparency over white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float32)
        top = float(a.max()) if a.size else 0.0
        if top > 255:  # 16-bit data: rescale instead of clipping everything to white
            a = a * (255 / (65535 if top <= 65535 else top))
        img = Image.fromarray(a.clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _convert(src: Path, dst: Path, short_side: int) -> str | None:
    """Cache one image; return why it was skipped, or None when it is cached."""
    try:
        with Image.open(src) as img:
            w, h = img.size
            if min(w, h) > short_side:  # let libjpeg decode at 1/2, 1/4, 1/8 when it can
                img.draft(None, (w * short_side // min(w, h), h * short_side // min(w, h)))
            img.load()  # raises on truncated or corrupt data
            img = to_rgb(ImageOps.exif_transpose(img))
        w, h = img.size
        if min(w, h) > short_side:
            scale = short_side / min(w, h)
            size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
            img = img.resize(size, Image.Resampling.LANCZOS)
        atomic_write(dst, lambda tmp: img.save(tmp, format="JPEG", quality=JPEG_QUALITY))
        return None
    except Exception as e:  # one bad file must never stop the run
        return f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")


def prepare_cache(table: pd.DataFrame, cache_dir: str | Path, short_side: int = 256,
                  workers: int = 2) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Cache every image in ``table`` (column ``path``) as RGB JPEG under ``cache_dir``.

    Returns the table restricted to readable images, with ``path`` pointing at
    the cached copy and ``source`` at the original, and the ``(path, reason)``
    of every skipped file (also written to ``cache_dir/skipped.tsv``).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    srcs = [Path(p) for p in table["path"]]
    dsts = [cache_dir / s.parent.name / _cache_name(s) for s in srcs]
    todo = [i for i, (s, d) in enumerate(zip(srcs, dsts)) if not _is_fresh(s, d)]
    reasons: dict[int, str] = {}
    if todo:
        # PIL releases the GIL while decoding, resizing and encoding: threads suffice.
        truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                results = pool.map(lambda i: _convert(srcs[i], dsts[i], short_side), todo)
                reasons = {i: r for i, r in zip(todo, results) if r is not None}
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    skipped = [(str(srcs[i]), reasons[i]) for i in sorted(reasons)]
    tsv = cache_dir / "skipped.tsv"
    atomic_write(tsv, lambda tmp: tmp.write_text(
        "path\treason\n" + "".join(f"{p}\t{r}\n" for p, r in skipped), encoding="utf-8"))
    keep = np.array([i not in reasons for i in range(len(srcs))], dtype=bool)
    out = table.copy()
    out["source"] = [str(s) for s in srcs]
    out["path"] = [str(d) for d in dsts]
    return out[keep].reset_index(drop=True), skipped


def cache_dir_for(cfg: Config, root: str | Path) -> Path:
    """``cfg.data_dir/cache/<dataset>-<hash of its absolute path>-<size>``: one per dataset copy."""
    root = Path(root).resolve()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return Path(cfg.data_dir) / "cache" / f"{root.name}-{tag}-{cfg.cache_size}"


def _prepare(cfg: Config, workers: int | None) -> tuple[pd.DataFrame, list, Path]:

    root = dataset_root(cfg)
    t = split_table(read_awa2(root), cfg.split, cfg.valid_pct, cfg.seed, cfg.max_per_class,
                    cfg.test_seen_pct)
    classes = list(dict.fromkeys(t["cls"]))
    cache = cache_dir_for(cfg, root)
    t, skipped = prepare_cache(t, cache, cfg.cache_size, workers or min(4, os.cpu_count() or 2))
    lost = [c for c in classes if not (t["cls"] == c).any()]
    if lost:
        raise DataError(f"every photo of class(es) {', '.join(lost)} under {root / 'JPEGImages'} "
                        f"is unreadable (reasons in {cache / 'skipped.tsv'}); replace the files "
                        "or remove the class(es) from classes.txt and the split files")
    return t, skipped, cache


def prepared_table(cfg: Config, workers: int | None = None) -> pd.DataFrame:
    """The split table of ``cfg``'s dataset with ``path`` pointing into the image cache."""
    t, skipped, cache = _prepare(cfg, workers)
    if skipped:
        print(f"prepare: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][0]} "
              f"({skipped[0][1]}); list in {cache / 'skipped.tsv'}")
    return t


def command(args) -> int:
    cfg = Config(dataset=args.dataset, data_dir=args.data_dir, cache_size=args.size,
                 split=args.split)
    t, skipped, cache = _prepare(cfg, args.workers)
    print(f"cache: {cache}")
    for split in SPLITS:
        part = t[t["split"] == split]
        print(f"{split:>6}: {len(part):6d} images, {part['cls'].nunique():3d} classes")
    print(f"skipped: {len(skipped)} file(s)" + (f" (listed in {cache / 'skipped.tsv'})"
                                                 if skipped else ""))
    for path, reason in skipped:
        print(f"  {path}: {reason}")
    return 0
