"""What the command-line subcommands do (their parsers live in :mod:`devise_utils.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

from devise_utils.apps import vocab
from devise_utils.apps.export import EXPORT_ROWS, export_checkpoint
from devise_utils.apps.index import load_index
from devise_utils.apps.search import (
    build_image_index,
    embed_images,
    image_to_image,
    label_folder,
    load_model,
    text_to_image,
)
from devise_utils.apps.text import query_vectors
from devise_utils.core.files import existing_file
from devise_utils.data.awa2 import image_files
from devise_utils.data.vectors import load_vectors


def _print_hits(hits: list[tuple[str, float]]) -> None:
    for label, score in hits:
        print(f"{score:7.4f}  {label}")


def index(args) -> int:
    if args.engine == "faiss":
        if args.method == "exact":
            raise ValueError("--method exact is the nmslib engine's brute-force search; "
                             "drop --method or use --engine nmslib")
        index = build_image_index(args.model, args.photos, args.vectors, engine="faiss",
                                  out=args.out, batch_size=args.batch_size,
                                  target_recall=args.target_recall, log=_info)
        tuned = index.info["tuning"]
        print(f"indexed {len(index)} images (faiss ivfpq, {index.dim}-d, nprobe "
              f"{index.nprobe}: recall@{tuned['k']} {tuned['recall']:.3f} on gallery "
              f"queries) -> {args.out}")
        return 0
    index = build_image_index(args.model, args.photos, args.vectors, method=args.method,
                              batch_size=args.batch_size)
    index.save(args.out)
    print(f"indexed {len(index)} images ({index.method}, {index.dim}-d) -> {args.out}")
    return 0


def search(args) -> int:
    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH (not both, not neither)")
    index = load_index(args.index, model=args.model, ef_search=args.ef_search,
                       nprobe=args.nprobe)
    if args.query is not None:
        vec_path = args.vectors or index.meta["vectors"]
        wv = query_vectors(existing_file(vec_path, "word-vector"), args.query)
        index.check_file("vectors", vec_path, wv.source_sha256)
        hits = text_to_image(index, args.query, wv, args.k)
    else:
        model_path = args.model or index.meta["model"]
        index.check_file("model", model_path)  # it may have been retrained since indexing
        model, meta = load_model(model_path)
        hits = image_to_image(index, model, args.image, args.k)
    _print_hits(hits)
    return 0


def tag(args) -> int:

    paths = [p for img in args.images for p in image_files(img)]
    model, meta = load_model(args.model)
    words = vocab.open_index(args.vectors or meta["vectors"], folder=args.vocab_index,
                             top_n=args.top_n, rebuild=args.rebuild_vocab,
                             nprobe=args.nprobe, log=_info)
    emb, kept = embed_images(model, paths)
    for path, tags in zip(kept, vocab.tag_images(emb, words, args.k,
                                                 exact=args.method == "exact")):
        print(path)
        _print_hits(tags)
    return 0


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def label(args) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    model, meta = load_model(args.model)
    wv = load_vectors(args.vectors or meta["vectors"], words=classes)
    for path, ranked in label_folder(model, args.folder, classes, wv,
                                     args.k).items():
        print(path + "  " + "  ".join(f"{c} {s:.4f}" for c, s in ranked))
    return 0


def export(args) -> int:
    info = export_checkpoint(args.model, args.out, int8=args.int8, images=args.images,
                             n_images=args.n_images, formats=args.format)
    for _, key, cos_key in EXPORT_ROWS:
        if key in info:
            print(f"{key:12s} {Path(info[key]).stat().st_size / 1e6:7.2f} MB  "
                  f"cosine to PyTorch min {info[cos_key]['min_cosine']:.4f} "
                  f"mean {info[cos_key]['mean_cosine']:.4f}  {info[key]}")
    print("fp32 parity: min cosine "
          + ", ".join(f"{info[k]['min_cosine']:.5f} ({f})" for f, k in (
              ("onnx", "fp32"), ("executorch", "pte_fp32_parity"),
              ("torchscript", "torchscript_parity")) if k in info))
    return 0
