"""``python -m devise_utils``: one entry point, one subcommand per job.

Every parser is built here from light modules only (no torch, no fastai), so ``--help``
is instant; a subcommand's handler is named as ``"module:function"`` and imported only
when that command runs, so the command modules themselves import at the top.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from devise_utils.apps.index import DEFAULT_INDEX_DIR, EF_SEARCH, ENGINES, METHODS
from devise_utils.core.config import Config
from devise_utils.data.download import NAMES
from devise_utils.study.results import METHODS as ZSL_METHODS

#: What ``--model`` takes in the commands users run (devise_utils.apps.infer.open_model).
MODEL_HELP = ("exported model (.onnx, fp32 or int8, with the export.json beside it; runs "
              "without PyTorch) or Stage II checkpoint (stage2.pth)")
#: Export formats (checked again by the exporter, which names the choices on a typo).
EXPORT_FORMATS = ("onnx", "executorch", "torchscript")


def _download(sub) -> None:
    p = sub.add_parser(
        "download", help="download AwA2 or the fastText vectors (resumable, verified)",
        description="Download and unpack AwA2 or fastText wiki-news-300d-1M. Interrupted "
                    "downloads resume when re-run; files are verified before use.")
    p.add_argument("name", choices=NAMES, help="what to download")
    p.add_argument("--bin", action="store_true",
                   help="fastText: the subword .bin model (vectors for any word) instead of .vec")
    p.add_argument("--data-dir", default=None, help="where to put it (default: Config().data_dir)")
    p.add_argument("--url", default=None, help="download from this URL instead (a mirror)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    p.add_argument("--keep-zip", action="store_true", help="keep the archive after unpacking")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func="devise_utils.data.download:command")


def _prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="generate the built-in dataset / build the resized image cache",
        description="Read and validate a dataset in AwA2 layout (generating the built-in one "
                    "on first use) and cache its images as RGB JPEGs with a short side of "
                    "--size, so training never decodes large photos.")
    p.add_argument("--dataset", default="builtin", help="builtin | awa2 | PATH (AwA2 layout)")
    p.add_argument("--data-dir", default=Config.data_dir, help="where datasets and the cache live")
    p.add_argument("--size", type=int, default=Config.cache_size, help="short side of the cache")
    p.add_argument("--split", default="standard", choices=["standard", "proposed"])
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 2))
    p.set_defaults(func="devise_utils.data.prepare:command")


def _run(sub) -> None:
    p = sub.add_parser("run", help="run the whole study (all notebooks) into reports/",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func="devise_utils.pipeline:command")


def _train(sub) -> None:
    p = sub.add_parser(
        "train", help="train one stage, on one process or several (accelerate launch, torchrun)",
        description="Train Stage I or II of the configuration the parameters name and write "
                    "its checkpoint where the pipeline and the notebooks find it. Under "
                    "`accelerate launch` or `torchrun` every process trains on its shard of "
                    "the data and rank 0 writes the files (docs/distributed.md).")
    p.add_argument("--stage", type=int, choices=(1, 2), required=True,
                   help="1: the classifier; 2: the embedding (needs Stage I)")
    p.add_argument("--dataset", default="builtin",
                   help="builtin (default), awa2, or a folder in AwA2 layout")
    p.add_argument("--vectors", help="word vectors (.vec/.txt/.bin); default: the dataset's")
    p.add_argument("--weights", help="backbone weights: none, imagenet, or a local file")
    p.add_argument("--data-dir", help="where datasets and caches live (default: data/)")
    p.add_argument("--runs-dir", help="model/artifact cache (default: runs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other parameter of devise_utils/core/config.py, as for the "
                        "pipeline (values are read as JSON, else as text)")
    p.add_argument("--force", action="store_true", help="train again even if already trained")
    p.set_defaults(func="devise_utils.launch:command")


def _index_and_search(sub) -> None:
    p = sub.add_parser("index", help="embed a folder of photos and build a search index")
    p.add_argument("photos", help="folder of images (searched recursively)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", default=str(DEFAULT_INDEX_DIR), help="index folder to write")
    p.add_argument("--vectors", help="word-vector file for text queries "
                   "(default: the model's)")
    p.add_argument("--engine", choices=ENGINES, default="nmslib",
                   help="nmslib (default): HNSW in RAM, for up to a few hundred thousand "
                   "photos; faiss: IVF-PQ on disk, memory-mapped, built in bounded memory, "
                   "for millions")
    p.add_argument("--method", choices=METHODS, default="hnsw", help="nmslib engine: hnsw "
                   "(default) or exact (brute force)")
    p.add_argument("--target-recall", type=float, default=0.95, help="faiss engine: nprobe "
                   "is tuned to the smallest reaching this recall@10 on gallery queries")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func="devise_utils.apps.commands:index")

    p = sub.add_parser("search", help="text -> image or image -> image search")
    p.add_argument("query", nargs="?", help='words, e.g. "a striped animal"')
    p.add_argument("--image", help="find images like this one instead")
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="index folder")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--model", help="model for --image (default: the index's; it or an "
                   "export of its checkpoint): " + MODEL_HELP)
    p.add_argument("--vectors", help="word vectors (default: the index's; must match it)")
    p.add_argument("--ef-search", type=int, help=f"nmslib index: HNSW beam width (default "
                   f"{EF_SEARCH})")
    p.add_argument("--nprobe", type=int, help="faiss index: inverted lists scanned per query "
                   "(default: the one tuned when it was built)")
    p.set_defaults(func="devise_utils.apps.commands:search")


#: Zero-shot methods a command can use: the run's recommended one, or one by key.
ZSL_CHOICES = ("recommended", *ZSL_METHODS)


def _tag_and_label(sub) -> None:
    p = sub.add_parser("tag", help="nearest vocabulary words of images (tags)",
                       description="Tags: the nearest words of the whole vocabulary. "
                       "The vocabulary index is built on first use of a vector file "
                       "and reused (runs/vocab/<sha256>-...).")
    p.add_argument("images", nargs="+", help="image file(s) or folder(s)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--vectors", help="vocabulary vectors (default: the model's)")
    p.add_argument("--top-n", type=int, default=None,
                   help="only the N most frequent words (default: every word of the file)")
    p.add_argument("-k", type=int, default=10, help="tags per image")
    p.add_argument("--method", choices=METHODS, default="hnsw",
                   help="hnsw (default): the vocabulary index; exact: scan every word")
    p.add_argument("--zsl-method", choices=ZSL_CHOICES, default="recommended",
                   help="zero-shot method scoring the words (default: the one the export "
                   "chose; devise: the vocabulary index, the fastest)")
    p.add_argument("--vocab-index", help="vocabulary index folder (default: runs/vocab/"
                   "<sha256 of --vectors>-...); built there if absent")
    p.add_argument("--rebuild-vocab", action="store_true", help="rebuild the vocabulary index")
    p.add_argument("--nprobe", type=int, help="IVF lists scanned per query (default: the one "
                   "tuned when the vocabulary index was built)")
    p.set_defaults(func="devise_utils.apps.commands:tag")

    p = sub.add_parser("label", help="zero-shot labels for a folder of new images")
    p.add_argument("folder", help="image folder (or one image; subfolders, links followed)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help=MODEL_HELP)
    src.add_argument("--weights", help="no run at all: pretrained ImageNet weights (a "
                     "SqueezeNet 1.1 state dict, or 'imagenet'); labels by the network's own "
                     "1,000 classes and WordNet (ConSE over the 1K basis)")
    p.add_argument("--classes", required=True, help='comma-separated names, e.g. '
                   '"zebra,horse"; with --weights, WordNet nouns or wnids (n02084071)')
    p.add_argument("--vectors", help="word vectors (default: the model's)")
    p.add_argument("-k", type=int, default=3, help="labels shown per image")
    p.add_argument("--method", choices=ZSL_CHOICES, default="recommended",
                   help="zero-shot method (default: the one the export chose, its run's best "
                   "held-out seen score; a .pth: its run's, if the run is here; else DeViSE)")
    p.add_argument("--class-synsets", help="class<TAB>WordNet id lines for names whose first "
                   "noun sense is wrong (methods with WordNet semantics)")
    p.add_argument("--transductive", action="store_true", help="gallery mode: move each "
                   "class's row onto this folder's photos (k-means) before labelling; labels "
                   "then depend on the whole folder")
    p.add_argument("--csv", metavar="OUT", help="also write the labels to this CSV file "
                   "(its folder must exist): header path,label,score then, for -k > 1, "
                   "label_2,score_2,...,label_k,score_k; one row per image, best label first")
    p.set_defaults(func="devise_utils.apps.commands:label")


def _export(sub) -> None:
    p = sub.add_parser("export", help="export a Stage II model for mobile "
                       "(ExecuTorch .pte, ONNX; fp32 and int8)")
    p.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=["onnx"],
                   help="one or more of: onnx (default; onnxruntime), executorch (.pte, "
                   "XNNPACK; ExecuTorch's mobile runtime), torchscript (.ptl, deprecated "
                   "PyTorch Mobile lite interpreter)")
    p.add_argument("--int8", action="store_true", help="also write int8 models: static int8 "
                   "body, head with fp32 activations (ONNX) or dynamic int8 (.pte); "
                   "calibrated on every other sample image")
    p.add_argument("--images", help="calibration/parity images, seen classes only (default: "
                   "the checkpoint's training split)")
    p.add_argument("--n-images", type=int, default=64, help="sample images to use")
    p.add_argument("--method", choices=ZSL_CHOICES, default="recommended",
                   help="the zero-shot method label uses (default: the run's best held-out "
                   "seen score); other than devise, its feature model and head.npz are "
                   "written beside the Stage II model")
    p.set_defaults(func="devise_utils.apps.export:command")


def _demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="write a static web page that runs the int8 model in the browser",
        description="Write a folder any static server can serve (offline): the page, the "
                    "int8 ONNX model, onnxruntime-web (from web/node_modules: npm ci --prefix "
                    "web), a vocabulary, the class vectors and a small gallery. Photo -> tags "
                    "and a zero-shot label; words -> gallery photos; all on the device.")
    p.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    p.add_argument("--out", required=True, help="output folder (served as static files)")
    p.add_argument("--vectors", help="word vectors for tags and class names (default: the "
                   "checkpoint's file; same dimension as the model)")
    p.add_argument("--vocab-size", type=int, default=20000, help="tags come from this many "
                   "most frequent words of the vector file (default 20000)")
    p.add_argument("--classes", help="the page's class list, comma-separated (default: the "
                   "checkpoint's seen and unseen classes); the page lets the user edit it")
    p.add_argument("--photos", help="gallery and int8 calibration photos (default: the "
                   "checkpoint's dataset)")
    p.add_argument("--n-gallery", type=int, default=48, help="gallery photos to ship")
    p.add_argument("--node-modules", help="node_modules holding onnxruntime-web "
                   "(default: web/node_modules)")
    p.set_defaults(func="devise_utils.apps.demo:command")


#: The subcommands, in the order --help lists them.
COMMANDS = (_download, _prepare, _run, _train, _index_and_search, _tag_and_label, _export,
            _demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devise_utils",
        description="DeViSE-Mobile: deep visual-semantic embeddings on a mobile-sized network.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def handler(spec: str):
    """The function a ``"module:function"`` spec names (imported now, not at --help)."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(handler(args.func)(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, LookupError, RuntimeError) as e:
        # Bad input: one clear line naming the file and the fix, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
