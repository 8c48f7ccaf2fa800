"""One configuration object that flows through every stage of the study.

Every function that trains, evaluates or reports takes a :class:`Config`. Its
:meth:`Config.key` hashes the fields that change a trained model, so artifacts
(checkpoints, cached embeddings) are reused only for the configuration that
made them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Repository root (the folder that holds ``devise_utils/``).
ROOT = Path(__file__).resolve().parent.parent

#: Xian et al. (2018) proposed split for AwA2: the 10 unseen classes, none of
#: which is an ImageNet-1K class (unlike 6 of the 10 standard-split unseen ones).
PROPOSED_UNSEEN_AWA2 = (
    "sheep", "dolphin", "bat", "seal", "blue+whale",
    "rat", "horse", "walrus", "giraffe", "bobcat",
)

#: Standard-split unseen AwA2 classes that are also ImageNet-1K classes, so an
#: ImageNet-pretrained backbone has seen them (Xian et al. 2018, section 4.1).
IMAGENET_OVERLAP_AWA2 = (
    "chimpanzee", "giant+panda", "leopard", "persian+cat", "pig", "hippopotamus",
)

#: Fields that do not change what is trained (where things go, how it is shown).
_NON_MODEL_FIELDS = frozenset({"out_dir", "num_workers", "name", "device"})
_STAGE2_FIELDS = frozenset({"stage2_epochs", "stage2_frozen", "stage2_lr", "snapshot_per_class"})


@dataclass
class Config:
    """Everything a run depends on. Defaults run the quick built-in dataset on a CPU."""

    name: str = "default"
    dataset: str = "builtin"          # "builtin", "awa2", or a folder in AwA2 layout
    data_dir: str = str(ROOT / "data")
    vectors: str | None = None        # .vec/.txt/.bin; None = the dataset's default
    split: str = "standard"           # "standard" (trainclasses/testclasses) or "proposed"
    valid_pct: float = 0.1
    seed: int = 42
    max_per_class: int | None = None  # subsample for quick runs (None = every image)

    backbone: str = "squeezenet1_1"   # squeezenet1_1 | resnet34 | efficientnet_lite0
    weights: str = "none"             # "none", "imagenet" (torchvision download) or a file
    image_size: int = 64
    cache_size: int = 256             # short side of the prepared image cache
    batch_size: int = 64
    head_hidden: int = 512
    dropout: float = 0.25
    final_bn: bool = True             # the poster's BatchNorm at the end of the head
    balance: str = "none"             # "none" or "weights" (class-balanced loss)
    augment: bool = True

    stage1_epochs: int = 4
    stage1_frozen: int = 0            # layer groups kept frozen in Stage I
    stage1_lr: float | None = 3e-3    # None = use lr_find's suggestion
    stage2_epochs: int = 6
    stage2_frozen: int = 0
    stage2_lr: float | None = 3e-3
    snapshot_per_class: int = 8       # images per class kept for the PCA figure

    out_dir: str = str(ROOT / "runs")
    num_workers: int = 0
    device: str = "auto"              # "auto", "cpu" or "cuda"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> Config:
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
        """Where a stage's artifacts live: ``out_dir/<backbone>-s<stage>-<key>``."""
        return Path(self.out_dir) / f"{self.backbone}-s{stage}-{self.key(stage)}"

    @property
    def run_dir(self) -> Path:
        """Stage II and evaluation artifacts of this configuration."""
        return self.stage_dir(2)

    @classmethod
    def from_params(cls, **params: Any) -> Config:
        """A Config from notebook/papermill parameters; ``None`` means "the default"."""
        return cls.from_dict({k: v for k, v in params.items() if v is not None})

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_threads() -> None:
    """Keep torch from spinning idle threads on small shared CPUs (10-40x slow-downs)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
