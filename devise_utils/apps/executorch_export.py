"""ExecuTorch export (.pte, XNNPACK delegate; fp32 and PT2E int8) and its Python runtime."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.exir import to_edge_transform_and_lower
from executorch.extension.pybindings.portable_lib import (
    _threadpool_get_thread_count,
    _unsafe_reset_threadpool,
)
from executorch.runtime import Runtime
from torch import nn
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from devise_utils.apps.mobile_graph import (
    fixed_affine_class,
    kept_bn_as_affine,
    mobile_ready,
    quiet,
)
from devise_utils.core.files import atomic_write
from devise_utils.model.predict import as_batch

EXECUTORCH_VERSION = "1.5.1"  # the pinned release (requirements.in)


def executorch_error() -> str | None:
    """Why ExecuTorch export/run cannot work here (None when it can)."""
    try:
        with quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: F401
                XnnpackPartitioner,
            )
            from executorch.exir import to_edge_transform_and_lower  # noqa: F401
            from executorch.runtime import Runtime

            if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
                return "this ExecuTorch runtime has no XNNPACK backend"
    except Exception as e:  # ImportError, or a native library that does not load
        return (f"ExecuTorch is not usable here ({type(e).__name__}: {e}); "
                f"pip install executorch=={EXECUTORCH_VERSION}")
    return None


def require_executorch() -> None:
    err = executorch_error()
    if err:
        raise RuntimeError(err)


def export_executorch(model, path: str | Path, image_size: int | None = None,
                      calibration: np.ndarray | None = None, *, dynamic_head: bool = True
                      ) -> Path:
    """Write :func:`mobile_ready` ``model`` as an ExecuTorch ``.pte`` lowered to XNNPACK
    (batch 1). With ``calibration`` images: int8 (PT2E quantisation, XNNPACK quantizer,
    symmetric per-channel weights), convolutions static (ranges observed on those images)
    and, with ``dynamic_head``, the Linear layers dynamically quantised (int8 weights, each
    input's own range at run time), for the reason :func:`~devise_utils.apps.onnx_export.
    quantize_int8` keeps the ONNX head in fp32 activations: static head ranges depended on
    the calibration draw (tiny-objects-50 valid seen top-1 44.5, 41.5, 41.9, 37.1 % over
    four training-split draws, fp32 44.9 %); dynamic, 44.3-44.7 %, same size and speed."""
    require_executorch()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = kept_bn_as_affine(mobile_ready(model))
    image_size = image_size or model.image_size
    example = (torch.zeros(1, 3, image_size, image_size),)
    with quiet(), torch.no_grad():
        if calibration is not None:
            if len(calibration) == 0:
                raise ValueError("int8 calibration needs sample images; pass some "
                                 "(e.g. --images DIR)")

            quantizer = XNNPACKQuantizer().set_global(
                get_symmetric_quantization_config(is_per_channel=True))
            quantizer.set_module_type(fixed_affine_class(), None)  # fp32, as a BatchNorm
            if dynamic_head:
                quantizer.set_module_type(nn.Linear, get_symmetric_quantization_config(
                    is_per_channel=True, is_dynamic=True))
            prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
            for x in calibration:  # the graph is exported for batch 1
                prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
            model = convert_pt2e(prepared)
        program = to_edge_transform_and_lower(torch.export.export(model, example),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()

    atomic_write(path, lambda p: Path(p).write_bytes(program.buffer))
    return path


def pte_method(path: str | Path):

    return Runtime.get().load_program(Path(path)).load_method("forward")


def pte_embed(path: str | Path, images: np.ndarray | Sequence[str | Path]) -> np.ndarray:
    """Raw embeddings from a ``.pte`` file (fp32 or int8) run by ExecuTorch's runtime,
    of preprocessed images (N, 3, S, S) or image paths, one image at a time."""
    require_executorch()
    method = pte_method(path)
    size = method.metadata.input_tensor_meta(0).sizes()[-1]
    if not len(images):
        raise ValueError("no images to embed")
    x = images if hasattr(images, "shape") else as_batch(images, size)
    return np.concatenate([method.execute([torch.from_numpy(np.ascontiguousarray(x[i:i + 1]))])[0]
                           .numpy() for i in range(len(x))])


@contextmanager
def executorch_threads(n: int):

    before = _threadpool_get_thread_count()
    _unsafe_reset_threadpool(n)
    try:
        yield
    finally:
        _unsafe_reset_threadpool(before)
