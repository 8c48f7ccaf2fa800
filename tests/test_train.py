"""Stage I + Stage II on the built-in dataset, from scratch on the CPU, through Run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devise_utils.core.config import make_config
from devise_utils.core.errors import NotTrainedError
from devise_utils.model import train
from devise_utils.model.backbones import build_model, load_model
from devise_utils.study.run import Run


def _cfg(builtin_dir, runs, **kw):
    return make_config({"data_dir": str(builtin_dir), "runs_dir": str(runs), **kw})


@pytest.fixture(scope="module")
def trained(builtin_dir, tmp_path_factory):
    # A small budget that still learns (measured: zero-shot 65 %, chance 17 %; 74 s).
    run = Run(_cfg(builtin_dir, tmp_path_factory.mktemp("runs"), stage1_epochs=4,
                   stage2_epochs=3, image_size=48))
    return run, run.train().metrics()


@pytest.mark.slow
def test_zero_shot_is_learned_on_builtin_and_beats_chance_for_every_method(trained):
    run, r = trained
    z = r["zero_shot"]
    # Unseen classes are new attribute combinations: transfer must beat chance by far.
    assert z["per_class_top1"] >= 2 * z["chance"], z
    assert r["stage1"]["accuracy"] >= 3 / len(r["seen"])
    assert r["stage2"]["top5"] > r["stage2"]["top1"] > 2 / len(r["seen"])
    n = r["n_images"]
    assert n["unseen"] > 0 and n["valid"] > 0 and n["test_seen"] > 0
    # GZSL is scored on the test-seen and unseen images only: valid images choose, never score.
    assert r["gzsl"]["n_images"] == n["test_seen"] + n["unseen"], (r["gzsl"], n)
    # Every report row is there and above chance: the baselines and calibrated GZSL.
    for name in ("conse", "linear"):
        b = r["baselines"][name]
        assert b["zero_shot"]["per_class_top1"] > b["zero_shot"]["chance"], (name, b["zero_shot"])
        assert 0 <= b["gzsl"]["H_calibrated"] <= 1 and b["gzsl"]["gamma"] is not None
    # Calibration (gamma from held-out seen classes) lifts H above the uncalibrated one.
    assert r["gzsl"]["H_calibrated"] > r["gzsl"]["H"], r["gzsl"]
    assert r["gzsl"]["H_calibrated"] <= r["gzsl"]["best_H"] + 1e-9  # the oracle bounds it


@pytest.mark.slow
def test_checkpoint_metadata_and_snapshots(trained):
    run, r = trained
    cfg = run.cfg
    model, meta = load_model(cfg.run_dir / "stage2.pth")
    assert meta["stage"] == 2 and meta["n_out"] == meta["dim"] == 300
    assert len(meta["vectors_sha256"]) == 64 and meta["classes"] == r["seen"]
    assert meta["config"]["seed"] == cfg.seed and meta["key"] == cfg.key()
    assert len(meta["history"]) == cfg.stage2_epochs
    assert model.image_size == cfg.image_size          # the model carries its input size
    x = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    assert model(x).shape == (2, 300)
    snaps = np.load(cfg.run_dir / "snapshots.npz")
    assert snaps["emb"].shape[0] == cfg.stage2_epochs
    assert snaps["emb"].shape[2] == 300


def test_metrics_of_an_untrained_run_is_a_clear_error_and_trains_nothing(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=8))
    with pytest.raises(NotTrainedError, match=r"train it first: Run\(cfg\)\.train_stage2\(\)"):
        run.metrics()
    with pytest.raises(NotTrainedError, match="Stage I"):
        run.embeddings  # noqa: B018
    assert not list(tmp_path.rglob("*.pth"))


@pytest.mark.slow
def test_same_config_same_history_on_cpu(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=12, stage1_epochs=1, stage2_epochs=1,
                   batch_size=32))
    s1 = run.train_stage1()
    a = train.train_stage2(run.data, s1).meta["history"]
    b = train.train_stage2(run.data, s1, force=True).meta["history"]
    assert a == b


@pytest.mark.slow
def test_interrupted_run_resumes_from_last_finished_stage(builtin_dir, tmp_path, monkeypatch):
    cfg = _cfg(builtin_dir, tmp_path, max_per_class=10, stage1_epochs=1, stage2_epochs=1,
               batch_size=32)
    real_fit = train._fit

    def crash_in_stage2(learn, exp, stage, s1):
        if stage == 2:
            raise KeyboardInterrupt
        return real_fit(learn, exp, stage, s1)

    monkeypatch.setattr(train, "_fit", crash_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg).train()
    s1 = cfg.stage_dir(1) / "stage1.pth"
    assert s1.is_file() and not (cfg.run_dir / "stage2.pth").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    mtime = s1.stat().st_mtime_ns
    monkeypatch.setattr(train, "_fit", real_fit)
    Run(cfg).train()
    assert s1.stat().st_mtime_ns == mtime  # Stage I was not trained again
    assert (cfg.run_dir / "stage2.pth").is_file()


@pytest.mark.slow
def test_frozen_groups_stay_unchanged(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=10, stage1_epochs=1, stage1_frozen=2,
                   batch_size=32))
    model = run.train_stage1().model()
    train.seed_everything(run.cfg.seed)
    init = build_model(run.cfg.backbone, len(run.data.seen))
    frozen = init.body[:9].state_dict()   # squeezenet groups 0 and 1 = features[:9]
    trained = model.body[:9].state_dict()
    assert all(torch.equal(frozen[k], trained[k]) for k in frozen)
    # ...while the unfrozen last group did learn.
    assert not all(torch.equal(init.body[9:].state_dict()[k], model.body[9:].state_dict()[k])
                   for k in init.body[9:].state_dict())
