"""What each exported format costs: size, single-thread latency, parity, int8 zero-shot."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.jit.mobile import _load_for_lite_interpreter

from devise_utils.apps.executorch_export import (
    executorch_error,
    executorch_threads,
    export_executorch,
    pte_embed,
    pte_method,
    require_executorch,
)
from devise_utils.apps.export import EXPORT_ROWS, checked_formats, export_all, torch_embed
from devise_utils.apps.onnx_export import export_onnx, quantize_int8
from devise_utils.apps.runtime import INPUT, onnx_embed, onnx_session
from devise_utils.model.backbones import count_params
from devise_utils.model.predict import as_batch
from devise_utils.study.metrics import zero_shot


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

    xt = torch.from_numpy(x)
    if suffix == ".pte":
        require_executorch()
        with executorch_threads(threads):
            method = pte_method(path)  # XNNPACK sizes its work to the pool when loaded
            return _median_ms(lambda: method.execute([xt]), runs, warmup)

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
    formats = checked_formats(formats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(out_dir) if out_dir is not None else Path(tmp)
        for name, model in models.items():
            rep = export_all(model, base / name, image_size, sample_images, name=name,
                             formats=formats)
            params = count_params(model)
            for fmt, key, cos_key in EXPORT_ROWS:
                if key not in rep:
                    continue
                path, cos = Path(rep[key]), rep[cos_key]
                rows.append({"model": name, "format": fmt, "params": params,
                             "mb": path.stat().st_size / 1e6,
                             "latency_ms": latency_ms(path, image_size, runs),
                             "min_cosine": cos["min_cosine"], "mean_cosine": cos["mean_cosine"]})
    return pd.DataFrame(rows)


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
