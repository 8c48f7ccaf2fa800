"""Running an exported ONNX model with onnxruntime alone (no torch).

:func:`check_onnx` reads the graph's declared input size and output dimension (no
inference) and refuses a model that does not fit the index or vectors it is used with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from devise_utils.core.errors import DataError
from devise_utils.model.preprocess import as_batch


class ExportMismatchError(DataError):
    """An exported model that is not an image embedder or does not fit what it is used with."""


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU InferenceSession (``threads`` intra-op threads; 1 = a phone's single core,
    0 = one per core). Idle pool threads sleep instead of spinning: the CPU may be shared."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cores()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # no optimiser notices on stderr
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_embed(path: str | Path, images: np.ndarray | Sequence[str | Path], threads: int = 1,
               batch_size: int = 32) -> np.ndarray:
    """Raw embeddings from an ONNX file (fp32 or int8) of preprocessed images or image paths.

    Paths are read a batch at a time at the size the graph was exported for.
    :func:`quantized_zero_shot` uses it to measure what int8 costs in zero-shot accuracy.
    """
    sess = onnx_session(path, threads)
    size = sess.get_inputs()[0].shape[-1]
    if hasattr(images, "shape") and isinstance(size, int) and tuple(images.shape[1:]) != (
            3, size, size):
        raise ExportMismatchError(f"{path} takes (N, 3, {size}, {size}) images, got an array "
                                  f"of shape {tuple(images.shape)}; resize the images to {size} "
                                  "px (model.predict.as_batch) or pass image paths")
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        out.append(sess.run(None, {INPUT: batch if hasattr(batch, "shape")
                                   else as_batch(batch, size)})[0])
    if not out:
        raise ValueError("no images to embed")
    return np.concatenate(out)


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


INPUT, OUTPUT = "image", "embedding"


def onnx_shapes(path: str | Path) -> tuple[list[int | str], list[int | str]]:
    """The declared input and output shapes of an ONNX model (a dynamic axis by its name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {path} does not exist; export one with "
                                "`python -m devise_utils export CKPT --out DIR`")
    try:
        sess = onnx_session(path)
    except Exception as e:  # noqa: BLE001 (onnxruntime's InvalidProtobuf, Fail, ...)
        raise ExportMismatchError(f"{path} is not an ONNX model onnxruntime can load "
                                  f"({type(e).__name__}); export it again with "
                                  "`python -m devise_utils export CKPT`") from None
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise ExportMismatchError(f"{path} has {len(ins)} input(s) and {len(outs)} output(s); "
                                  "a DeViSE embedder has one image input and one embedding")
    return list(ins[0].shape), list(outs[0].shape)


def check_onnx(path: str | Path, *, image_size: int | None = None, dim: int | None = None,
               against: str = "") -> tuple[int | None, int | None]:
    """Refuse an .onnx embedder whose input is not (N, 3, image_size, image_size) or whose
    output is not (N, dim); ``against`` names where those sizes come from. Returns the
    model's declared (image size, output dimension), None where dynamic."""
    inp, out = onnx_shapes(path)
    src = f" by {against}" if against else ""
    if len(inp) != 4 or inp[1] != 3 or len(out) != 2:
        raise ExportMismatchError(f"{path} maps input {inp} to output {out}, not (N, 3, H, W) "
                                  "images to (N, dim) embeddings; export the Stage II model")
    size = inp[-1] if isinstance(inp[-1], int) else None
    odim = out[-1] if isinstance(out[-1], int) else None
    if image_size is not None and size is not None and size != image_size:
        raise ExportMismatchError(
            f"{path} takes {size}x{size} images but {image_size}x{image_size} are expected{src}; "
            f"export the checkpoint at {image_size} px, or rebuild with this model")
    if dim is not None and odim is not None and odim != dim:
        raise ExportMismatchError(
            f"{path} outputs {odim}-d embeddings but {dim}-d are expected{src}; use the model "
            "exported from the checkpoint trained on those vectors, or rebuild with this model")
    return size, odim
