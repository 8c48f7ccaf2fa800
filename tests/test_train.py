"""Stage I + Stage II on the built-in dataset, from scratch on the CPU."""

from __future__ import annotations

import pytest
import torch

from devise_utils import Config, train
from devise_utils.evaluate import evaluate
from devise_utils.models import build_model, load_model


@pytest.fixture(scope="module")
def trained(builtin_dir, tmp_path_factory):
    cfg = Config(data_dir=str(builtin_dir), out_dir=str(tmp_path_factory.mktemp("runs")),
                 stage1_epochs=6, stage2_epochs=4)
    return cfg, evaluate(cfg)


@pytest.mark.slow
def test_zero_shot_is_learned_on_builtin(trained):
    cfg, r = trained
    z = r["zero_shot"]
    # Unseen classes are new attribute combinations: transfer must beat chance by far.
    assert z["per_class_top1"] >= 2 * z["chance"], z
    assert r["stage1"]["accuracy"] >= 3 / len(r["seen"])
    assert r["stage2"]["top5"] > r["stage2"]["top1"] > 2 / len(r["seen"])
    assert 0 <= r["gzsl"]["H"] <= max(r["gzsl"]["seen"], r["gzsl"]["unseen"])
    assert r["n_images"]["unseen"] > 0 and r["n_images"]["valid"] > 0


@pytest.mark.slow
def test_checkpoint_metadata_and_snapshots(trained):
    cfg, r = trained
    model, meta = load_model(cfg.run_dir / "stage2.pth")
    assert meta["stage"] == 2 and meta["n_out"] == meta["dim"] == 300
    assert len(meta["vectors_sha256"]) == 64 and meta["classes"] == r["seen"]
    assert meta["config"]["seed"] == cfg.seed and meta["key"] == cfg.key()
    assert len(meta["history"]) == cfg.stage2_epochs
    x = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    assert model(x).shape == (2, 300)
    import numpy as np

    snaps = np.load(cfg.run_dir / "snapshots.npz")
    assert snaps["emb"].shape[0] == cfg.stage2_epochs
    assert snaps["emb"].shape[2] == 300


@pytest.mark.slow
def test_same_config_same_metrics_on_cpu(builtin_dir, tmp_path):
    cfg = Config(data_dir=str(builtin_dir), out_dir=str(tmp_path), max_per_class=12,
                 stage1_epochs=1, stage2_epochs=1, batch_size=32)
    a = train.stage2(cfg).meta["history"]
    b = train.stage2(cfg, force=True).meta["history"]
    assert a == b


@pytest.mark.slow
def test_interrupted_run_resumes_from_last_finished_stage(builtin_dir, tmp_path, monkeypatch):
    cfg = Config(data_dir=str(builtin_dir), out_dir=str(tmp_path), max_per_class=10,
                 stage1_epochs=1, stage2_epochs=1, batch_size=32)
    real_fit = train._fit

    def crash_in_stage2(learn, cfg_, stage, quiet):
        if stage == 2:
            raise KeyboardInterrupt
        return real_fit(learn, cfg_, stage, quiet)

    monkeypatch.setattr(train, "_fit", crash_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        train.stage2(cfg)
    s1 = cfg.stage_dir(1) / "stage1.pth"
    assert s1.is_file() and not (cfg.run_dir / "stage2.pth").exists()
    assert not list(cfg.run_dir.glob("*.tmp")) if cfg.run_dir.exists() else True
    mtime = s1.stat().st_mtime_ns
    monkeypatch.setattr(train, "_fit", real_fit)
    train.stage2(cfg)
    assert s1.stat().st_mtime_ns == mtime  # Stage I was not trained again
    assert (cfg.run_dir / "stage2.pth").is_file()


@pytest.mark.slow
def test_frozen_groups_stay_unchanged(builtin_dir, tmp_path):
    cfg = Config(data_dir=str(builtin_dir), out_dir=str(tmp_path), max_per_class=10,
                 stage1_epochs=1, stage1_frozen=2, batch_size=32)
    s1 = train.stage1(cfg)
    model = s1.model()
    train.seed_everything(cfg.seed)
    init = build_model(cfg.backbone, len(s1.meta["classes"]))
    frozen = init.body[:9].state_dict()   # squeezenet groups 0 and 1 = features[:9]
    trained = model.body[:9].state_dict()
    assert all(torch.equal(frozen[k], trained[k]) for k in frozen)
    # ...while the unfrozen last group did learn.
    assert not all(torch.equal(init.body[9:].state_dict()[k], model.body[9:].state_dict()[k])
                   for k in init.body[9:].state_dict())


def test_bad_frozen_count_is_a_clear_error(builtin_dir, tmp_path):
    cfg = Config(data_dir=str(builtin_dir), out_dir=str(tmp_path), stage1_frozen=7)
    with pytest.raises(ValueError, match="stage1_frozen must be in 0..3"):
        train.stage1(cfg)
