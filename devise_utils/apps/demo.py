"""A static web page that runs the exported DeViSE model in the browser, offline.

:func:`write_demo` writes a folder that any static server can serve (``python -m
http.server``, GitHub Pages, a phone's local server): the page (``index.html``,
``demo.js``), the int8 ONNX model from :func:`~devise_utils.apps.export.export_checkpoint`,
onnxruntime-web's WASM runtime, a vocabulary and the class vectors (float16, unit rows),
and a small gallery (embeddings computed here with the same int8 model, plus thumbnails).
The page embeds a photo, then does by cosine what ``search`` does in Python: its top tags
(nearest vocabulary words), its zero-shot label among an editable class list, and text
-> nearest gallery photos.

onnxruntime-web comes from the npm registry, pinned by ``web/package.json`` and
``web/package-lock.json``; ``npm ci --prefix web`` fills ``web/node_modules``, from which
the writer copies the two files the page needs (the WASM bundle and its ``.wasm``). The
lockfile sits outside the Python package so that ``node_modules`` (~150 MB) never lands
in the package tree, the wheel or the linters' paths.

The page reproduces :func:`~devise_utils.model.predict.image_transform` exactly: Pillow's
bilinear resample (the same fixed-point arithmetic) rather than a canvas resize, whose
filter differs from Pillow's, then torchvision's centre crop and ImageNet normalisation
in float32. :func:`page_results` is the Python side of that contract (the tests compare
the two). One difference remains: browsers apply a photo's EXIF orientation, Pillow's
``Image.open`` does not.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from devise_utils.apps.export import export_checkpoint
from devise_utils.apps.runtime import onnx_embed
from devise_utils.apps.text import STOP_WORDS, vocabulary
from devise_utils.core.config import ROOT, config_from_meta
from devise_utils.core.files import read_json, write_json
from devise_utils.data.awa2 import dataset_root, image_files, spread_sample
from devise_utils.data.vectors import WordVectors, load_vectors, normalize
from devise_utils.model.backbones import load_checkpoint_meta

#: The page's own files (index.html, demo.js), shipped inside the package.
PAGE_DIR = Path(__file__).with_name("demo_page")
#: Where ``package.json``/``package-lock.json`` pin onnxruntime-web (``npm ci --prefix web``).
WEB_DIR = ROOT / "web"
#: onnxruntime-web's WASM-only bundle (the Emscripten glue inlined) and its binary; the
#: bundle is renamed to ``.js`` so that servers that do not know ``.mjs`` still serve it as
#: JavaScript (module scripts need a JavaScript MIME type).
ORT_FILES = {"ort.wasm.bundle.min.mjs": "ort.wasm.bundle.min.js",
             "ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm"}
MODEL = "model.int8.onnx"
FORMAT = 1


def ort_dist(node_modules: str | Path | None = None) -> Path:
    """onnxruntime-web's ``dist`` folder, checked to hold :data:`ORT_FILES`."""
    base = Path(node_modules) if node_modules else WEB_DIR / "node_modules"
    dist = base / "onnxruntime-web" / "dist"
    missing = [f for f in ORT_FILES if not (dist / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web not found in {base} (missing {', '.join(missing)}); run "
            f"`npm ci --prefix {WEB_DIR}` (installs the version web/package-lock.json pins) "
            "or pass --node-modules DIR")
    return dist


def write_f16(path: Path, rows: np.ndarray) -> str:
    """Unit rows as little-endian float16 (half the bytes; cosine ranks barely move)."""
    np.ascontiguousarray(normalize(rows), dtype="<f2").tofile(path)
    return path.name


def read_f16(path: str | Path, dim: int) -> np.ndarray:
    """Rows written by :func:`write_f16`, back to unit float32 (what the page computes)."""
    return normalize(np.fromfile(path, dtype="<f2").astype(np.float32).reshape(-1, dim))


def vocabulary_table(vectors: str | Path, size: int, classes: Sequence[str] = ()
                     ) -> tuple[list[str], np.ndarray, WordVectors]:
    """The tag-clean words among the ``size`` most frequent of ``vectors`` (the file's
    first lines), their unit vectors, and the loaded table (which also holds ``classes``)."""
    wv = load_vectors(vectors, words=list(classes), top_n=size)
    first = set(wv.words[:size])  # the file's first lines; class words follow them
    words, vecs = vocabulary(wv)
    keep = [i for i, w in enumerate(words) if w in first]
    return [words[i] for i in keep], vecs[keep], wv


def _thumbnails(paths: Sequence[str], out: Path, size: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            name = f"{out.name}/{i:03d}.jpg"
            im.save(out.parent / name, quality=85)
        names.append(name)
    return names


def _export(ckpt: str | Path, out: Path, images: str | None) -> dict[str, Any]:
    """The int8 ONNX model and its sidecar (paths made relative to the folder)."""
    with tempfile.TemporaryDirectory(prefix="devise-demo-") as tmp:
        info = export_checkpoint(ckpt, tmp, int8=True, images=images, method="devise")
        shutil.copyfile(info["onnx_int8"], out / MODEL)
    # file names only: the folder is published, the paths of this machine are not
    info = {**info, "onnx_int8": MODEL, "formats": ["onnx-int8"],
            "checkpoint": Path(info["checkpoint"]).name,
            "vectors": Path(info["vectors"]).name if info.get("vectors") else None}
    info.pop("onnx_fp32", None)
    write_json(out / "export.json", info)
    return info


def write_demo(model: str | Path, out: str | Path, *, vectors: str | Path | None = None,
               vocab_size: int = 20000, classes: Sequence[str] | None = None,
               photos: str | Path | None = None, n_gallery: int = 48, thumb: int = 160,
               node_modules: str | Path | None = None) -> dict[str, Any]:
    """Write the static demo for Stage II checkpoint ``model`` into ``out``.

    ``vectors``: the word space (default the checkpoint's file; must have the model's
    dimension). ``classes``: the page's default class list (default the checkpoint's seen
    and unseen classes). ``photos``: a folder for the gallery and the int8 calibration
    (default the checkpoint's dataset). Returns ``demo.json``'s content.
    """
    for name, value in (("vocab_size", vocab_size), ("n_gallery", n_gallery), ("thumb", thumb)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    dist = ort_dist(node_modules)  # fail before any work
    meta = load_checkpoint_meta(model)
    vectors = Path(vectors or meta["vectors"])
    classes = list(classes or [*meta.get("classes", []), *meta.get("unseen", [])])
    words, vecs, wv = vocabulary_table(vectors, vocab_size, classes)
    if wv.dim != meta["dim"]:
        raise ValueError(f"{vectors} holds {wv.dim}-d vectors but {model} outputs "
                         f"{meta['dim']}-d; pass the --vectors file it was trained with")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ("index.html", "demo.js"):
        shutil.copyfile(PAGE_DIR / f, out / f)
    (out / "ort").mkdir(exist_ok=True)
    for src, dst in ORT_FILES.items():
        shutil.copyfile(dist / src, out / "ort" / dst)

    photo_dir = photos if photos is not None else _dataset_images(meta)
    info = _export(model, out, str(photo_dir))
    gallery = spread_sample(image_files(photo_dir), n_gallery)
    emb = onnx_embed(out / MODEL, gallery)
    if (out / "gallery").exists():
        shutil.rmtree(out / "gallery")
    thumbs = _thumbnails(gallery, out / "gallery", thumb)
    (out / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    spec = {
        "format": FORMAT, "model": MODEL, "input": info["input"], "output": info["output"],
        "dim": int(meta["dim"]), "backbone": meta["backbone"],
        "vocab": {"words": "vocab.txt", "vectors": write_f16(out / "vocab.f16", vecs),
                  "n": len(words), "source": vectors.name, "top_n": vocab_size},
        "classes": {"names": classes,
                    "vectors": write_f16(out / "classes.f16", wv.lookup(classes))},
        "gallery": {"vectors": write_f16(out / "gallery.f16", emb),
                    "items": [{"thumb": t, "label": Path(p).parent.name}
                              for t, p in zip(thumbs, gallery)]},
        "stop_words": sorted(STOP_WORDS),
    }
    write_json(out / "demo.json", spec)
    return spec


def _dataset_images(meta: dict[str, Any]) -> Path:
    try:
        return dataset_root(config_from_meta(meta["config"])) / "JPEGImages"
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise FileNotFoundError(f"the checkpoint's dataset is not available ({e}); pass "
                                "--photos DIR (gallery and int8 calibration photos)") from e


def folder_size(folder: str | Path) -> int:
    """Bytes under ``folder`` (what a phone downloads, before HTTP compression)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# --- the page's results, computed in Python --------------------------------------------------

def page_results(demo_dir: str | Path, photo: str | Path, k: int = 5) -> dict[str, Any]:
    """What the page shows for ``photo``: top-``k`` tags and the zero-shot ranking of the
    default class list, from the folder's own files (onnxruntime CPU, the same int8 model,
    float16 tables), with Python's preprocessing. The raw embedding is returned too."""
    demo_dir = Path(demo_dir)
    spec = read_json(demo_dir / "demo.json")
    emb = onnx_embed(demo_dir / spec["model"], [str(photo)])[0]
    e = normalize(emb)
    words = (demo_dir / spec["vocab"]["words"]).read_text(encoding="utf-8").split()
    tag_scores = read_f16(demo_dir / spec["vocab"]["vectors"], spec["dim"]) @ e
    top = np.argsort(-tag_scores, kind="stable")[:k]
    names = spec["classes"]["names"]
    cls_scores = read_f16(demo_dir / spec["classes"]["vectors"], spec["dim"]) @ e
    order = np.argsort(-cls_scores, kind="stable")
    return {"tags": [(words[i], float(tag_scores[i])) for i in top],
            "labels": [(names[i], float(cls_scores[i])) for i in order],
            "embedding": emb.astype(float).tolist()}


# --- command line ----------------------------------------------------------------------------

def _split_classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in re.split(r"[,\n]+", text) if c.strip()] if text else None


def command(args) -> int:
    """``python -m devise_utils demo`` (its parser is in :mod:`devise_utils.cli`)."""
    spec = write_demo(args.model, args.out, vectors=args.vectors, vocab_size=args.vocab_size,
                      classes=_split_classes(args.classes), photos=args.photos,
                      n_gallery=args.n_gallery, node_modules=args.node_modules)
    print(f"demo written: {args.out} ({folder_size(args.out) / 1e6:.1f} MB; "
          f"{spec['vocab']['n']} words, {len(spec['classes']['names'])} classes, "
          f"{len(spec['gallery']['items'])} gallery photos)")
    print(f"serve it: python -m http.server -d {args.out} 8000  ->  http://localhost:8000/")
    return 0
