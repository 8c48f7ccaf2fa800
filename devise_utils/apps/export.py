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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devise_utils.apps.executorch_export import (
    executorch_error,
    export_executorch,
    pte_embed,
    require_executorch,
)
from devise_utils.apps.infer import resolve_method
from devise_utils.apps.onnx_export import export_onnx, quantize_int8
from devise_utils.apps.runtime import INPUT, OUTPUT, onnx_embed
from devise_utils.apps.torchscript_export import export_torchscript, torchscript_embed
from devise_utils.core.config import config_from_meta
from devise_utils.core.files import existing_file, write_json
from devise_utils.data.awa2 import dataset_root, image_files, read_awa2, split_table, spread_sample
from devise_utils.data.vectors import file_sha256, normalize
from devise_utils.model.backbones import load_embedder
from devise_utils.model.predict import IMAGENET_MEAN, IMAGENET_STD, as_batch

FORMATS = ("onnx", "executorch", "torchscript")
#: The zero-shot head of a method other than DeViSE, beside its feature model.
HEAD_FILE = "head.npz"


# --- inputs ----------------------------------------------------------------------------------





# --- the model as exported -------------------------------------------------------------------











# --- ONNX ------------------------------------------------------------------------------------







# --- ExecuTorch ------------------------------------------------------------------------------













# --- TorchScript lite (PyTorch Mobile, deprecated) -------------------------------------------



# --- running and checking --------------------------------------------------------------------





def torch_embed(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Raw embeddings from the PyTorch model (the parity reference)."""
    model = model.cpu().eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])




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
    cos = (normalize(reference) * normalize(other)).sum(axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}






def checked_formats(formats: Sequence[str] | None) -> tuple[str, ...]:
    """Checked formats; ``None`` = ONNX, plus ExecuTorch where it is installed."""
    if formats is None:
        return ("onnx",) + (("executorch",) if executorch_error() is None else ())
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown export format(s) {bad}; choose from {', '.join(FORMATS)}")
    if "executorch" in formats:
        require_executorch()
    return formats


def export_all(model, out_dir: str | Path, image_size: int,
               sample_images: Sequence[str | Path] | np.ndarray, *, name: str = "model",
               int8: bool = True, formats: Sequence[str] | None = ("onnx", "torchscript")
               ) -> dict[str, Any]:
    """Each format of one model (fp32, and int8 with ``int8``), with parity on the samples.

    Every other sample calibrates int8, the rest measure it (parity on the calibration
    images would flatter it). Returns paths and cosines to PyTorch fp32:
    ``onnx_fp32``/``fp32``, ``onnx_int8``/``int8``, ``pte_fp32``/``pte_fp32_parity``,
    ``pte_int8``/``pte_int8_parity``, ``torchscript``/``torchscript_parity``.
    """
    formats = checked_formats(formats)
    out_dir = Path(out_dir)
    images = as_batch(sample_images, image_size)
    ref = torch_embed(model, images)
    # every other sample calibrates int8 (so every class of a spread sample is seen), the
    # rest measure it: parity on the calibration images would flatter it
    test = slice(1, None, 2) if len(images) > 1 else slice(None)
    calib = images[::2]
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






# --- what int8 costs in zero-shot accuracy ---------------------------------------------------



# --- command line ----------------------------------------------------------------------------

def _sample_paths(ckpt_meta: dict[str, Any], images: str | None, n: int) -> list[str]:
    """``n`` calibration/parity images spread over the classes (every k-th sorted path):
    from ``images`` if given, else the checkpoint's own training split (seen classes, not
    its valid images), never an unseen class, whose images int8 must not be tuned on."""
    if images is not None:
        return spread_sample(image_files(images), n)
    try:
        cfg = config_from_meta(ckpt_meta["config"])
        t = split_table(read_awa2(dataset_root(cfg)), cfg.split, cfg.valid_pct, cfg.seed,
                        cfg.max_per_class)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise FileNotFoundError(f"no calibration images: the checkpoint's dataset is not "
                                f"available ({e}); pass --images DIR (seen-class training "
                                "photos)") from e
    return spread_sample(t.loc[t["split"] == "train", "path"].astype(str).tolist(), n)


def _check_parity(report: dict[str, Any], ckpt: str | Path) -> None:
    for what, key in (("ONNX", "fp32"), ("ExecuTorch", "pte_fp32_parity"),
                      ("TorchScript", "torchscript_parity")):
        if key in report and report[key]["min_cosine"] < 0.999:
            raise RuntimeError(f"{what} export of {ckpt} disagrees with PyTorch (min cosine "
                               f"{report[key]['min_cosine']:.5f} < 0.999); do not ship it")


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *, int8: bool = False,
                      images: str | None = None, n_images: int = 64,
                      formats: Sequence[str] = ("onnx",), method: str = "recommended",
                      log=print) -> dict[str, Any]:
    """Export a Stage II checkpoint in ``formats``; writes ``export.json`` (files, parity,
    input spec). Refuses (RuntimeError) an fp32 export that disagrees with PyTorch.

    ``method``: the zero-shot method ``label`` uses, by default the run's recommended one
    (best held-out seen score). Unless it is DeViSE, its feature model is exported beside
    the Stage II model, with its head (``head.npz``: :mod:`devise_utils.study.head`). A
    checkpoint whose run has no held-out choice (or no dataset here) exports DeViSE, and
    ``export.json`` says why."""
    formats = checked_formats(formats)  # fails fast (e.g. ExecuTorch missing) before any work
    model, meta = load_embedder(existing_file(ckpt, "checkpoint"))
    size = model.image_size
    run, method, why = resolve_method(meta, method)
    samples = _sample_paths(meta, images, n_images)
    report = export_all(model, out_dir, size, samples, name=meta["backbone"], int8=int8,
                        formats=formats)
    _check_parity(report, ckpt)
    head_info = None
    if method != "devise":
        head = run.head(method)
        feats = run.feature_model(head.features)
        hsize = head.image_size or size  # the 1K basis reads photos at its own 224 px
        head_report = export_all(feats, out_dir, hsize, samples,
                                 name=f"{meta['backbone']}-{method}", int8=int8,
                                 formats=formats)
        _check_parity(head_report, ckpt)
        head_file = head.save(Path(out_dir) / HEAD_FILE)
        dim = np.asarray(torch_embed(feats, as_batch(samples[:1], hsize))).shape[1]
        head_info = {"method": method, "file": HEAD_FILE, "sha256": file_sha256(head_file),
                     "image_size": hsize,
                     "features": head.features, "metric": head.metric,
                     "rows_from": head.rows_from, "semantics": head.semantics,
                     "files": exported_files(head_report), "dim": int(dim),
                     "chosen": head.info.get("chosen")}
    log(f"zero-shot method for label: {method} ({why})")
    info = {"checkpoint": str(Path(ckpt).resolve()), "checkpoint_sha256": file_sha256(ckpt),
            "backbone": meta["backbone"], "dim": meta["dim"],
            "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                      "layout": "NCHW RGB, resize short side, centre crop",
                      "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                      "note": "the .pte takes batch 1"},
            "output": {"name": OUTPUT, "note": "raw embedding; L2-normalise before cosine"},
            "vectors": meta.get("vectors"), "vectors_sha256": meta.get("vectors_sha256"),
            "image_size": size, "files": exported_files(report), "n_samples": len(samples),
            "method": method, "method_reason": why, "head": head_info, **report}
    write_json(Path(out_dir) / "export.json", info)
    return info


def exported_files(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """File name -> format and sha256 of each file :func:`export_all` wrote: how
    :func:`devise_utils.apps.infer.read_sidecar` tells which model the sidecar describes."""
    return {Path(report[key]).name: {"format": fmt, "sha256": file_sha256(report[key])}
            for fmt, key, _ in EXPORT_ROWS if key in report}


def command(args) -> int:
    """``python -m devise_utils export``."""
    info = export_checkpoint(args.model, args.out, int8=args.int8, images=args.images,
                             n_images=args.n_images, formats=args.format, method=args.method)
    for _, key, cos_key in EXPORT_ROWS:
        if key in info:
            print(f"{key:12s} {Path(info[key]).stat().st_size / 1e6:7.2f} MB  "
                  f"cosine to PyTorch min {info[cos_key]['min_cosine']:.4f} "
                  f"mean {info[cos_key]['mean_cosine']:.4f}  {info[key]}")
    if info["head"]:
        h = info["head"]
        print(f"{h['method']}: feature model {', '.join(h['files'])} and head {h['file']} "
              f"(label and tag on {info['backbone']}.onnx use them)")
    print("fp32 parity: min cosine "
          + ", ".join(f"{info[k]['min_cosine']:.5f} ({f})" for f, k in (
              ("onnx", "fp32"), ("executorch", "pte_fp32_parity"),
              ("torchscript", "torchscript_parity")) if k in info))
    return 0


#: (table format, export_all path key, export_all parity key), in table order.
EXPORT_ROWS = (("onnx-fp32", "onnx_fp32", "fp32"), ("onnx-int8", "onnx_int8", "int8"),
         ("executorch-fp32", "pte_fp32", "pte_fp32_parity"),
         ("executorch-int8", "pte_int8", "pte_int8_parity"),
         ("torchscript", "torchscript", "torchscript_parity"))
