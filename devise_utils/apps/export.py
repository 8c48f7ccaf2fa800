"""Mobile export: the Stage II embedder (image -> word-space vector) for phones.

Formats (``FORMATS``):

* **ExecuTorch** ``.pte`` (PyTorch's mobile runtime, successor of PyTorch Mobile):
  ``torch.export`` -> ``to_edge_transform_and_lower`` with the **XNNPACK** partitioner
  (every op of the SqueezeNet/ResNet models is delegated). int8 is PT2E static
  quantisation with the XNNPACK quantizer (symmetric per-channel int8 weights, int8
  activations) calibrated on sample photos. Run and checked here by ExecuTorch's own
  Python runtime (``executorch.runtime``).
* **ONNX** fp32 via ``torch.onnx.export`` (TorchScript-based exporter, dynamic batch):
  one self-contained file, where the dynamo exporter writes weights to a separate
  ``.data`` file and takes 20x longer for the same graph. int8 via onnxruntime's
  **static QDQ** quantisation, per-channel 8-bit weights (uint8: see
  :func:`quantize_int8`), uint8 activations, MinMax ranges from calibration images. On
  the SqueezeNet DeViSE model (224 px, real photos) it kept cosine to fp32 at mean 0.997
  and ran at about the fp32 speed or faster, while *dynamic* quantisation (weights only)
  was 2-10x *slower* than fp32 on CPU (ConvInteger kernels) for no accuracy gain;
  per-tensor weights lost more (mean 0.996) and Percentile calibration had a worse
  minimum (0.978). Calibrate on real photos: random noise gives activation ranges that
  real images do not have.
* **TorchScript** lite-interpreter ``.ptl`` (PyTorch Mobile, deprecated): only for an
  app that still ships the PyTorch Mobile runtime; opt-in.

Every format is exported from :func:`mobile_ready`, the same function as the PyTorch
model in fewer bytes: the head's BatchNorms folded into its Linear layers (eval mode),
dropout dropped, and fastai's adaptive concat pool written as a global max/avg pool
(core ATen, so XNNPACK takes it). The int8 ONNX file is then compacted (short tensor
names, no node names, no all-zero weight/bias zero-points): with the fold, that took the
int8 SqueezeNet DeViSE (300-d) from 1.54 MB to 1.46 MB with identical outputs.

The exported graphs output the raw (not unit-norm) embedding, as the PyTorch model
does; an app L2-normalises it before the cosine search. ``export.json`` records the
input spec (size, mean/std) an app must reproduce.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
INPUT, OUTPUT = "image", "embedding"
FORMATS = ("onnx", "executorch", "torchscript")
EXECUTORCH_VERSION = "1.5.1"  # the pinned release (requirements.in)


# --- inputs ----------------------------------------------------------------------------------

def as_batch(sample_images: Sequence[str | Path] | np.ndarray, image_size: int) -> np.ndarray:
    """Preprocessed float32 (N, 3, S, S) from image paths, or an array/tensor checked as such."""
    if isinstance(sample_images, (str, Path)):
        raise TypeError("sample_images must be a list of paths or an array, not one path")
    if hasattr(sample_images, "shape"):  # ndarray or torch tensor
        x = np.asarray(sample_images.detach().cpu() if hasattr(sample_images, "detach")
                       else sample_images, dtype=np.float32)
    else:
        from devise_utils.model.predict import load_image

        paths = list(sample_images)
        if not paths:
            raise ValueError("no sample images given (needed for calibration and parity)")
        x = np.stack([load_image(str(p), image_size).numpy() for p in paths])
    if x.ndim != 4 or x.shape[1:] != (3, image_size, image_size):
        raise ValueError(f"sample images must be (N, 3, {image_size}, {image_size}), "
                         f"got {x.shape}")
    return np.ascontiguousarray(x)


@contextmanager
def _quiet():
    """Silence the exporters' and quantiser's advisory chatter (deprecations, BN axis notes)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            root.setLevel(level)


# --- the model as exported -------------------------------------------------------------------

def _bn_affine(bn) -> tuple[Any, Any]:
    """Eval-mode BatchNorm as y = s * x + t."""
    import torch

    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        s = bn.weight.detach() * s
    t = -bn.running_mean * s
    if bn.affine:
        t = t + bn.bias.detach()
    return s, t


@lru_cache(maxsize=1)
def _global_concat_pool_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class GlobalConcatPool(nn.Module):
        """fastai's ``AdaptiveConcatPool2d(1)`` + ``Flatten``: [max, avg] over the whole map.
        For ``torch.export`` (ExecuTorch) a max/avg pool whose kernel is the map: the
        adaptive max pool is not core ATen and XNNPACK would leave it out. Traced (ONNX,
        TorchScript) the adaptive pools, which ONNX writes as GlobalMax/AveragePool."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                mx, av = F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)
            else:
                k = x.shape[-2:]
                mx, av = F.max_pool2d(x, k), F.avg_pool2d(x, k)
            return torch.cat([mx, av], 1).flatten(1)

    return GlobalConcatPool


@lru_cache(maxsize=1)
def _fixed_affine_class():
    import torch
    from torch import nn

    class FixedAffine(nn.Module):
        """An eval-mode ``BatchNorm1d`` as ``x * scale + shift`` (the same function)."""

        def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
            super().__init__()
            self.register_buffer("scale", scale.detach().clone())
            self.register_buffer("shift", shift.detach().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale + self.shift

    return FixedAffine


def _kept_bn_as_affine(model):
    """``model`` (a :func:`mobile_ready` copy) with the head's remaining BatchNorms as
    :class:`FixedAffine` layers. For PT2E int8: torchao's ``convert_pt2e`` runs a conv-BN
    QAT fold pass (about 100 pattern graphs exported) whenever the graph holds a batch
    norm, which tripled the int8 lowering time; the affine is left out of quantisation,
    so it stays in fp32 as the BatchNorm did (outputs and int8 parity are unchanged)."""
    from torch import nn

    if not isinstance(getattr(model, "head", None), nn.Sequential):
        return model
    affine = _fixed_affine_class()
    model.head = nn.Sequential(*[affine(*_bn_affine(m)) if isinstance(m, nn.BatchNorm1d)
                                 else m for m in model.head])
    return model


def mobile_ready(model):
    """A copy of ``model`` (eval) that computes the same function in fewer ops and bytes.

    In the head: dropout removed; a ``BatchNorm1d`` that follows a ``Linear`` (the
    poster's final BN) folded into it (scaled rows, shifted bias); fastai's
    ``AdaptiveConcatPool2d(1) + Flatten`` replaced by a global max/avg pool. The body is
    untouched (the exporters fold its BatchNorms into the convolutions themselves).

    A BatchNorm *before* a Linear is kept: folding it scales the Linear's columns by
    gamma/sqrt(var), and a trained head has near-dead features (tiny var) whose columns
    then dwarf the rest, so per-channel int8 weights lose everything else (it took the
    default built-in run's int8 zero-shot top-1 from 66 % to 22-25 %).
    """
    import torch
    from torch import nn

    m = copy.deepcopy(model).cpu().eval()
    head = getattr(m, "head", None)
    if not isinstance(head, nn.Sequential):
        return m
    pool = _global_concat_pool_class()
    layers: list[nn.Module] = []
    for mod in head:
        if isinstance(mod, nn.Dropout):
            continue
        if (type(mod).__name__ == "AdaptiveConcatPool2d"
                and getattr(mod, "size", None) in (1, (1, 1))):
            layers.append(pool())
            continue
        if type(mod).__name__ == "Flatten" and layers and isinstance(layers[-1], pool):
            continue  # the pool already flattens
        layers.append(mod)
    out: list[nn.Module] = []
    with torch.no_grad():
        for mod in layers:
            bn1d = isinstance(mod, nn.BatchNorm1d) and mod.track_running_stats
            if bn1d and out and isinstance(out[-1], nn.Linear):  # Linear -> BN
                s, t = _bn_affine(mod)
                out[-1].weight.mul_(s[:, None])
                out[-1].bias.mul_(s).add_(t)
                continue
            if isinstance(mod, nn.Linear):
                lin = nn.Linear(mod.in_features, mod.out_features, bias=True)
                lin.weight.copy_(mod.weight)
                lin.bias.copy_(mod.bias if mod.bias is not None else torch.zeros(mod.out_features))
                out.append(lin)
                continue
            out.append(mod)
    m.head = nn.Sequential(*out)
    return m.eval()


# --- ONNX ------------------------------------------------------------------------------------

def export_onnx(model, path: str | Path, image_size: int | None = None, opset: int = OPSET
                ) -> Path:
    """Write :func:`mobile_ready` ``model`` as ONNX with a dynamic batch axis, for inputs of
    ``image_size`` (default: the size the model was trained at, ``model.image_size``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_size = image_size or model.image_size
    model = mobile_ready(model)
    dummy = torch.zeros(1, 3, image_size, image_size)
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray,
                  batch_size: int = 8) -> Path:
    """Static QDQ 8-bit (per-channel weights, MinMax) calibrated on ``calibration`` images,
    then :func:`compact_onnx`.

    Weights are uint8 (asymmetric per channel), not int8: onnxruntime's u8s8 x86 kernels
    saturate on CPUs without VNNI (AVX2 only, like this project's 2-core box), which cost
    the ImageNet SqueezeNet DeViSE mean cosine 0.939 -> 0.997 with u8u8 (0.995 with
    ``reduce_range``), at the same size and speed.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT: calibration[i:i + batch_size]}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs sample images; pass some (e.g. --images DIR)")
    out_path = Path(out_path)
    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(fp32_path), str(pre))
            quantize_static(str(pre), str(out_path), Reader(),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)
        for aug in out_path.parent.glob("augmented_model*.onnx"):  # calibration leftovers
            aug.unlink(missing_ok=True)
    return compact_onnx(out_path)


def compact_onnx(path: str | Path, out_path: str | Path | None = None) -> Path:
    """Rewrite an ONNX file without bytes that do not change what it computes.

    Tensor names shortened (a QDQ graph repeats each long name in several nodes and
    initializers: ~50 kB for SqueezeNet), node names and doc strings dropped, and the
    all-zero zero-point of every constant (weight, bias) ``DequantizeLinear`` left out
    (optional input, 0 by default). Graph input and output names are kept.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        if (node.op_type == "DequantizeLinear" and len(node.input) == 3
                and node.input[0] in inits and node.input[2] in inits
                and not numpy_helper.to_array(inits[node.input[2]]).any()):
            del node.input[2]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)

    fixed = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in fixed:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for t in g.initializer:
        t.name, t.doc_string = short(t.name), ""
    for node in g.node:
        node.name = node.doc_string = ""
        for i, name in enumerate(node.input):
            node.input[i] = short(name)
        for i, name in enumerate(node.output):
            node.output[i] = short(name)
    del g.value_info[:]
    model.doc_string = g.doc_string = ""
    out_path = Path(out_path or path)
    onnx.save(model, str(out_path))
    return out_path


# --- ExecuTorch ------------------------------------------------------------------------------

def executorch_error() -> str | None:
    """Why ExecuTorch export/run cannot work here (None when it can)."""
    try:
        with _quiet():
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


def _require_executorch() -> None:
    err = executorch_error()
    if err:
        raise RuntimeError(err)


def export_executorch(model, path: str | Path, image_size: int | None = None,
                      calibration: np.ndarray | None = None) -> Path:
    """Write :func:`mobile_ready` ``model`` as an ExecuTorch ``.pte`` lowered to XNNPACK
    (batch 1). With ``calibration`` images: int8 (PT2E static quantisation, XNNPACK
    quantizer, symmetric per-channel weights), ranges observed on those images."""
    import torch

    _require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _kept_bn_as_affine(mobile_ready(model))
    image_size = image_size or model.image_size
    example = (torch.zeros(1, 3, image_size, image_size),)
    with _quiet(), torch.no_grad():
        if calibration is not None:
            if len(calibration) == 0:
                raise ValueError("int8 calibration needs sample images; pass some "
                                 "(e.g. --images DIR)")
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = XNNPACKQuantizer().set_global(
                get_symmetric_quantization_config(is_per_channel=True))
            quantizer.set_module_type(_fixed_affine_class(), None)  # fp32, as a BatchNorm
            prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
            for x in calibration:  # the graph is exported for batch 1
                prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
            model = convert_pt2e(prepared)
        program = to_edge_transform_and_lower(torch.export.export(model, example),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
    from devise_utils.core.files import atomic_write

    atomic_write(path, lambda p: Path(p).write_bytes(program.buffer))
    return path


def _pte_method(path: str | Path):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(Path(path)).load_method("forward")


def pte_embed(path: str | Path, images: np.ndarray | Sequence[str | Path]) -> np.ndarray:
    """Raw embeddings from a ``.pte`` file (fp32 or int8) run by ExecuTorch's runtime,
    of preprocessed images (N, 3, S, S) or image paths, one image at a time."""
    import torch

    _require_executorch()
    method = _pte_method(path)
    size = method.metadata.input_tensor_meta(0).sizes()[-1]
    if not len(images):
        raise ValueError("no images to embed")
    x = images if hasattr(images, "shape") else as_batch(images, size)
    return np.concatenate([method.execute([torch.from_numpy(np.ascontiguousarray(x[i:i + 1]))])[0]
                           .numpy() for i in range(len(x))])


@contextmanager
def _executorch_threads(n: int):
    from executorch.extension.pybindings.portable_lib import (
        _threadpool_get_thread_count,
        _unsafe_reset_threadpool,
    )

    before = _threadpool_get_thread_count()
    _unsafe_reset_threadpool(n)
    try:
        yield
    finally:
        _unsafe_reset_threadpool(before)


# --- TorchScript lite (PyTorch Mobile, deprecated) -------------------------------------------

def export_torchscript(model, path: str | Path, image_size: int | None = None) -> Path:
    """Traced, frozen TorchScript for PyTorch Mobile's lite interpreter (``.ptl``).

    ``optimize_for_mobile`` is used where torch was built with XNNPACK (this
    torch build lacks it); otherwise the frozen graph is saved as is.
    """
    import torch
    from torch.utils.mobile_optimizer import optimize_for_mobile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = mobile_ready(model)
    with _quiet(), torch.no_grad():
        size = image_size or model.image_size
        traced = torch.jit.trace(model, torch.zeros(1, 3, size, size))
        try:
            script = optimize_for_mobile(traced)
        except RuntimeError:  # "XNNPACK is not enabled"
            script = torch.jit.freeze(traced)
        script._save_for_lite_interpreter(str(path))
    return path


# --- running and checking --------------------------------------------------------------------

def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session (``threads`` intra-op threads; 1 = a phone's single core)."""
    import onnxruntime as ort

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


def torch_embed(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Raw embeddings from the PyTorch model (the parity reference)."""
    import torch

    model = model.cpu().eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def torchscript_embed(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Raw embeddings from a ``.ptl`` file, run by PyTorch's mobile (lite) interpreter."""
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    module = _load_for_lite_interpreter(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def embed(path: str | Path, images: np.ndarray | Sequence[str | Path]) -> np.ndarray:
    """Raw embeddings from any exported file, by its suffix (.onnx, .pte, .ptl)."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return onnx_embed(path, images)
    if suffix == ".pte":
        return pte_embed(path, images)
    if suffix == ".ptl":
        return torchscript_embed(path, images)
    raise ValueError(f"unknown model file type {suffix!r} (.onnx, .pte or .ptl)")


def cosine_parity(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Min and mean row-wise cosine between two embedding sets."""
    from devise_utils.data.vectors import normalize

    cos = (normalize(reference) * normalize(other)).sum(axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def latency_ms(path: str | Path, image_size: int, runs: int = 30, warmup: int = 5,
               threads: int = 1) -> float:
    """Median batch-1 latency (ms) on ``threads`` CPU threads, after warm-up.

    ``.onnx`` runs in onnxruntime, ``.pte`` in ExecuTorch's runtime (XNNPACK), ``.ptl``
    in PyTorch's lite interpreter.
    """
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size), np.float32)
    suffix = Path(path).suffix
    if suffix == ".onnx":
        sess = onnx_session(path, threads)
        return _median_ms(lambda: sess.run(None, {INPUT: x}), runs, warmup)
    import torch

    xt = torch.from_numpy(x)
    if suffix == ".pte":
        _require_executorch()
        with _executorch_threads(threads):
            method = _pte_method(path)  # XNNPACK sizes its work to the pool when loaded
            return _median_ms(lambda: method.execute([xt]), runs, warmup)
    from torch.jit.mobile import _load_for_lite_interpreter

    module, before = _load_for_lite_interpreter(str(path)), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return _median_ms(lambda: module(xt), runs, warmup)
    finally:
        torch.set_num_threads(before)


def _median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def _formats(formats: Sequence[str] | None) -> tuple[str, ...]:
    """Checked formats; ``None`` = ONNX, plus ExecuTorch where it is installed."""
    if formats is None:
        return ("onnx",) + (("executorch",) if executorch_error() is None else ())
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown export format(s) {bad}; choose from {', '.join(FORMATS)}")
    if "executorch" in formats:
        _require_executorch()
    return formats


def export_all(model, out_dir: str | Path, image_size: int,
               sample_images: Sequence[str | Path] | np.ndarray, *, name: str = "model",
               int8: bool = True, formats: Sequence[str] | None = ("onnx", "torchscript"),
               torchscript: bool | None = None) -> dict[str, Any]:
    """Each format of one model (fp32, and int8 with ``int8``), with parity on the samples.

    Half the samples calibrate int8, the other half measure it (parity on the
    calibration images would flatter it). Returns paths and cosines to PyTorch fp32:
    ``onnx_fp32``/``fp32``, ``onnx_int8``/``int8``, ``pte_fp32``/``pte_fp32_parity``,
    ``pte_int8``/``pte_int8_parity``, ``torchscript``/``torchscript_parity``.
    ``torchscript=False`` drops TorchScript from ``formats`` (older call style).
    """
    formats = _formats(formats)
    if torchscript is not None:
        formats = tuple(f for f in formats if f != "torchscript") + (
            ("torchscript",) if torchscript else ())
    out_dir = Path(out_dir)
    images = as_batch(sample_images, image_size)
    ref = torch_embed(model, images)
    half = max(1, len(images) // 2)
    test = slice(half, None) if len(images) > 1 else slice(None)
    calib = images[:half]
    report: dict[str, Any] = {"formats": list(formats)}
    if "onnx" in formats:
        fp32 = export_onnx(model, out_dir / f"{name}.onnx", image_size)
        report["onnx_fp32"] = str(fp32)
        report["fp32"] = cosine_parity(ref, onnx_embed(fp32, images))
        if int8:
            q = quantize_int8(fp32, out_dir / f"{name}.int8.onnx", calib)
            report["onnx_int8"] = str(q)
            report["int8"] = cosine_parity(ref[test], onnx_embed(q, images[test]))
    if "executorch" in formats:
        pte = export_executorch(model, out_dir / f"{name}.pte", image_size)
        report["pte_fp32"] = str(pte)
        report["pte_fp32_parity"] = cosine_parity(ref, pte_embed(pte, images))
        if int8:
            q = export_executorch(model, out_dir / f"{name}.int8.pte", image_size, calib)
            report["pte_int8"] = str(q)
            report["pte_int8_parity"] = cosine_parity(ref[test], pte_embed(q, images[test]))
    if "torchscript" in formats:
        ts = export_torchscript(model, out_dir / f"{name}.ptl", image_size)
        report["torchscript"] = str(ts)
        report["torchscript_parity"] = cosine_parity(ref, torchscript_embed(ts, images))
    return report


#: (table format, export_all path key, export_all parity key), in table order.
_ROWS = (("onnx-fp32", "onnx_fp32", "fp32"), ("onnx-int8", "onnx_int8", "int8"),
         ("executorch-fp32", "pte_fp32", "pte_fp32_parity"),
         ("executorch-int8", "pte_int8", "pte_int8_parity"),
         ("torchscript", "torchscript", "torchscript_parity"))


def mobile_table(models: dict[str, Any], image_size: int,
                 sample_images: Sequence[str | Path] | np.ndarray, *,
                 out_dir: str | Path | None = None, runs: int = 30,
                 formats: Sequence[str] | None = None) -> Any:
    """Size, single-thread latency and parity of each model in each mobile format.

    One row per (model, format): ``params``, ``mb`` on disk, ``latency_ms`` (1 thread,
    batch 1, median of ``runs`` after warm-up; onnxruntime for ONNX, ExecuTorch's
    runtime with XNNPACK for ``.pte``, the lite interpreter for TorchScript) and cosine to
    the PyTorch fp32 outputs. ``formats`` default: ONNX and, where installed, ExecuTorch
    (fp32 and int8 each); add ``"torchscript"`` for the deprecated PyTorch Mobile format.
    """
    import tempfile

    import pandas as pd

    from devise_utils.model.backbones import count_params

    formats = _formats(formats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(out_dir) if out_dir is not None else Path(tmp)
        for name, model in models.items():
            rep = export_all(model, base / name, image_size, sample_images, name=name,
                             formats=formats)
            params = count_params(model)
            for fmt, key, cos_key in _ROWS:
                if key not in rep:
                    continue
                path, cos = Path(rep[key]), rep[cos_key]
                rows.append({"model": name, "format": fmt, "params": params,
                             "mb": path.stat().st_size / 1e6,
                             "latency_ms": latency_ms(path, image_size, runs),
                             "min_cosine": cos["min_cosine"], "mean_cosine": cos["mean_cosine"]})
    return pd.DataFrame(rows)


# --- what int8 costs in zero-shot accuracy ---------------------------------------------------

def quantized_zero_shot(model, unseen_paths: Sequence[str | Path], unseen_labels: Sequence[str],
                        unseen_classes: Sequence[str], class_vecs: np.ndarray,
                        calibration_paths: Sequence[str | Path], image_size: int, *,
                        fp32_emb: np.ndarray | None = None,
                        executorch: bool | None = None) -> dict[str, Any]:
    """Zero-shot per-class mean top-1 on the unseen images: PyTorch fp32 vs int8 ONNX
    (onnxruntime) vs int8 ``.pte`` (ExecuTorch runtime), each int8 model calibrated on
    ``calibration_paths`` (seen-class training images; never the unseen ones).

    ``class_vecs`` rows follow ``unseen_classes``; ``fp32_emb`` reuses PyTorch embeddings
    of ``unseen_paths`` already computed. ``executorch`` None = when installed. Returns
    ``fp32_zsl_top1``, ``onnx_int8_zsl_top1``, ``pte_int8_zsl_top1`` (None without
    ExecuTorch), the int8 file sizes and the number of images and classes.
    """
    import tempfile

    from devise_utils.study.metrics import zero_shot

    if executorch is None:
        executorch = executorch_error() is None
    unseen_classes, labels = list(unseen_classes), list(unseen_labels)
    x = as_batch(list(unseen_paths), image_size)
    calib = as_batch(list(calibration_paths), image_size)
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} unseen images but {len(labels)} labels")

    def top1(emb: np.ndarray) -> float:
        return float(zero_shot(emb, labels, unseen_classes, class_vecs)["per_class_top1"])

    out: dict[str, Any] = {
        "fp32_zsl_top1": top1(fp32_emb if fp32_emb is not None else torch_embed(model, x))}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "m.onnx", image_size)
        q = quantize_int8(fp32, Path(tmp) / "m.int8.onnx", calib)
        out["onnx_int8_zsl_top1"] = top1(onnx_embed(q, x))
        out["onnx_int8_mb"] = q.stat().st_size / 1e6
        out["pte_int8_zsl_top1"] = out["pte_int8_mb"] = None
        if executorch:
            p = export_executorch(model, Path(tmp) / "m.int8.pte", image_size, calib)
            out["pte_int8_zsl_top1"] = top1(pte_embed(p, x))
            out["pte_int8_mb"] = p.stat().st_size / 1e6
    out.update(n_images=len(x), n_classes=len(set(labels)))
    return out


# --- command line ----------------------------------------------------------------------------

def _sample_paths(ckpt_meta: dict[str, Any], images: str | None, n: int) -> list[str]:
    """``n`` images spread over the folder (every k-th sorted path covers every class)."""
    from devise_utils.apps.search import image_files

    if images is None:
        from devise_utils.core.config import config_from_meta
        from devise_utils.data.awa2 import dataset_root

        try:
            root = dataset_root(config_from_meta(ckpt_meta["config"])) / "JPEGImages"
            files = image_files(root)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise FileNotFoundError(f"no calibration images: the checkpoint's dataset is not "
                                    f"available ({e}); pass --images DIR") from e
    else:
        files = image_files(images)
    step = max(1, len(files) // n)
    return files[::step][:n]


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *, int8: bool = False,
                      images: str | None = None, n_images: int = 64,
                      formats: Sequence[str] = ("onnx",)) -> dict[str, Any]:
    """Export a Stage II checkpoint in ``formats``; writes ``export.json`` (files, parity,
    input spec). Refuses (RuntimeError) an fp32 export that disagrees with PyTorch."""
    from devise_utils.apps.search import load_model
    from devise_utils.core.files import write_json
    from devise_utils.data.vectors import file_sha256
    from devise_utils.model.predict import IMAGENET_MEAN, IMAGENET_STD

    formats = _formats(formats)  # fails fast (e.g. ExecuTorch missing) before any work
    model, meta = load_model(ckpt)
    size = model.image_size
    samples = _sample_paths(meta, images, n_images)
    report = export_all(model, out_dir, size, samples, name=meta["backbone"], int8=int8,
                        formats=formats)
    for what, key in (("ONNX", "fp32"), ("ExecuTorch", "pte_fp32_parity"),
                      ("TorchScript", "torchscript_parity")):
        if key in report and report[key]["min_cosine"] < 0.999:
            raise RuntimeError(f"{what} export of {ckpt} disagrees with PyTorch (min cosine "
                               f"{report[key]['min_cosine']:.5f} < 0.999); do not ship it")
    info = {"checkpoint": str(Path(ckpt).resolve()), "checkpoint_sha256": file_sha256(ckpt),
            "backbone": meta["backbone"], "dim": meta["dim"],
            "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                      "layout": "NCHW RGB, resize short side, centre crop",
                      "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                      "note": "the .pte takes batch 1"},
            "output": {"name": OUTPUT, "note": "raw embedding; L2-normalise before cosine"},
            "vectors": meta.get("vectors"), "n_samples": len(samples), **report}
    write_json(Path(out_dir) / "export.json", info)
    return info


def _cmd_export(args) -> int:
    info = export_checkpoint(args.model, args.out, int8=args.int8, images=args.images,
                             n_images=args.n_images, formats=args.format)
    for _, key, cos_key in _ROWS:
        if key in info:
            print(f"{key:12s} {Path(info[key]).stat().st_size / 1e6:7.2f} MB  "
                  f"cosine to PyTorch min {info[cos_key]['min_cosine']:.4f} "
                  f"mean {info[cos_key]['mean_cosine']:.4f}  {info[key]}")
    print("fp32 parity: min cosine "
          + ", ".join(f"{info[k]['min_cosine']:.5f} ({f})" for f, k in (
              ("onnx", "fp32"), ("executorch", "pte_fp32_parity"),
              ("torchscript", "torchscript_parity")) if k in info))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a Stage II model for mobile "
                              "(ExecuTorch .pte, ONNX; fp32 and int8)")
    p.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["onnx"],
                   help="one or more of: onnx (default; onnxruntime), executorch (.pte, "
                   "XNNPACK; ExecuTorch's mobile runtime), torchscript (.ptl, deprecated "
                   "PyTorch Mobile lite interpreter)")
    p.add_argument("--int8", action="store_true", help="also write static-int8 models "
                   "(calibrated on half the sample images)")
    p.add_argument("--images", help="calibration/parity images (default: the checkpoint's "
                   "dataset)")
    p.add_argument("--n-images", type=int, default=64, help="sample images to use")
    p.set_defaults(func=_cmd_export)
