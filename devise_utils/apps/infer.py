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

import numpy as np

from devise_utils.apps.index import EmbeddingIndex, IndexMismatchError
from devise_utils.apps.runtime import onnx_session
from devise_utils.core.files import read_json
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

    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings of a preprocessed float32 (N, 3, S, S) batch."""
        return self.run(np.ascontiguousarray(x, dtype=np.float32))

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64
                    ) -> tuple[np.ndarray, list[str]]:
        """Unit embeddings of the readable images and their paths; ValueError if none."""
        embs, kept = [], []
        for x, ok in read_batches([str(p) for p in paths], self.image_size, batch_size):
            embs.append(self.embed_arrays(x))
            kept.extend(ok)
        if not embs:
            raise ValueError(f"none of {len(paths)} image(s) could be read "
                             f"(first: {paths[0] if len(paths) else '-'})")
        return normalize(np.concatenate(embs)), kept


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
