"""Faults survived with nothing lost: a full disk keeps the previous file, a damaged cache
is detected and rebuilt instead of trusted."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import write_vec

from devise_utils.apps import vocab
from devise_utils.core.files import atomic_write, cached, read_json, write_json
from devise_utils.study.embedded import Embedded


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = write_json(tmp_path / "metrics.json", {"top1": 0.5})

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="disk full while writing .*metrics.json: the previous "
                                      "file is intact"):
        write_json(path, {"top1": 0.9})
    monkeypatch.undo()
    assert read_json(path) == {"top1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]   # no temp file left
    with pytest.raises(OSError, match="nothing was written"):
        atomic_write(tmp_path / "new.npz", lambda p: full(p))


def emb(n: int) -> Embedded:
    return Embedded(np.full((n, 2), float(n), np.float32), np.array([f"{i}.jpg" for i in
                    range(n)]), np.array(["a"] * n), np.array(["train"] * n))


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip", b"\x00" * 64])
def test_a_damaged_cache_is_rebuilt_never_trusted(tmp_path, damage):
    source, path = tmp_path / "stage2.pth", tmp_path / "embeddings.npz"
    source.write_bytes(b"model")
    calls, said = [], []

    def compute() -> Embedded:
        calls.append(1)
        return emb(3)

    def get() -> Embedded:
        return cached(path, source, Embedded.load, compute, lambda e, p: e.save(p), said.append)

    assert len(get()) == 3 and len(calls) == 1
    assert len(get()) == 3 and len(calls) == 1                 # reused
    path.write_bytes(damage)
    os.utime(path, (time.time() + 5, time.time() + 5))         # still newer than the source
    assert len(get()) == 3 and len(calls) == 2                 # detected, rebuilt
    assert said and "damaged" in said[0] and str(path) in said[0]
    assert len(Embedded.load(path)) == 3                       # and the cache is good again


def test_a_damaged_vocabulary_index_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(vocab, "VOCAB_DIR", tmp_path / "vocab")
    vec = write_vec(tmp_path / "w.vec", ["zebra", "horse", "tiger", "stripes", "grass"], seed=1)
    v = vocab.open_index(vec)
    (v.source / vocab.WORDS).write_text("zebra\n", encoding="utf-8")   # truncated
    said = []
    again = vocab.open_index(vec, log=said.append)
    assert len(again) == len(v) and any("damaged" in s for s in said)
    assert len(vocab.VocabIndex.load(v.source)) == len(v)


@pytest.mark.slow
def test_a_killed_training_run_is_trained_again_and_no_partial_checkpoint_is_loaded(tmp_path):
    """SIGKILL a real `train --stage 1` mid-epoch: nothing half-written is left where a
    checkpoint is looked for, and the same command then trains and writes one that loads."""
    import signal
    import subprocess
    import sys

    from devise_utils.core.config import make_config
    from devise_utils.study.run import Run

    sets = {"stage1_epochs": 3, "image_size": 32, "max_per_class": 30}
    cmd = [sys.executable, "-m", "devise_utils", "train", "--stage", "1", "--data-dir",
           str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"),
           *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    seen = []
    for line in proc.stdout:                      # wait until training is under way
        seen.append(line)
        if "Stage I epoch 1/" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert any("Stage I epoch 1/" in ln for ln in seen), "".join(seen)
    assert not list((tmp_path / "runs").rglob("stage1.pth"))   # killed before it finished
    cfg = make_config({"data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                       **sets})
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list((tmp_path / "runs").rglob("stage1.pth"))) == 1
    assert not list((tmp_path / "runs").rglob("*.tmp"))           # no temp file survives
    s1 = Run(cfg).stage1                       # loaded (NotTrainedError if it were not there)
    assert s1.path.is_file() and s1.model() is not None
