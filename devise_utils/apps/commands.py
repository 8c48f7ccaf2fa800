"""What the index, search, tag and label subcommands do (parsers: :mod:`devise_utils.cli`).

None of them imports torch for an exported model (``--model model.onnx``): the model file's
suffix chooses onnxruntime or PyTorch (:func:`devise_utils.apps.infer.open_model`).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from devise_utils.apps import vocab
from devise_utils.apps.infer import basis_labeller, check_index, open_labeller, open_model
from devise_utils.apps.search import (
    build_image_index,
    image_to_image,
    label_folder,
    load_index,
    model_vectors,
    tag_folder,
    tag_with_head,
    text_to_image,
)
from devise_utils.apps.text import query_vectors
from devise_utils.core.files import atomic_write, existing_file
from devise_utils.data.images import image_files
from devise_utils.data.vectors import load_vectors


def _print_hits(hits: list[tuple[str, float]]) -> None:
    for label, score in hits:
        print(f"{score:7.4f}  {label}")


def index(args) -> int:
    model = open_model(args.model)
    if args.engine == "faiss":
        if args.method == "exact":
            raise ValueError("--method exact is the nmslib engine's brute-force search; "
                             "drop --method or use --engine nmslib")
        index = build_image_index(model, args.photos, args.vectors, engine="faiss",
                                  out=args.out, batch_size=args.batch_size,
                                  target_recall=args.target_recall, log=_info)
        tuned = index.info["tuning"]
        print(f"indexed {len(index)} images (faiss ivfpq, {index.dim}-d, nprobe "
              f"{index.nprobe}: recall@{tuned['k']} {tuned['recall']:.3f} on gallery "
              f"queries) -> {args.out}")
        return 0
    index = build_image_index(model, args.photos, args.vectors, method=args.method,
                              batch_size=args.batch_size)
    index.save(args.out)
    print(f"indexed {len(index)} images ({index.method}, {index.dim}-d) -> {args.out}")
    return 0


def search(args) -> int:
    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH (not both, not neither)")
    index = load_index(args.index, ef_search=args.ef_search, nprobe=args.nprobe)
    model = open_model(args.model) if args.model else None
    if model is not None:  # it may have been retrained since indexing
        check_index(model, index)
    if args.query is not None:
        vec_path = args.vectors or index.meta["vectors"]
        wv = query_vectors(existing_file(vec_path, "word-vector"), args.query)
        index.check_file("vectors", vec_path, wv.source_sha256)
        hits = text_to_image(index, args.query, wv, args.k)
    else:
        hits = image_to_image(index, model or open_model(index.meta["model"]), args.image,
                              args.k)
    _print_hits(hits)
    return 0


def tag(args) -> int:
    paths = [p for img in args.images for p in image_files(img)]
    model = open_labeller(args.model, args.zsl_method, log=_info)
    if (model.head is not None and model.head.rows_from in ("basis", "fixed")
            and args.zsl_method == "recommended"):
        why = ("rates classes by their WordNet synsets, which vocabulary words are not given"
               if model.head.rows_from == "basis" else "has rows for its run's classes only")
        _info(f"the recommended {model.head.method} {why}: tagging with devise")
        model = open_labeller(args.model, "devise", log=_info)
    if model.head is not None:
        _info("every vocabulary word scored through the head (exact; --zsl-method devise "
              "uses the vocabulary index)")
        vec = existing_file(args.vectors or model.vectors, "word-vector")
        for path, tags in tag_with_head(model, paths, vec, args.k, top_n=args.top_n):
            print(path)
            _print_hits(tags)
        return 0
    words = vocab.open_index(model_vectors(model, args.vectors), folder=args.vocab_index,
                             top_n=args.top_n, rebuild=args.rebuild_vocab,
                             nprobe=args.nprobe, log=_info)
    for path, tags in tag_folder(model, paths, words, args.k, exact=args.method == "exact"):
        print(path)
        _print_hits(tags)
    return 0


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def label(args) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.csv:
        _check_csv_out(args.csv)  # before the model loads: a typo should not cost that wait
    if args.weights:
        model = basis_labeller(args.weights, log=_info)
        _info(f"zero-shot method: conse_1k (the network's 1,000 ImageNet classes, kernel "
              f"{model.head.kernel}, T={model.head.conse_top}; no run)")
    else:
        model = open_labeller(args.model, args.method, log=_info)
    head = model.head
    if head is None:
        wv = load_vectors(model_vectors(model, args.vectors), words=classes)
    elif head.rows_from == "basis" and "words" not in head.kernel.split("+"):
        wv = None  # WordNet alone rates the classes
    else:
        from devise_utils.study.head import words_needed

        vec = existing_file(args.vectors or model.vectors, "word-vector")
        basis = head.rows_from == "basis"  # a wnid name has no vector; its lemmas may
        wv = load_vectors(vec, words=[] if basis else classes, optional=words_needed(
            head, classes, args.class_synsets), hash_file=False)
    if args.transductive:
        _info("transductive: each class's row refined on these photos (k-means)")
    labels = label_folder(model, args.folder, classes, wv, args.k, args.class_synsets,
                          args.transductive)
    for path, ranked in labels.items():
        print(path + "  " + "  ".join(f"{c} {s:.4f}" for c, s in ranked))
    if args.csv:
        _info(f"wrote {write_labels_csv(args.csv, labels)}")
    return 0


def _check_csv_out(out: str | Path) -> None:
    """Fail on an unwritable ``--csv`` target now, not after every image is labelled."""
    out = Path(out)
    if out.is_dir():
        raise FileNotFoundError(f"--csv {out} is a folder; give a file path, e.g. {out}/labels.csv")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--csv {out}: folder {out.parent} does not exist; create it "
                                "or write the CSV elsewhere")


def write_labels_csv(path: str | Path, ranked: dict[str, list[tuple[str, float]]]) -> Path:
    """Write ``path,label,score[,label_2,score_2,...]``, one row per image, best label first.

    A spreadsheet or script reads this more safely than the printed lines (paths may hold
    spaces or commas); written atomically so an interrupted run leaves no half a table. There
    are as many label columns as the longest ranking (``-k``, or fewer classes); a shorter
    ranking leaves its last cells empty.
    """
    k = max((len(r) for r in ranked.values()), default=1) or 1
    header = ["path", "label", "score"]
    header += [f"{name}_{i}" for i in range(2, k + 1) for name in ("label", "score")]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(header)
            for image, labels in ranked.items():
                cells = [cell for c, s in labels for cell in (c, repr(float(s)))]
                out.writerow([image, *cells, *[""] * (2 * k - len(cells))])

    return atomic_write(path, write)
