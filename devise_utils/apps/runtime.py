"""Running an exported ONNX model with onnxruntime alone (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from devise_utils.model.predict import as_batch


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU InferenceSession (``threads`` intra-op threads; 1 = one phone core)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_embed(path: str | Path, images: np.ndarray | Sequence[str | Path], threads: int = 1,
               batch_size: int = 32) -> np.ndarray:
    """Raw embeddings from an ONNX file (fp32 or int8) of preprocessed images or image paths.

    Paths are read a batch at a time at the size the graph was exported for.
    :func:`quantized_zero_shot` uses it to measure what int8 costs in zero-shot accuracy.
    """
    sess = onnx_session(path, threads)
    size = sess.get_inputs()[0].shape[-1]
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        out.append(sess.run(None, {INPUT: batch if hasattr(batch, "shape")
                                   else as_batch(batch, size)})[0])
    if not out:
        raise ValueError("no images to embed")
    return np.concatenate(out)


INPUT, OUTPUT = "image", "embedding"
