"""Mobile export: the Stage II embedder (image -> word-space vector) as ONNX and TorchScript.

* ONNX fp32 via ``torch.onnx.export`` (TorchScript-based exporter, dynamic batch):
  one self-contained file, where the dynamo exporter writes weights to a
  separate ``.data`` file and takes 20x longer for the same graph.
* ONNX int8 via onnxruntime's **static QDQ** quantisation, per-channel int8
  weights, uint8 activations, MinMax ranges from calibration images. On the
  SqueezeNet DeViSE model (224 px, real photos) it kept cosine to fp32 at mean
  0.997 and ran at about the fp32 speed or faster, while *dynamic* quantisation
  (weights only, activation ranges computed per call) was 2-10x *slower* than
  fp32 on CPU (ConvInteger kernels) for no accuracy gain; per-tensor weights
  lost more (mean 0.996) and Percentile calibration had a worse minimum (0.978).
  Calibrate on real photos: random noise gives activation ranges that real
  images do not have.
* TorchScript lite-interpreter ``.ptl`` (PyTorch Mobile). ExecuTorch ``.pte``
  is the successor but is not installed here.

The exported graphs output the raw (not unit-norm) embedding, as the PyTorch
model does; an app L2-normalises it before the cosine search. ``export.json``
records the input spec (size, mean/std) an app must reproduce.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
INPUT, OUTPUT = "image", "embedding"


# --- inputs ----------------------------------------------------------------------------------

def as_batch(sample_images: Sequence[str | Path] | np.ndarray, image_size: int) -> np.ndarray:
    """Preprocessed float32 (N, 3, S, S) from image paths, or an array/tensor checked as such."""
    if isinstance(sample_images, (str, Path)):
        raise TypeError("sample_images must be a list of paths or an array, not one path")
    if hasattr(sample_images, "shape"):  # ndarray or torch tensor
        x = np.asarray(sample_images.detach().cpu() if hasattr(sample_images, "detach")
                       else sample_images, dtype=np.float32)
    else:
        from .predict import load_image

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


# --- export ----------------------------------------------------------------------------------

def export_onnx(model, path: str | Path, image_size: int, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    dummy = torch.zeros(1, 3, image_size, image_size)
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray,
                  batch_size: int = 8) -> Path:
    """Static QDQ int8 (per-channel weights, MinMax) calibrated on ``calibration`` images."""
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
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)
        for aug in out_path.parent.glob("augmented_model*.onnx"):  # calibration leftovers
            aug.unlink(missing_ok=True)
    return out_path


def export_torchscript(model, path: str | Path, image_size: int) -> Path:
    """Traced, frozen TorchScript for PyTorch Mobile's lite interpreter (``.ptl``).

    ``optimize_for_mobile`` is used where torch was built with XNNPACK (this
    torch build lacks it); otherwise the frozen graph is saved as is.
    """
    import torch
    from torch.utils.mobile_optimizer import optimize_for_mobile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 3, image_size, image_size))
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

    The zero-shot hook: ``metrics.zero_shot(onnx_embed(int8_path, paths), ...)``
    against the same call on the fp32 file gives the accuracy int8 costs. Paths
    are read a batch at a time at the size the graph was exported for.
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


def cosine_parity(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Min and mean row-wise cosine between two embedding sets."""
    from .embeddings import normalize

    cos = (normalize(reference) * normalize(other)).sum(axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def parity(model, onnx_path: str | Path, images: np.ndarray) -> dict[str, float]:
    """Cosine between PyTorch and ONNX outputs (fp32 should be >= 0.999)."""
    return cosine_parity(torch_embed(model, images), onnx_embed(onnx_path, images))


def latency_ms(path: str | Path, image_size: int, runs: int = 30, warmup: int = 5,
               threads: int = 1) -> float:
    """Median batch-1 latency (ms) on ``threads`` CPU threads, after warm-up.

    ``.onnx`` runs in onnxruntime; ``.ptl`` in PyTorch's lite interpreter.
    """
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size), np.float32)
    if Path(path).suffix == ".onnx":
        sess = onnx_session(path, threads)
        return _median_ms(lambda: sess.run(None, {INPUT: x}), runs, warmup)
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    module, xt, before = _load_for_lite_interpreter(str(path)), torch.from_numpy(x), \
        torch.get_num_threads()
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


def export_all(model, out_dir: str | Path, image_size: int,
               sample_images: Sequence[str | Path] | np.ndarray, *, name: str = "model",
               int8: bool = True, torchscript: bool = True) -> dict[str, Any]:
    """Every format of one model, with parity on the sample images.

    Half the samples calibrate int8, the other half measure it (parity on the
    calibration images would flatter it). Returns paths and cosines.
    """
    out_dir = Path(out_dir)
    images = as_batch(sample_images, image_size)
    fp32 = export_onnx(model, out_dir / f"{name}.onnx", image_size)
    ref = torch_embed(model, images)
    report: dict[str, Any] = {"onnx_fp32": str(fp32),
                              "fp32": cosine_parity(ref, onnx_embed(fp32, images))}
    if int8:
        half = max(1, len(images) // 2)
        test = slice(half, None) if len(images) > 1 else slice(None)
        q = quantize_int8(fp32, out_dir / f"{name}.int8.onnx", images[:half])
        report["onnx_int8"] = str(q)
        report["int8"] = cosine_parity(ref[test], onnx_embed(q, images[test]))
    if torchscript:
        ts = export_torchscript(model, out_dir / f"{name}.ptl", image_size)
        report["torchscript"] = str(ts)
        report["torchscript_parity"] = cosine_parity(ref, torchscript_embed(ts, images))
    return report


def mobile_table(models: dict[str, Any], image_size: int,
                 sample_images: Sequence[str | Path] | np.ndarray, *,
                 out_dir: str | Path | None = None, runs: int = 30) -> Any:
    """Size, single-thread latency and parity of each model in each mobile format.

    One row per (model, format): ``params``, ``mb`` on disk, ``latency_ms`` (1
    thread, batch 1, median of ``runs`` after warm-up; onnxruntime for ONNX, the
    lite interpreter for TorchScript) and cosine to the PyTorch fp32 outputs.
    """
    import tempfile

    import pandas as pd

    from .models import count_params

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(out_dir) if out_dir is not None else Path(tmp)
        for name, model in models.items():
            rep = export_all(model, base / name, image_size, sample_images, name=name)
            params = count_params(model)
            for fmt, key, cos in (("onnx-fp32", "onnx_fp32", rep["fp32"]),
                                  ("onnx-int8", "onnx_int8", rep["int8"]),
                                  ("torchscript", "torchscript", rep["torchscript_parity"])):
                path = Path(rep[key])
                lat = latency_ms(path, image_size, runs)
                rows.append({"model": name, "format": fmt, "params": params,
                             "mb": path.stat().st_size / 1e6, "latency_ms": lat,
                             "min_cosine": cos["min_cosine"], "mean_cosine": cos["mean_cosine"]})
    return pd.DataFrame(rows)


# --- command line ----------------------------------------------------------------------------

def _sample_paths(ckpt_meta: dict[str, Any], images: str | None, n: int) -> list[str]:
    """``n`` images spread over the folder (every k-th sorted path covers every class)."""
    from .search import image_files

    if images is None:
        from .config import Config
        from .data import dataset_root

        try:
            root = dataset_root(Config.from_dict(ckpt_meta["config"])) / "JPEGImages"
            files = image_files(root)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise FileNotFoundError(f"no calibration images: the checkpoint's dataset is not "
                                    f"available ({e}); pass --images DIR") from e
    else:
        files = image_files(images)
    step = max(1, len(files) // n)
    return files[::step][:n]


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *, int8: bool = False,
                      images: str | None = None, n_images: int = 64) -> dict[str, Any]:
    """Export a Stage II checkpoint; writes ``export.json`` (files, parity, input spec)."""
    from .embeddings import file_sha256
    from .files import write_json
    from .predict import IMAGENET_MEAN, IMAGENET_STD
    from .search import load_model

    model, meta = load_model(ckpt)
    size = meta["image_size"]
    samples = _sample_paths(meta, images, n_images)
    report = export_all(model, out_dir, size, samples, name=meta["backbone"], int8=int8)
    if report["fp32"]["min_cosine"] < 0.999:
        raise RuntimeError(f"ONNX export of {ckpt} disagrees with PyTorch (min cosine "
                           f"{report['fp32']['min_cosine']:.5f} < 0.999); do not ship it")
    info = {"checkpoint": str(Path(ckpt).resolve()), "checkpoint_sha256": file_sha256(ckpt),
            "backbone": meta["backbone"], "dim": meta["dim"],
            "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                      "layout": "NCHW RGB, resize short side, centre crop",
                      "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "output": {"name": OUTPUT, "note": "raw embedding; L2-normalise before cosine"},
            "vectors": meta.get("vectors"), "n_samples": len(samples), **report}
    write_json(Path(out_dir) / "export.json", info)
    return info


def _cmd_export(args) -> int:
    info = export_checkpoint(args.model, args.out, int8=args.int8, images=args.images,
                             n_images=args.n_images)
    for key in ("onnx_fp32", "onnx_int8", "torchscript"):
        if key in info:
            print(f"{key:12s} {Path(info[key]).stat().st_size / 1e6:7.2f} MB  {info[key]}")
    print(f"fp32 parity: min cosine {info['fp32']['min_cosine']:.5f}")
    if "int8" in info:
        print(f"int8 vs PyTorch: min cosine {info['int8']['min_cosine']:.4f}, "
              f"mean {info['int8']['mean_cosine']:.4f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a Stage II model for mobile "
                              "(ONNX fp32/int8, TorchScript)")
    p.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--int8", action="store_true", help="also write a static-int8 ONNX model")
    p.add_argument("--images", help="calibration/parity images (default: the checkpoint's "
                   "dataset)")
    p.add_argument("--n-images", type=int, default=64, help="sample images to use")
    p.set_defaults(func=_cmd_export)
