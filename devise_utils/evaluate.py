"""The evaluation protocol applied to a trained configuration, cached as JSON.

Stage I accuracy on the seen valid split; Stage II top-1/3/5/10 on the same images
among seen class vectors (the poster's table); zero-shot per-class mean top-1 among
unseen classes only; generalized zero-shot (all classes as candidates) with the
harmonic mean; per-class accuracies and confusion matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import metrics as M
from .config import Config
from .experiment import Experiment, experiment
from .files import read_json, write_json
from .models import count_params
from .predict import embed_paths
from .train import stage1, stage2


def image_embeddings(cfg: Config, *, device: str | None = None) -> pd.DataFrame:
    """Stage II embeddings of every image (path, cls, split, emb), cached per config."""
    path = cfg.run_dir / "embeddings.npz"
    s2 = stage2(cfg)
    if path.is_file() and path.stat().st_mtime >= s2.path.stat().st_mtime:
        z = np.load(path, allow_pickle=False)
        return pd.DataFrame({"path": z["paths"], "cls": z["cls"], "split": z["split"],
                             "emb": list(z["emb"])})
    exp = experiment(cfg)
    emb, kept = embed_paths(s2.model(), exp.table["path"].tolist(), cfg.image_size,
                            batch_size=cfg.batch_size, device=device or cfg.resolved_device(),
                            num_workers=cfg.num_workers)
    t = exp.table.set_index("path").loc[kept].reset_index()
    np.savez_compressed(path, emb=emb, paths=t["path"].to_numpy(str),
                        cls=t["cls"].to_numpy(str), split=t["split"].to_numpy(str))
    return pd.DataFrame({"path": t["path"], "cls": t["cls"], "split": t["split"],
                         "emb": list(emb)})


def _stack(df: pd.DataFrame) -> np.ndarray:
    return np.stack(df["emb"].to_list()) if len(df) else np.zeros((0, 1), np.float32)


def stage1_eval(cfg: Config, exp: Experiment, device: str) -> dict[str, Any]:
    """Stage I classifier on the valid split: accuracy, per-class accuracy, confusion."""
    valid = exp.images("valid")
    out, kept = embed_paths(stage1(cfg).model(), valid["path"].tolist(), cfg.image_size,
                            batch_size=cfg.batch_size, device=device)
    idx = {c: i for i, c in enumerate(exp.seen)}
    y = valid.set_index("path").loc[kept, "cls"].map(idx).to_numpy()
    pred = out.argmax(1)
    pc = M.per_class_accuracy(pred, y, len(exp.seen))
    return {"accuracy": float(np.mean(pred == y)),
            "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(exp.seen, pc)},
            "confusion": M.confusion(pred, y, len(exp.seen)).tolist(), "n_images": len(y)}


def evaluate(cfg: Config, *, force: bool = False, device: str | None = None) -> dict[str, Any]:
    """Every metric of the study for one configuration (trains what is missing)."""
    path = cfg.run_dir / "metrics.json"
    s2 = stage2(cfg)
    if not force and path.is_file() and path.stat().st_mtime >= s2.path.stat().st_mtime:
        return read_json(path)
    device = device or cfg.resolved_device()
    exp = experiment(cfg)
    emb = image_embeddings(cfg, device=device)
    valid, unseen = emb[emb["split"] == "valid"], emb[emb["split"] == "unseen"]
    seen_vecs, unseen_vecs = exp.class_vectors(exp.seen), exp.class_vectors(exp.unseen)
    s2_seen = M.zero_shot(_stack(valid), valid["cls"].tolist(), exp.seen, seen_vecs)
    zsl = M.zero_shot(_stack(unseen), unseen["cls"].tolist(), exp.unseen, unseen_vecs)
    test = pd.concat([valid, unseen])
    test_emb, test_y, all_vecs = _stack(test), test["cls"].tolist(), exp.class_vectors()
    gzsl = M.generalized_zero_shot(test_emb, test_y, exp.seen, exp.unseen, all_vecs)
    curve = M.seen_unseen_curve(test_emb, test_y, exp.seen, exp.unseen, all_vecs)
    gzsl.update(AUSUC=curve["AUSUC"], best_H=curve["best_H"])
    uidx = {c: i for i, c in enumerate(exp.unseen)}
    zpred = M.cosine_scores(_stack(unseen), unseen_vecs).argmax(1)
    result = {
        "config": cfg.to_dict(), "key": cfg.key(), "backbone": cfg.backbone,
        "split": cfg.split, "seen": exp.seen, "unseen": exp.unseen,
        "n_images": {s: int((exp.table["split"] == s).sum()) for s in ("train", "valid", "unseen")},
        "stage1": stage1_eval(cfg, exp, device),
        "stage2": {k: s2_seen[k] for k in ("top1", "top3", "top5", "top10", "per_class_top1")},
        "zero_shot": zsl,
        "zero_shot_confusion": M.confusion(zpred, unseen["cls"].map(uidx).to_numpy(),
                                           len(exp.unseen)).tolist(),
        "gzsl": gzsl, "gzsl_curve": curve,
        "model": {"params": count_params(s2.model()), "mb": s2.path.stat().st_size / 1e6},
        "train_seconds": stage1(cfg).metrics["train_seconds"] + s2.metrics["train_seconds"],
    }
    write_json(path, result)
    return result
