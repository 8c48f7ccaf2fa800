"""Stage I (classifier on seen classes) and Stage II (regression onto word vectors).

Both stages are fastai Learners over the same DataBlock; only the head size and
the loss differ. Each stage is cached by configuration: ``stage2(cfg)`` trains
Stage I first unless a finished checkpoint for the same config exists, so an
interrupted run resumes from the last finished stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from torch import nn

from .config import Config
from .experiment import Experiment, experiment
from .files import read_json, write_json
from .models import DeViSEModel, build_model, load_matching, load_model, save_checkpoint, splitter
from .predict import IMAGENET_MEAN, IMAGENET_STD, image_transform


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs (fastai's set_seed), deterministic kernels where cheap."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)


def dataloaders(exp: Experiment, device: str | None = None):
    """fastai DataLoaders over the seen classes: train/valid from the experiment's split."""
    from fastai.vision.all import (
        CategoryBlock,
        ColReader,
        ColSplitter,
        DataBlock,
        ImageBlock,
        Normalize,
        Resize,
        aug_transforms,
    )

    cfg = exp.cfg
    df = exp.table[exp.table["split"].isin(["train", "valid"])].reset_index(drop=True)
    df = df.assign(is_valid=df["split"] == "valid")
    batch_tfms = [Normalize.from_stats(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.augment:  # the poster's fastai augmentation: flip, rotate, warp, zoom, lighting
        batch_tfms = [*aug_transforms(max_rotate=10, max_zoom=1.1, max_warp=0.2,
                                      max_lighting=0.2), *batch_tfms]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=exp.seen, sort=False)),
        get_x=ColReader("path"), get_y=ColReader("cls"), splitter=ColSplitter("is_valid"),
        item_tfms=Resize(cfg.image_size), batch_tfms=batch_tfms,
    )
    dls = block.dataloaders(df, bs=cfg.batch_size, num_workers=cfg.num_workers,
                            device=torch.device(device or cfg.resolved_device()))
    # Label i must mean exp.seen[i] everywhere (class vectors, metrics, checkpoints).
    assert list(dls.vocab) == exp.seen, "fastai vocab order differs from the seen classes"
    return dls


def class_weights(exp: Experiment) -> torch.Tensor:
    """Inverse-frequency weights over seen classes (mean 1), for ``balance='weights'``."""
    counts = exp.images("train")["cls"].value_counts().reindex(exp.seen).fillna(0).to_numpy()
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


class CosineLoss(nn.Module):
    """1 - cos(prediction, word vector of the image's class), optionally class-weighted."""

    def __init__(self, class_vecs: np.ndarray, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("vecs", torch.as_tensor(class_vecs, dtype=torch.float32))
        self.weight = weight

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 1 - F.cosine_similarity(pred, self.vecs.to(pred.device)[y], dim=1)
        if self.weight is None:
            return loss.mean()
        w = self.weight.to(pred.device)[y]
        return (loss * w).sum() / w.sum()


def vector_accuracy(vecs: torch.Tensor):
    """fastai metric: top-1 of the nearest seen-class word vector (Stage II's accuracy)."""
    def vec_top1(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = F.normalize(pred, dim=1) @ F.normalize(vecs.to(pred.device), dim=1).T
        return (s.argmax(1) == y).float().mean()
    return vec_top1


class EmbeddingSnapshots(Callback):
    """After every epoch, embed a fixed set of images (for the PCA-convergence figure)."""

    order = 90

    def __init__(self, x: torch.Tensor):
        self.x, self.epochs = x, []

    @torch.no_grad()
    def after_epoch(self) -> None:
        was_training = self.model.training
        self.model.eval()
        out = self.model(self.x.to(next(self.model.parameters()).device))
        self.epochs.append(F.normalize(out.float(), dim=1).cpu().numpy())
        self.model.train(was_training)


@dataclass
class StageResult:
    """A finished stage: checkpoint path, its metadata, and (lazily) the model."""

    path: Path
    meta: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]

    def model(self, device: str = "cpu") -> DeViSEModel:
        return load_model(self.path, device)[0]


def _learner(exp: Experiment, model: DeViSEModel, stage: int, dls):
    from fastai.vision.all import CrossEntropyLossFlat, Learner, accuracy

    w = class_weights(exp) if exp.cfg.balance == "weights" else None
    if exp.cfg.balance not in ("none", "weights"):
        raise ValueError(f"balance must be 'none' or 'weights', got {exp.cfg.balance!r}")
    if stage == 1:
        loss, metrics = CrossEntropyLossFlat(weight=w), [accuracy]
    else:
        vecs = torch.as_tensor(exp.class_vectors(exp.seen))
        loss, metrics = CosineLoss(vecs.numpy(), w), [vector_accuracy(vecs)]
    return Learner(dls, model, loss_func=loss, metrics=metrics, splitter=splitter,
                   path=exp.cfg.stage_dir(stage), model_dir=".")


def _stage_model(exp: Experiment, stage: int) -> DeViSEModel:
    cfg = exp.cfg
    if stage == 1:
        return build_model(cfg.backbone, len(exp.seen), weights=cfg.weights,
                           head_hidden=cfg.head_hidden, dropout=cfg.dropout, final_bn=cfg.final_bn)
    model = build_model(cfg.backbone, exp.vectors.dim, weights="none",
                        head_hidden=cfg.head_hidden, dropout=cfg.dropout, final_bn=cfg.final_bn)
    s1 = stage1(cfg)
    load_matching(model, torch.load(s1.path, map_location="cpu", weights_only=True))
    return model


def lr_find(cfg: Config, stage: int = 1, quiet: bool = True) -> dict[str, Any]:
    """fastai's LR range test for a stage's learner; cached as JSON (suggestion + curve)."""
    path = cfg.stage_dir(stage) / f"lr_find_stage{stage}.json"
    exp = experiment(cfg)
    if path.is_file() and (res := read_json(path)).get("data_fingerprint") == exp.fingerprint:
        return res
    if stage == 2:
        stage1(cfg)
    seed_everything(cfg.seed)
    learn = _learner(exp, _stage_model(exp, stage), stage, dataloaders(exp))
    learn.freeze_to(_frozen(cfg, stage, learn.model))
    with _maybe_quiet(learn, quiet):
        sug = learn.lr_find(show_plot=False)
    rec = learn.recorder
    out = {"stage": stage, "suggestion": float(sug.valley), "data_fingerprint": exp.fingerprint,
           "lrs": [float(x) for x in rec.lrs], "losses": [float(x) for x in rec.losses]}
    write_json(path, out)
    return out


def _frozen(cfg: Config, stage: int, model: DeViSEModel) -> int:
    n = cfg.stage1_frozen if stage == 1 else cfg.stage2_frozen
    if not 0 <= n < model.n_groups:
        raise ValueError(f"stage{stage}_frozen must be in 0..{model.n_groups - 1} "
                         f"({model.n_groups - 1} body groups + head), got {n}")
    return n


def _maybe_quiet(learn, quiet: bool):
    from contextlib import nullcontext

    return learn.no_bar() if quiet else nullcontext()


def _fit(learn, cfg: Config, stage: int, quiet: bool) -> tuple[float, list[dict[str, float]]]:
    """Train with the one-cycle policy; discriminative LRs when the body is pretrained.

    Returns the max LR and the per-epoch history over every ``fit_one_cycle`` call.
    """
    epochs = cfg.stage1_epochs if stage == 1 else cfg.stage2_epochs
    lr = cfg.stage1_lr if stage == 1 else cfg.stage2_lr
    if lr is None:
        lr = lr_find(cfg, stage)["suggestion"]
    pretrained = cfg.weights != "none" or stage == 2
    n_frozen = _frozen(cfg, stage, learn.model)
    history: list[dict[str, float]] = []
    with _maybe_quiet(learn, quiet):
        if pretrained and n_frozen < learn.model.n_groups - 1 and epochs > 1:
            # Transfer learning: head first (body frozen), then unfreeze down to n_frozen
            # with smaller rates for earlier groups.
            learn.freeze()
            learn.fit_one_cycle(1, lr)
            history += _history(learn)
            learn.freeze_to(n_frozen)
            learn.fit_one_cycle(epochs - 1, slice(lr / 100, lr / 2))
        else:
            learn.freeze_to(n_frozen)
            learn.fit_one_cycle(epochs, lr)
    return float(lr), history + _history(learn)


def _history(learn) -> list[dict[str, float]]:
    names = [n for n in learn.recorder.metric_names[1:] if n != "time"]
    return [dict(zip(names, map(float, v))) for v in learn.recorder.values]


def _meta(exp: Experiment, stage: int, lr: float, hist: list[dict[str, float]],
          seconds: float) -> dict[str, Any]:
    last = hist[-1] if hist else {}
    metric = "accuracy" if stage == 1 else "vec_top1"
    return {
        "stage": stage, "backbone": exp.cfg.backbone, "key": exp.cfg.key(stage),
        "data_fingerprint": exp.fingerprint,
        "n_out": len(exp.seen) if stage == 1 else exp.vectors.dim,
        "dim": exp.vectors.dim, "image_size": exp.cfg.image_size,
        "classes": exp.seen, "unseen": exp.unseen,
        "vectors": str(exp.vectors_path), "vectors_sha256": exp.vectors.source_sha256,
        "config": exp.cfg.to_dict(), "lr": lr, "history": hist,
        "metrics": {"valid_accuracy": last.get(metric), "valid_loss": last.get("valid_loss"),
                    "train_seconds": seconds},
    }


def _cached(cfg: Config, stage: int) -> StageResult | None:
    path = cfg.stage_dir(stage) / f"stage{stage}.pth"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = read_json(meta_path)
        if (meta.get("key") == cfg.key(stage)
                and meta.get("data_fingerprint") == experiment(cfg).fingerprint):
            return StageResult(path, meta)
    return None


def stage1(cfg: Config, *, quiet: bool = True, force: bool = False) -> StageResult:
    """Stage I: cross-entropy classifier on the seen classes (cached by config)."""
    return _train_stage(cfg, 1, quiet, force)


def stage2(cfg: Config, *, quiet: bool = True, force: bool = False) -> StageResult:
    """Stage II: body from Stage I, 300-d output, cosine loss onto class word vectors."""
    return _train_stage(cfg, 2, quiet, force)


def _train_stage(cfg: Config, stage: int, quiet: bool, force: bool) -> StageResult:
    if not force and (hit := _cached(cfg, stage)):
        return hit
    exp = experiment(cfg)
    if stage == 2:
        stage1(cfg, quiet=quiet)  # resume point: Stage I is trained (or found) first
    seed_everything(cfg.seed)    # before building: the head's initial weights are seeded too
    model = _stage_model(exp, stage)
    dls = dataloaders(exp)
    learn = _learner(exp, model, stage, dls)
    snaps = None
    if stage == 2:
        x, labels, paths = snapshot_batch(exp)
        snaps = EmbeddingSnapshots(x)
        learn.add_cb(snaps)
    t0 = time.perf_counter()
    lr, hist = _fit(learn, cfg, stage, quiet)
    meta = _meta(exp, stage, lr, hist, time.perf_counter() - t0)
    if snaps is not None:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cfg.run_dir / "snapshots.npz", emb=np.stack(snaps.epochs),
                            labels=np.array(labels), paths=np.array(paths))
    path = save_checkpoint(learn.model.cpu(), meta, cfg.stage_dir(stage) / f"stage{stage}.pth")
    return StageResult(path, meta)


def snapshot_batch(exp: Experiment) -> tuple[torch.Tensor, list[str], list[str]]:
    """A fixed, seeded set of seen-class images (valid split first) for per-epoch snapshots."""
    df = exp.table[exp.table["seen"]]
    df = df.assign(order=(df["split"] != "valid").astype(int)).sort_values(["cls", "order", "path"])
    pick = df.groupby("cls", sort=True).head(exp.cfg.snapshot_per_class)
    tf = image_transform(exp.cfg.image_size)
    from PIL import Image

    xs = []
    for p in pick["path"]:
        with Image.open(p) as im:
            xs.append(tf(im.convert("RGB")))
    return torch.stack(xs), pick["cls"].tolist(), pick["path"].tolist()
