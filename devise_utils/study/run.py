"""One configuration of the study as a flow you can follow:

    data -> Stage I -> Stage II -> embeddings -> metrics

:class:`Run` carries the state, so nothing is re-derived: the data is read once, each
trained stage is handed forward to the next, and each step is cached on disk (named by the
config key and a fingerprint of the data) and says what it reads and writes. Training
happens only in :meth:`Run.train_stage1` / :meth:`Run.train_stage2` (or :meth:`Run.train`,
both); every other step needs what it reads to exist and raises :class:`NotTrainedError`
otherwise, so asking for metrics never trains silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from devise_utils.core.config import Config, make_config
from devise_utils.core.errors import NotTrainedError
from devise_utils.core.files import cached, read_json, write_json
from devise_utils.data.experiment import Experiment, experiment, image_size_for
from devise_utils.data.vectors import file_sha256
from devise_utils.model.backbones import (
    backbone_body,
    build_model,
    imagenet_classifier,
    last_layer,
)
from devise_utils.model.train import (
    finished_stage,
    lr_find,
    require_stage,
    train_stage1,
    train_stage2,
)
from devise_utils.study import basis1k as B
from devise_utils.study import evaluate as E
from devise_utils.study import metrics as M
from devise_utils.study.embedded import Embedded
from devise_utils.study.evaluate import (
    backbone_features,
    conse_vectors,
    embed_table,
    image_embeddings,
    linear_map_vectors,
    stored_outputs,
)
from devise_utils.study.head import ZeroShotHead, fit_head
from devise_utils.study.methods import (
    backbone_space,
    basis_kernels_for,
    basis_method,
    class_semantics_for,
    clean_top1,
    eszsl_method,
    gcn_method,
    prototype_method,
    unseen_overlap,
)
from devise_utils.study.preflight import preflight, synsets_file
from devise_utils.study.results import check_record

#: Bumped when metrics.json gains or changes a field, so an older cache is not reused.
METRICS_FORMAT = 6


class Run:
    """The study's steps for one :class:`Config` (or a dict of parameters)."""

    def __init__(self, cfg: Config | Mapping[str, Any] | None = None, *, log=print):
        cfg = cfg if isinstance(cfg, Config) else make_config(cfg)
        preflight(cfg)  # weights, dataset and word vectors, before anything reads or trains
        #: Why the input size is what it is (a size chosen from the photos says so).
        self.image_size_reason = f"{cfg.image_size} px: set"
        if cfg.image_size == 0:
            size, self.image_size_reason = image_size_for(cfg)
            cfg = cfg.replace(image_size=size)
        self.cfg = cfg
        self.log = log
        self._stages: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"Run({self.cfg.backbone}, key={self.cfg.key()}, dir={self.cfg.run_dir})"

    # -- data -------------------------------------------------------------------------------

    @cached_property
    def data(self) -> Experiment:
        """Validated dataset, split table, image cache and class vectors (read once).
        Reads the dataset folder and word vectors; writes the image cache under data_dir."""
        return experiment(self.cfg)

    @cached_property
    def device(self) -> str:
        return self.cfg.resolved_device()

    # -- training (the only steps that train) -------------------------------------------------

    def train_stage1(self):
        """Stage I: reads the data; writes ``<runs>/<backbone>-s1-<key>/stage1.pth``.
        Loads a finished Stage I of this config instead of training it again."""
        if 1 not in self._stages:
            hit = finished_stage(self.data, 1)
            if hit is None:
                self.log(f"Stage I: training {self.cfg.stage1_epochs} epochs "
                         f"-> {self.cfg.stage_dir(1)}", flush=True)
            self._stages[1] = hit or train_stage1(self.data)
        return self._stages[1]

    def train_stage2(self):
        """Stage II: reads the data and Stage I; writes ``.../stage2.pth`` and
        ``snapshots.npz``. Loads a finished Stage II of this config instead."""
        if 2 not in self._stages:
            hit = finished_stage(self.data, 2)
            if hit is None:
                self.log(f"Stage II: training {self.cfg.stage2_epochs} epochs "
                         f"-> {self.cfg.run_dir}", flush=True)
            self._stages[2] = hit or train_stage2(self.data, self.stage1)
        return self._stages[2]

    def train(self) -> Run:
        """Both stages (each loaded when already trained); returns the run."""
        self.train_stage1()
        self.train_stage2()
        return self

    @property
    def stage1(self):
        """The finished Stage I (NotTrainedError if it is not trained)."""
        return self._stage(1)

    @property
    def stage2(self):
        """The finished Stage II (NotTrainedError if it is not trained)."""
        return self._stage(2)

    def _stage(self, n: int):

        if n not in self._stages:
            self._stages[n] = require_stage(self.data, n)
        return self._stages[n]

    def lr_find(self, stage: int = 1) -> dict[str, Any]:
        """fastai's LR range test (Stage II's needs the trained Stage I); cached as JSON."""
        return lr_find(self.data, stage, self.stage1 if stage == 2 else None)

    # -- what the trained stages produce ------------------------------------------------------

    @cached_property
    def embeddings(self) -> Embedded:
        """Stage II embedding of every image. Reads stage2.pth; writes ``embeddings.npz`` in
        the run folder (reused while stage2.pth is unchanged)."""
        s2 = self.stage2
        return _cached(self.cfg.run_dir / "embeddings.npz", s2.path,
                       lambda: image_embeddings(self.data, s2, self.device))

    @cached_property
    def stage1_logits(self) -> Embedded:
        """Stage I outputs (seen-class logits) of every held-out image. Reads
        stage1.pth; writes ``logits.npz`` in the Stage I folder."""
        s1, t = self.stage1, self.data.table

        def compute() -> Embedded:
            return embed_table(t[t["split"] != "train"], s1.model(),
                               self.cfg.batch_size, self.device, normalize=False)

        return _cached(self.cfg.stage_dir(1) / "logits.npz", s1.path, compute)

    @cached_property
    def features(self) -> Embedded:
        """Pooled backbone features of every image for the linear-map baseline: the frozen
        pretrained body when there are weights, else Stage I's body (the only trained one).
        Reads the weights (or stage1.pth); writes ``features.npz`` in the Stage I folder."""
        s1, cfg = self.stage1, self.cfg

        def compute() -> Embedded:
            return backbone_features(self.data, self._backbone_model(), self.device)

        return _cached(cfg.stage_dir(1) / "features.npz", s1.path, compute)

    @cached_property
    def penultimate(self) -> Embedded:
        """Stage I's penultimate features (the input of its classifier) of every image: what
        the transfer methods build prototypes and weights in. Writes ``penultimate.npz``."""
        s1 = self.stage1

        def compute() -> Embedded:
            return embed_table(self.data.table, last_layer(s1.model())[0], self.cfg.batch_size,
                               self.device, normalize=False)

        return _cached(self.cfg.stage_dir(1) / "penultimate.npz", s1.path, compute)

    @cached_property
    def class_space(self) -> dict[str, Any]:
        """The class side of the transfer methods: semantics ``S`` (``cfg.semantics``) and
        the WordNet graph over the classes (:func:`.methods.class_semantics_for`)."""
        exp, cfg = self.data, self.cfg
        synsets = self.synsets_file
        return class_semantics_for(exp, cfg.semantics, str(synsets) if synsets else None,
                                   cfg.graph_hops)

    @cached_property
    def synsets_file(self) -> Path | None:
        """The class -> WordNet id file this run reads (:func:`.preflight.synsets_file`), or
        None when there is none."""
        path = synsets_file(self.cfg, self.data.dataset.root, self.data.classes)
        return path if path.is_file() else None

    def transfer_vectors(self, fixed: Mapping[str, dict[str, Any]] | None = None
                         ) -> dict[str, tuple[Embedded, np.ndarray, dict[str, Any]]]:
        """The semantic-side methods, each in two feature spaces: this run's Stage I
        (penultimate features, its classifier's weights) and the backbone alone (the frozen
        pretrained features the linear map uses, with a linear classifier's weights; key
        suffix ``_backbone``). name -> (image vectors of the held-out images, one row per
        class, the hyperparameters chosen on seen classes, or ``fixed[name]``)."""
        fixed = fixed or {}
        exp, space = self.data, self.class_space
        spaces = {"": (self.penultimate, last_layer(self.stage1.model())[1]),
                  "_backbone": backbone_space(self.features, exp.seen)}
        out = {}
        for suffix, (feats, W) in spaces.items():
            out["prototypes" + suffix] = prototype_method(feats, exp.seen, space["S"], W,
                                                          fixed.get("prototypes" + suffix))
            out["eszsl" + suffix] = eszsl_method(feats, exp.seen, space["S"],
                                                 fixed.get("eszsl" + suffix))
            if space["adjacency"] is not None:
                out["gcn" + suffix] = gcn_method(feats, exp.seen, W, space["adjacency"],
                                                 space["node_vecs"], len(exp.classes),
                                                 self.cfg.seed)
        if space["adjacency"] is None:
            self.log(f"graph method left out: {space['why_no_graph']}")
        return out

    @cached_property
    def imagenet_logits(self) -> Embedded:
        """The frozen pretrained network's 1,000 ImageNet logits of every image, read at its
        native 224 px whatever size Stage I trains at. Trains nothing, so every run on the
        same photos and weights shares them: ``<runs>/imagenet-logits/<backbone>-<weights
        sha256>-<photos>.npz``, one row per photo, each photo read once."""
        cfg = self.cfg
        w = Path(cfg.weights)
        wkey = file_sha256(w)[:12] if w.is_file() else cfg.weights
        photos = hashlib.sha256(str(Path(self.data.table["path"].iloc[0]).parent.parent)
                                .encode()).hexdigest()[:12]
        store = (Path(cfg.runs_dir) / "imagenet-logits"
                 / f"{cfg.backbone}-{wkey}-{photos}-{B.BASIS_IMAGE_SIZE}.npz")
        return stored_outputs(self.data.table, store,
                              lambda: imagenet_classifier(cfg.backbone, cfg.weights),
                              cfg.batch_size, self.device, B.BASIS_IMAGE_SIZE)

    @cached_property
    def basis_kernels(self) -> dict[str, np.ndarray]:
        """How alike each of the backbone's 1,000 classes is to each class of the run
        (:func:`.basis1k.kernels_for`); empty, with the reason logged, when the backbone has
        no pretrained 1K classifier or WordNet is missing."""
        return basis_kernels_for(self.data, self.cfg.pretrained, self.class_space["synsets"],
                                 self.log)

    def method_vectors(self, fixed: Mapping[str, dict[str, Any]] | None = None
                       ) -> dict[str, tuple[Embedded, np.ndarray | None, dict[str, Any]]]:
        """Every method but DeViSE as (image vectors, class rows (None = the class word
        vectors), what was chosen), on the same held-out images DeViSE is scored on.
        ``fixed``: method -> choices made before (the calibration round's), used as they are,
        so a method's scores keep the scale its calibration gamma was chosen on."""
        fixed = fixed or {}
        out = {k: (v, None, {}) for k, v in self.baseline_embeddings().items()}
        out.update(self.transfer_vectors(fixed))
        if self.basis_kernels:
            exp = self.data
            out["conse_1k"] = basis_method(self.imagenet_logits, exp.seen, exp.unseen,
                                           self.class_space["synsets"], self.basis_kernels,
                                           self.cfg.seed, fixed.get("conse_1k"))
        return out

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self, *, baselines: bool = True, calibrate: bool = True) -> dict[str, Any]:
        """Every number of the study for this run (cached as ``metrics.json``). Needs the
        trained stages (NotTrainedError otherwise); never trains, except the calibration
        round (``calibrate``), a separate Run on the seen classes that :meth:`calibration`
        trains explicitly and says so."""
        path = self.cfg.run_dir / f"metrics-{self._eval_key(baselines, calibrate)}.json"
        return cached(path, self.stage2.path, read_json,
                      lambda: self._metrics(baselines, calibrate), lambda r, p: write_json(p, r),
                      self.log)

    def _metrics(self, baselines: bool, calibrate: bool) -> dict[str, Any]:
        exp, s2 = self.data, self.stage2
        cal = self.calibration() if calibrate else None
        devise = E.score_method(exp, self.embeddings, cal and cal["devise"], self.cfg.csls_k)
        logits = self.stage1_logits
        result = {
            "config": self.cfg.to_dict(), "key": self.cfg.key(), "backbone": self.cfg.backbone,
            "split": self.cfg.split, "seen": exp.seen, "unseen": exp.unseen,
            "n_images": exp.counts,
            "stage1": E.stage1_eval(exp, logits.of("valid")),
            "stage2": E.seen_topk(exp, self.embeddings),
            **devise,
            "model": E.model_size(s2),
            "train_seconds": self.stage1.metrics["train_seconds"] + s2.metrics["train_seconds"],
        }
        if baselines:
            fixed = {k: v["chosen"] for k, v in cal.items() if v.get("chosen")} if cal else None
            result["baselines"] = {
                name: {**E.score_method(exp, emb, cal and cal[name], self.cfg.csls_k, rows,
                                        chosen.get("metric", "cosine")), "chosen": chosen}
                for name, (emb, rows, chosen) in self.method_vectors(fixed).items()}
        if cal is not None:
            _held_out_scores(result, cal)
        result["unseen_overlap"] = overlap = unseen_overlap(
            exp, self.cfg.pretrained, self.class_space["synsets"])
        for res in [result, *(result.get("baselines") or {}).values()]:
            res["zero_shot"]["per_class_top1_clean"] = clean_top1(res["zero_shot"], overlap)
        return result

    def recommended(self) -> str:
        """The method chosen on held-out seen classes, read from this run's metrics (not
        computed here: that would train the calibration round unasked)."""
        path = self.cfg.run_dir / f"metrics-{self._eval_key(True, True)}.json"
        if not path.is_file():
            raise NotTrainedError(
                f"no held-out choice for this run yet ({path} is missing): run the study "
                "(`python -m devise_utils.pipeline ...`, notebook 06) or Run(cfg).metrics() "
                "first, or name a method (--method devise)")
        return read_json(path)["recommended"]

    def head(self, method: str = "recommended") -> ZeroShotHead:
        """The zero-shot head of ``method`` (default: the recommended one) that label, tag and
        the export use: its image map and class rows (:mod:`devise_utils.study.head`).
        Cached as ``head-<method>-<eval key>.npz`` in the run folder."""
        method = self.recommended() if method == "recommended" else method
        path = self.cfg.run_dir / f"head-{method}-{self._eval_key(True, True)}.npz"
        return cached(path, self.stage2.path, ZeroShotHead.load,
                      lambda: fit_head(self, method), lambda h, p: h.save(p), self.log)

    def feature_model(self, features: str):
        """The torch model a head reads (``ZeroShotHead.features``), image -> raw features."""
        if features == "stage2":
            return self.stage2.model()
        if features == "stage1_logits":
            return self.stage1.model()
        if features == "stage1_penultimate":
            return last_layer(self.stage1.model())[0]
        if features == "backbone":  # as :attr:`features` reads it
            return backbone_body(self._backbone_model())
        if features == "imagenet_logits":  # as :attr:`imagenet_logits` reads it
            net = imagenet_classifier(self.cfg.backbone, self.cfg.weights)
            net.image_size = B.BASIS_IMAGE_SIZE
            return net
        raise ValueError(f"unknown feature model {features!r}")

    def _backbone_model(self):
        """The model whose body gives :attr:`features`: the frozen pretrained backbone when
        there are weights, else Stage I (the only trained body)."""
        cfg = self.cfg
        return (build_model(cfg.backbone, 1, cfg.weights, image_size=cfg.image_size)
                if cfg.pretrained else self.stage1.model())

    def _eval_key(self, baselines: bool, calibrate: bool) -> str:
        c = self.cfg
        side = hashlib.sha256(f"{c.semantics}|{c.class_synsets}|{c.graph_hops}".encode())
        return (f"v{METRICS_FORMAT}-c{c.csls_k}-t{c.conse_top}-b{int(baselines)}"
                f"-g{int(calibrate)}-s{side.hexdigest()[:8]}")

    def baseline_embeddings(self) -> dict[str, Embedded]:
        """ConSE (from Stage I, no Stage II) and the linear map (ridge on frozen features,
        lambda by leave-classes-out on seen classes) as word-space vectors of the valid and
        unseen images: the same images DeViSE is scored on."""
        return {"conse": conse_vectors(self.data, self.stage1_logits, self.cfg.conse_top),
                "linear": linear_map_vectors(self.data, self.features)}

    def calibration(self) -> dict[str, Any]:
        """Calibrated stacking's validation round (Chao et al. 2016): a Run on the seen
        classes only, some held out as pseudo-unseen, trained like this one. Returns each
        method's round scores and choices; no image of a real unseen class is used."""
        round_cfg = self.cfg.replace(holdout_round=True)
        r = Run(round_cfg, log=self.log)
        self.log(f"calibration round: {len(r.data.unseen)} seen classes held out as "
                 "pseudo-unseen", flush=True)
        r.train()
        out = {"devise": _round_scores(r.data, r.embeddings)}
        for name, (emb, rows, chosen) in r.method_vectors().items():
            out[name] = {**_round_scores(r.data, emb, rows, chosen.get("metric", "cosine")),
                         "chosen": chosen}
        return out

    def chosen(self, method: str) -> dict[str, Any] | None:
        """What ``method`` chose in this run's metrics (None before they exist): a head is
        fitted with the same choices the run was scored with."""
        path = self.cfg.run_dir / f"metrics-{self._eval_key(True, True)}.json"
        if not path.is_file():
            return None
        return (read_json(path).get("baselines") or {}).get(method, {}).get("chosen") or None

    # -- results of notebooks -----------------------------------------------------------------

    def record(self, name: str, data: Any) -> Path:
        """Save a notebook's result for the report's results.json, checked against its
        schema (:data:`~devise_utils.study.results.RECORDS`) before it is written."""
        if isinstance(data, pd.DataFrame):
            data = data.to_dict(orient="records")
        check_record(name, data)
        out = Path(self.cfg.report_dir) if self.cfg.report_dir else Path(self.cfg.runs_dir)
        return write_json(out / "results" / f"{name}.json", data)


def _cached(path: Path, source: Path, compute) -> Embedded:
    """``compute()``'s vectors, saved at ``path`` and reused while newer than ``source``
    (rebuilt when damaged)."""
    return cached(path, source, Embedded.load, compute, lambda e, p: e.save(p))


def _round_scores(exp: Experiment, emb: Embedded, rows: np.ndarray | None = None,
                  metric: str = "cosine") -> dict[str, Any]:
    """Scores of a calibration round: its held-out images (valid of the kept classes and
    the train and valid images of the pseudo-unseen ones) against all of its classes
    (``rows``, default the class vectors); and ``held_out_top1``, zero-shot per-class top-1
    on the pseudo-unseen classes: the held-out-seen score that chooses among methods."""
    rows = exp.class_vectors() if rows is None else rows
    test = emb.of("valid", "unseen")
    cols = np.arange(len(exp.classes)) >= len(exp.seen)
    scores = M.scores(test.X, rows, metric)
    pseudo = test.split == "unseen"
    held = M.zero_shot_from_scores(scores[np.ix_(pseudo, cols)], test.cls[pseudo].tolist(),
                                   exp.unseen)["per_class_top1"]
    return {"val_scores": scores, "val_y": test.labels(exp.classes), "val_unseen_cols": cols,
            "held_out_top1": held}


def _held_out_scores(result: dict[str, Any], cal: dict[str, Any]) -> None:
    """Each method's held-out-seen score (its calibration round's pseudo-unseen zero-shot)
    beside its numbers, and ``recommended``: the method that scores best there."""
    result["held_out_seen_top1"] = cal["devise"]["held_out_top1"]
    scores = {"devise": result["held_out_seen_top1"]}
    for name, res in (result.get("baselines") or {}).items():
        res["held_out_seen_top1"] = scores[name] = cal[name]["held_out_top1"]
    result["recommended"] = max(scores, key=lambda k: (round(scores[k], 12), k == "devise"))
