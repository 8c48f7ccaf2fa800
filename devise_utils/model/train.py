"""Stage I (classifier on seen classes) and Stage II (regression onto word vectors).

Both stages are fastai Learners over the same DataBlock; only the head size and the loss
differ. Data flows forward: Stage I reads the :class:`Experiment` (images, split, class
vectors) and writes ``<runs>/<backbone>-s1-<key>/stage1.pth``; Stage II reads the
Experiment and that Stage I result and writes ``.../stage2.pth`` plus per-epoch
snapshots. A finished stage is found by its config key and data fingerprint and loaded
instead of trained again, so an interrupted run resumes from the last finished stage.
Launched on several processes (``python -m devise_utils train``), each fit runs in fastai's
``distrib_ctx`` and rank 0 alone writes (:mod:`devise_utils.model.distributed`).
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
from fastai.callback.mixup import MixUp
from fastai.torch_core import set_seed
from fastai.vision.all import (
    CategoryBlock,
    ColReader,
    ColSplitter,
    CrossEntropyLossFlat,
    DataBlock,
    ImageBlock,
    Learner,
    Normalize,
    Resize,
    accuracy,
    aug_transforms,
)
from PIL import Image

from devise_utils.core.errors import NotTrainedError
from devise_utils.core.files import atomic_write, locked_once, read_json, write_json
from devise_utils.data.experiment import Experiment
from devise_utils.model import distributed
from devise_utils.model.backbones import (
    DeViSEModel,
    build_model,
    load_matching,
    load_model,
    save_checkpoint,
    splitter,
)
from devise_utils.model.losses import CosineLoss, RankLoss
from devise_utils.model.predict import IMAGENET_MEAN, IMAGENET_STD, image_transform


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs (fastai's set_seed), deterministic kernels where cheap."""
    set_seed(seed, reproducible=True)


def dataloaders(exp: Experiment, device: str | None = None):
    """fastai DataLoaders over the seen classes: train/valid from the experiment's split."""
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


class EpochLog(Callback):
    """One line per epoch on stdout (the pipeline streams it), so a long run shows progress."""

    order = 95  # after the Recorder has the epoch's metrics

    def __init__(self, stage: int, total: int):
        self.stage, self.total, self.done, self.t0 = stage, total, 0, time.perf_counter()

    def after_epoch(self) -> None:
        self.done += 1
        names = [n for n in self.recorder.metric_names[1:] if n != "time"]
        vals = "  ".join(f"{n} {v:.4f}" for n, v in zip(names, self.recorder.values[-1]))
        print(f"  Stage {'I' * self.stage} epoch {self.done}/{self.total}  {vals}  "
              f"({time.perf_counter() - self.t0:.0f} s)", flush=True)


class StepCount(Callback):
    """Optimizer steps this process took: with the data sharded over N processes, each takes
    about 1/N of one process's steps (recorded in the checkpoint metadata)."""

    def __init__(self):
        self.n = 0

    def after_step(self) -> None:
        self.n += 1


@dataclass
class StageResult:
    """A finished stage: checkpoint path, its metadata, and (lazily) the model."""

    path: Path
    meta: dict[str, Any]

    @property
    def stage(self) -> int:
        return int(self.meta["stage"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]

    def model(self, device: str = "cpu") -> DeViSEModel:
        return load_model(self.path, device)[0]


def _learner(exp: Experiment, model: DeViSEModel, stage: int, dls):

    cfg = exp.cfg
    w = class_weights(exp) if cfg.balance == "weights" else None
    if stage == 1:
        loss = CrossEntropyLossFlat(weight=w, label_smoothing=cfg.label_smoothing)
        metrics = [accuracy]
    else:
        vecs = exp.class_vectors(exp.seen)
        loss = (RankLoss(vecs, w, margin=cfg.rank_margin) if cfg.loss == "rank"
                else CosineLoss(vecs, w))
        metrics = [vector_accuracy(torch.as_tensor(vecs))]
    learn = Learner(dls, model, loss_func=loss, metrics=metrics, splitter=splitter,
                    path=cfg.stage_dir(stage), model_dir=".")
    # NHWC weights: faster CPU convolutions (bench/bench_train.py, channels_last_speedup)
    learn.to_channelslast(use_amp=False)
    learn.logger = _silent  # fastai prints raw values per epoch; EpochLog prints a readable line
    if stage == 1 and cfg.mixup > 0:

        learn.add_cb(MixUp(cfg.mixup))
    return learn


def _silent(*args: Any) -> None:
    pass


def _stage_model(exp: Experiment, stage: int, s1: StageResult | None) -> DeViSEModel:
    """Stage I: the backbone (with its weights) and a class-sized head. Stage II: the same
    network with a vector-sized head, starting from Stage I's weights."""
    cfg = exp.cfg
    n_out = len(exp.seen) if stage == 1 else exp.vectors.dim
    model = build_model(cfg.backbone, n_out, weights=cfg.weights if stage == 1 else "none",
                        head_hidden=cfg.head_hidden, dropout=cfg.dropout, final_bn=cfg.final_bn,
                        image_size=cfg.image_size)
    if stage == 2:
        load_matching(model, torch.load(s1.path, map_location="cpu", weights_only=True))
    return model


def _require_stage1(stage: int, s1: StageResult | None) -> None:
    if stage == 2 and (s1 is None or s1.stage != 1):
        raise ValueError("Stage II starts from a finished Stage I: pass train_stage1(exp)'s "
                         "result as s1")


def lr_find(exp: Experiment, stage: int = 1, s1: StageResult | None = None) -> dict[str, Any]:
    """fastai's LR range test for a stage's learner. Reads the experiment (and Stage I for
    stage 2); writes ``lr_find_stage<N>.json`` (suggestion + curve) in the stage folder."""
    _require_stage1(stage, s1)
    cfg = exp.cfg
    path = cfg.stage_dir(stage) / f"lr_find_stage{stage}.json"
    if path.is_file() and (res := read_json(path)).get("data_fingerprint") == exp.fingerprint:
        return res
    seed_everything(cfg.seed)
    learn = _learner(exp, _stage_model(exp, stage, s1), stage, dataloaders(exp))
    learn.freeze_to(_n_frozen(exp, stage))
    with learn.no_bar():
        sug = learn.lr_find(show_plot=False)
    rec = learn.recorder
    out = {"stage": stage, "suggestion": float(sug.valley), "data_fingerprint": exp.fingerprint,
           "lrs": [float(x) for x in rec.lrs], "losses": [float(x) for x in rec.losses]}
    write_json(path, out)
    return out


def _n_frozen(exp: Experiment, stage: int) -> int:
    return exp.cfg.stage1_frozen if stage == 1 else exp.cfg.stage2_frozen


def _fit(learn, exp: Experiment, stage: int, s1: StageResult | None
         ) -> tuple[float, list[dict[str, float]]]:
    """Train with the one-cycle policy; discriminative LRs when the body is pretrained.

    Returns the max LR and the per-epoch history over every ``fit_one_cycle`` call.
    """
    cfg = exp.cfg
    epochs = cfg.stage1_epochs if stage == 1 else cfg.stage2_epochs
    lr = cfg.stage1_lr if stage == 1 else cfg.stage2_lr
    if lr is None:
        lr = lr_find(exp, stage, s1)["suggestion"]
    pretrained = cfg.pretrained or stage == 2
    n_frozen = _n_frozen(exp, stage)
    history: list[dict[str, float]] = []
    if distributed.is_main():
        learn.add_cb(EpochLog(stage, epochs))
    with learn.no_bar():
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


#: Lock file in a stage folder, held while that stage trains (core.files.file_lock).
TRAIN_LOCK = ".train.lock"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez_compressed(f, **arrays)


def checkpoint_path(exp: Experiment, stage: int) -> Path:
    return exp.cfg.stage_dir(stage) / f"stage{stage}.pth"


def finished_stage(exp: Experiment, stage: int) -> StageResult | None:
    """The stage's checkpoint if it was trained for this config and this data, else None."""
    path = checkpoint_path(exp, stage)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = read_json(meta_path)
        if (meta.get("key") == exp.cfg.key(stage)
                and meta.get("data_fingerprint") == exp.fingerprint):
            return StageResult(path, meta)
    return None


def require_stage(exp: Experiment, stage: int) -> StageResult:
    """A finished stage, or a NotTrainedError saying how to train it (never trains)."""
    hit = finished_stage(exp, stage)
    if hit is None:
        raise NotTrainedError(
            f"Stage {'I' * stage} of this configuration is not trained "
            f"({checkpoint_path(exp, stage)} is missing or was made for other data or "
            f"settings); train it first: Run(cfg).train_stage{stage}()")
    return hit


def train_stage1(exp: Experiment, *, force: bool = False) -> StageResult:
    """Stage I: cross-entropy classifier on the seen classes. Reads the experiment; writes
    ``stage1.pth`` (+ ``.json``). A finished Stage I for this config is loaded, not retrained."""
    return _train_stage(exp, 1, None, force)


def train_stage2(exp: Experiment, s1: StageResult, *, force: bool = False
                 ) -> StageResult:
    """Stage II: Stage I's network with a vector-sized head, cosine (or rank) loss onto the
    class word vectors. Reads the experiment and ``s1``; writes ``stage2.pth`` (+ ``.json``)
    and ``snapshots.npz`` (per-epoch embeddings for the PCA figure)."""
    return _train_stage(exp, 2, s1, force)


def _train_stage(exp: Experiment, stage: int, s1: StageResult | None,
                 force: bool) -> StageResult:
    """Train a stage once: a second process asking for the same stage (same runs/ folder)
    waits for the first and loads what it trained, instead of training it again. Under a
    launcher the ranks train together, so none of them takes the lock (a rank waiting on
    another's lock would stall their collectives)."""
    _require_stage1(stage, s1)

    def find() -> StageResult | None:
        return None if force else finished_stage(exp, stage)

    if distributed.launched():
        return find() or _fit_and_save(exp, stage, s1)
    return locked_once(exp.cfg.stage_dir(stage) / TRAIN_LOCK, find,
                       lambda: _fit_and_save(exp, stage, s1), log=print)


def _fit_and_save(exp: Experiment, stage: int, s1: StageResult | None) -> StageResult:
    cfg = exp.cfg
    seed_everything(cfg.seed)    # before building: the head's initial weights are seeded too
    model = _stage_model(exp, stage, s1)
    dls = dataloaders(exp)
    learn = _learner(exp, model, stage, dls)
    snaps = None
    if stage == 2:
        x, labels, paths = snapshot_batch(exp)
        snaps = EmbeddingSnapshots(x)
        learn.add_cb(snaps)
    steps = StepCount()
    learn.add_cb(steps)
    t0 = time.perf_counter()
    with distributed.fit_context(learn, str(dls.device)):
        lr, hist = _fit(learn, exp, stage, s1)
    meta = _meta(exp, stage, lr, hist, time.perf_counter() - t0)
    meta.update(processes=distributed.world_size(), steps=steps.n)  # steps: per process
    path = checkpoint_path(exp, stage)
    if distributed.is_main():  # one writer; under a launcher every rank holds the same weights
        if snaps is not None:
            arrays = {"emb": np.stack(snaps.epochs), "labels": np.array(labels),
                      "paths": np.array(paths)}
            atomic_write(cfg.run_dir / "snapshots.npz", lambda p: _save_npz(p, arrays))
        save_checkpoint(learn.model.cpu(), meta, path)
    distributed.barrier()  # the other ranks return once the checkpoint exists
    return StageResult(path, meta)


def snapshot_batch(exp: Experiment) -> tuple[torch.Tensor, list[str], list[str]]:
    """A fixed, seeded set of seen-class images (valid split first) for per-epoch snapshots."""
    df = exp.table[exp.table["seen"]]
    df = df.assign(order=(df["split"] != "valid").astype(int)).sort_values(["cls", "order", "path"])
    pick = df.groupby("cls", sort=True).head(exp.cfg.snapshot_per_class)
    tf = image_transform(exp.cfg.image_size)

    xs = []
    for p in pick["path"]:
        with Image.open(p) as im:
            xs.append(tf(im.convert("RGB")))
    return torch.stack(xs), pick["cls"].tolist(), pick["path"].tolist()
