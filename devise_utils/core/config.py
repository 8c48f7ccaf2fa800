"""One configuration object that flows through every stage of the study.

Every parameter of the study is a field of :class:`Config`, with its default here and
nowhere else: the notebooks' ``parameters`` cells hold only ``params = {}`` (papermill
fills it), and :func:`make_config` turns that dict into a checked Config. With no
pretrained weights the defaults are the quick built-in run; with pretrained weights
:data:`PRETRAINED_RECIPE` is laid over them (the recipe that measured best on real photos).

A Config is validated when it is made: an unknown key names the closest valid ones, and a
value of the wrong type or out of range names the key and what it expects, before any data
is read or any model is trained. :meth:`Config.key` hashes the fields that change a trained
model, so cached artifacts are reused only for the configuration that made them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Repository root (the folder that holds ``devise_utils/``).
ROOT = Path(__file__).resolve().parents[2]

#: Xian et al. (2018) proposed split for AwA2: the 10 unseen classes, none of
#: which is an ImageNet-1K class (unlike 6 of the 10 standard-split unseen ones).
PROPOSED_UNSEEN_AWA2 = (
    "sheep", "dolphin", "bat", "seal", "blue+whale",
    "rat", "horse", "walrus", "giraffe", "bobcat",
)

BACKBONES = ("squeezenet1_1", "resnet34", "efficientnet_lite0")
MOBILE_FORMATS = ("onnx", "executorch", "torchscript")

#: Laid over the defaults when ``weights`` is not "none": the recipe for real photos with
#: an ImageNet backbone (see docs/results.md, "Real photos"; chosen on seen-class validation).
PRETRAINED_RECIPE: dict[str, Any] = {
    "image_size": 0,           # from the photos: their size, capped by the CPU budget below
    "stage1_epochs": 3,        # Stage I fine-tunes the whole body (1 head epoch, then all)
    "stage2_epochs": 4,
    "stage2_frozen": 3,        # Stage II trains the head only: fine-tuning on few images per
    #                            class destroys what transfers
    "loss": "cosine",          # beat the rank loss on held-out seen classes
    "csls_k": 10,              # also score zero-shot with CSLS: a "(transductive)" row
    "sweep_max_per_class": 100,  # ablation rows on 100 images per class, to fit a CPU
    "compare_max_per_class": 30,  # backbone comparison: 30 photos per class
}


#: The poster's recipe, kept as a row of every comparison: the whole network fine-tuned in
#: both stages, cosine loss, final BatchNorm, plain cosine at inference (same budget).
POSTER_RECIPE: dict[str, Any] = {
    **PRETRAINED_RECIPE, "stage2_frozen": 0, "loss": "cosine", "final_bn": True, "csls_k": 0,
}


class ConfigError(ValueError):
    """A parameter that does not exist, has the wrong type, or is out of range."""


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Defaults run the quick built-in dataset on a CPU."""

    # -- data
    dataset: str = "builtin"          # "builtin", "awa2", or a folder in AwA2 layout
    data_dir: str = str(ROOT / "data")  # datasets and the prepared image cache
    vectors: str | None = None        # .vec/.txt/.bin; None = the dataset's default
    split: str = "standard"           # "standard" (trainclasses/testclasses) or "proposed"
    valid_pct: float = 0.1          # seen images per class kept for every choice
    test_seen_pct: float = 0.2      # seen images per class kept for GZSL reporting only
    seed: int = 42
    max_per_class: int | None = None  # subsample for quick runs (None = every image)
    cache_size: int = 256             # short side of the prepared image cache
    holdout_round: bool = False       # calibration round: seen classes only, 20 % of them
    #                                   held out as pseudo-unseen (set by Run.calibration)

    # -- model
    backbone: str = "squeezenet1_1"   # squeezenet1_1 | resnet34 | efficientnet_lite0
    weights: str = "none"             # "none", "imagenet" (torchvision download) or a file
    image_size: int = 64              # 0 = chosen from the photos (see image_size_for)
    max_image_size: int = 224         # the cap of a size chosen from the photos
    epoch_pixels: float = 8.2e7       # ... and the pixels one training epoch may cost: 64-px
    #                                   photos x 20k (tiny-objects-50 fits 60 CPU-minutes)
    batch_size: int = 64
    head_hidden: int = 512
    dropout: float = 0.25
    final_bn: bool = True             # the poster's BatchNorm at the end of the head
    balance: str = "none"             # "none" or "weights" (class-balanced loss)
    augment: bool = True

    # -- Stage I (classifier) and Stage II (regression onto word vectors)
    stage1_epochs: int = 6
    stage1_frozen: int = 0            # layer groups kept frozen (0 = train everything)
    stage1_lr: float | None = 3e-3    # None = use lr_find's suggestion
    label_smoothing: float = 0.0      # Stage I cross-entropy label smoothing
    mixup: float = 0.0                # Stage I mixup alpha (fastai MixUp; 0 = off)
    stage2_epochs: int = 4
    stage2_frozen: int = 0
    stage2_lr: float | None = 3e-3
    loss: str = "cosine"              # Stage II loss: "cosine" (poster) or "rank" (Frome 2013)
    rank_margin: float = 0.1          # hinge margin of the rank loss
    snapshot_per_class: int = 8       # images per class kept for the PCA figure

    # -- evaluation (does not change a trained model)
    conse_top: int = 10               # ConSE: top-T seen classes mixed into an image vector
    csls_k: int = 0                   # CSLS neighbours for the transductive rows (0 = none)
    semantics: str = "name"           # class semantics of the transfer methods: "name", or
    #                                   WordNet parts joined by "+" ("name+synonyms+gloss")
    class_synsets: str | None = None  # class<TAB>wnid file; None = <dataset>/class_synsets.txt
    graph_hops: int = 3               # WordNet ancestors the graph method's graph reaches

    # -- ablation rows and sweeps (notebooks 02, 03, 06): images per class they train on
    sweep_max_per_class: int | None = None  # None = the main run's images

    # -- the backbone comparison (notebooks 04, 08): one budget for every backbone
    compare_backbones: tuple[str, ...] = BACKBONES
    compare_max_per_class: int | None = 20
    compare_image_size: int = 48
    compare_stage1_epochs: int = 5
    compare_stage2_epochs: int = 3

    # -- notebook 08: the mobile formats measured (ExecuTorch lowering takes a while)
    mobile_formats: tuple[str, ...] = ("onnx", "executorch")

    # -- where things go and how they run
    runs_dir: str = str(ROOT / "runs")  # trained models and caches
    report_dir: str | None = None     # where notebooks record results (the pipeline sets it)
    num_workers: int = 0
    device: str = "auto"              # "auto", "cpu" or "cuda"

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (checked like any Config)."""
        check_keys(changes)
        return dataclasses.replace(self, **changes)

    def key(self, stage: int = 2) -> str:
        """A short hash of the fields that change the model trained up to ``stage``.

        Stage I ignores the Stage II fields, so a Stage II sweep reuses one Stage I.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in _NON_MODEL_FIELDS}
        if stage == 1:
            d = {k: v for k, v in d.items() if k not in _STAGE2_FIELDS}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def stage_dir(self, stage: int = 2) -> Path:
        """Where a stage's artifacts live: ``runs_dir/<backbone>-s<stage>-<key>``."""
        return Path(self.runs_dir) / f"{self.backbone}-s{stage}-{self.key(stage)}"

    @property
    def run_dir(self) -> Path:
        """Stage II and evaluation artifacts of this configuration."""
        return self.stage_dir(2)

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


#: Fields that do not change what is trained (where things go, how it is run or scored).
_NON_MODEL_FIELDS = frozenset({
    "data_dir", "runs_dir", "report_dir", "num_workers", "device", "conse_top", "csls_k",
    "sweep_max_per_class", "compare_backbones", "compare_max_per_class", "compare_image_size",
    "compare_stage1_epochs", "compare_stage2_epochs", "mobile_formats", "max_image_size",
    "epoch_pixels", "semantics", "class_synsets", "graph_hops"})
_STAGE2_FIELDS = frozenset({"stage2_epochs", "stage2_frozen", "stage2_lr", "loss",
                            "rank_margin", "snapshot_per_class"})

#: Allowed values of the text fields with a fixed set of choices.
CHOICES: dict[str, tuple[str, ...]] = {
    "split": ("standard", "proposed"), "backbone": BACKBONES, "balance": ("none", "weights"),
    "loss": ("cosine", "rank"), "device": ("auto", "cpu", "cuda"),
}
#: Inclusive (low, high) bounds of numeric fields; None = unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "valid_pct": (0.01, 0.9), "test_seen_pct": (0.0, 0.9), "seed": (0, None),
    "max_per_class": (2, None),
    "cache_size": (16, 4096), "image_size": (0, 1024), "max_image_size": (16, 1024),
    "epoch_pixels": (1e3, None), "batch_size": (1, 4096),
    "head_hidden": (1, 65536), "dropout": (0.0, 0.95), "stage1_epochs": (1, 1000),
    "stage2_epochs": (1, 1000), "stage1_frozen": (0, 3), "stage2_frozen": (0, 3),
    "stage1_lr": (1e-7, 10.0), "stage2_lr": (1e-7, 10.0), "label_smoothing": (0.0, 0.5),
    "mixup": (0.0, 10.0),
    "rank_margin": (0.0, 2.0), "snapshot_per_class": (1, 1000), "conse_top": (1, 1000),
    "csls_k": (0, 1000), "sweep_max_per_class": (2, None), "compare_max_per_class": (2, None),
    "compare_image_size": (16, 1024),
    "graph_hops": (0, 20),
    "compare_stage1_epochs": (1, 1000), "compare_stage2_epochs": (1, 1000),
    "num_workers": (0, 64),
}


def fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Config)}


def defaults(pretrained: bool = False) -> dict[str, Any]:
    """Every parameter's default (the pretrained recipe laid over them if asked)."""
    d = {name: f.default for name, f in fields().items()}
    return {**d, **(PRETRAINED_RECIPE if pretrained else {})}


def check_keys(params: Mapping[str, Any]) -> None:
    """An unknown key is an error naming the closest valid keys."""
    known = fields()
    for k in params:
        if k not in known:
            near = difflib.get_close_matches(k, known, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(near)}?" if near else \
                f"valid keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown parameter {k!r}: {hint}")


def make_config(params: Mapping[str, Any] | None = None, *, recipe: bool = True) -> Config:
    """A checked Config from parameters (a notebook's ``params``, the pipeline's ``--set``).

    With pretrained ``weights`` (and ``recipe``), the real-photo recipe replaces the quick
    defaults; explicit parameters still win, and ``$DEVISE_PARAMS`` wins over both.
    """
    given = {**(params or {}), **_env_overrides()}
    check_keys(given)
    base = PRETRAINED_RECIPE if recipe and given.get("weights", "none") != "none" else {}
    return Config(**{**base, **given})


#: Environment variable holding a JSON dict of overrides for every Config made: lets CI run
#: the committed notebooks (nbval) on a small budget without a second copy of the defaults.
ENV_OVERRIDES = "DEVISE_PARAMS"


def _env_overrides() -> dict[str, Any]:
    raw = os.environ.get(ENV_OVERRIDES)
    if not raw:
        return {}
    try:
        d = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"${ENV_OVERRIDES} must be a JSON object, e.g. "
                          f"'{{\"stage1_epochs\": 1}}': {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"${ENV_OVERRIDES} must be a JSON object, got {raw!r}")
    return d


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is tuple:
        return "a list of text"
    if args:
        return " or ".join(names.get(a, str(a)) for a in args) + " or null"
    return names.get(tp, str(tp))


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """The value as the field's type, or a ConfigError naming the key and what it expects."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), tp) if args and \
        typing.get_origin(tp) is not tuple else tp
    ok = False
    if typing.get_origin(base) is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"parameter {name!r} expects {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _check(cfg: Config) -> None:
    hints = typing.get_type_hints(Config)
    for name in fields():
        value = _coerce(name, getattr(cfg, name), hints[name])
        object.__setattr__(cfg, name, value)
        if value is None:
            continue
        if name in CHOICES and value not in CHOICES[name]:
            raise ConfigError(f"parameter {name!r} must be one of {', '.join(CHOICES[name])}; "
                              f"got {value!r}")
        if name in RANGES:
            lo, hi = RANGES[name]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
                extra = " (3 body layer groups + the head)" if name.endswith("_frozen") else ""
                raise ConfigError(f"parameter {name!r} must be in {span}{extra}; got {value!r}")
    if 0 < cfg.image_size < 16:
        raise ConfigError(f"parameter 'image_size' must be 0 (from the photos) or 16..1024; "
                          f"got {cfg.image_size}")
    for f in cfg.mobile_formats:
        if f not in MOBILE_FORMATS:
            raise ConfigError(f"parameter 'mobile_formats' holds unknown format {f!r}; "
                              f"choose from {', '.join(MOBILE_FORMATS)}")
    for b in cfg.compare_backbones:
        if b not in BACKBONES:
            raise ConfigError(f"parameter 'compare_backbones' holds unknown backbone {b!r}; "
                              f"choose from {', '.join(BACKBONES)}")


def config_from_meta(d: Mapping[str, Any]) -> Config:
    """The Config a checkpoint's metadata records (fields this version lacks are ignored)."""
    known = fields()
    return Config(**{k: v for k, v in d.items() if k in known})
