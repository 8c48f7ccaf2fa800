"""Two processes on one runs/ folder make a stage once; a killed holder leaves no stale lock.

Real processes, since the lock is fcntl's (per open file). Each runs core.files.locked_once,
the function model/train.py trains a stage through, with a stand-in for the training that
records who made it and sleeps (so no model is trained and only core.files is imported).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fcntl")

MAKER = r"""
import os, sys, time
from pathlib import Path
from devise_utils.core.files import locked_once

folder, ready, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
done = folder / "stage1.pth"

def make():
    with open(folder / "made.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    done.write_text(str(os.getpid()))
    return done

(folder / f"ready-{os.getpid()}").touch()
while len(list(folder.glob("ready-*"))) < ready:
    time.sleep(0.01)  # both start together, after their imports
path = locked_once(folder / ".train.lock", lambda: done if done.is_file() else None, make,
                   log=print)
print(path.read_text(), flush=True)
"""


def _maker(folder: Path, ready: int, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", MAKER, str(folder), str(ready), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _made(folder: Path) -> list[str]:
    log = folder / "made.log"
    return log.read_text().split() if log.is_file() else []


def test_two_processes_make_a_stage_once(tmp_path):
    procs = [_maker(tmp_path, 2, 1.0) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(_made(tmp_path)) == 1                       # one of them trained
    maker = _made(tmp_path)[0]
    assert [out.split()[-1] for out, _ in outs] == [maker, maker]  # both use its result
    assert sum("waiting for process" in out for out, _ in outs) == 1, outs


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    first = _maker(tmp_path, 1, 60)
    deadline = time.monotonic() + 60
    while not _made(tmp_path):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)                      # mid-"training", holding the lock
    first.wait(timeout=30)
    second = _maker(tmp_path, 1, 0.1)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert len(_made(tmp_path)) == 2 and "waiting" not in out  # the lock died with the first
    assert out.split()[-1] == str(second.pid)


def test_train_stage_goes_through_the_lock(tmp_path, monkeypatch):
    """In-process: a stage already trained by another process is loaded, not retrained."""
    from types import SimpleNamespace

    from devise_utils.core import files
    from devise_utils.core.config import Config
    from devise_utils.core.files import write_json
    from devise_utils.model import train

    exp = SimpleNamespace(cfg=Config(runs_dir=str(tmp_path)), fingerprint="data")
    path = train.checkpoint_path(exp, 1)

    def other_process_trained(*a, **k):  # the stage appears while the lock is awaited
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w")
        write_json(path.with_suffix(".json"), {"stage": 1, "key": exp.cfg.key(1),
                                               "data_fingerprint": "data"})
        return original(*a, **k)

    original = files.file_lock
    monkeypatch.setattr(files, "file_lock", other_process_trained)
    monkeypatch.setattr(train, "_fit_and_save", lambda *a: pytest.fail("trained twice"))
    assert train._train_stage(exp, 1, None, False).path == path
    assert (path.parent / train.TRAIN_LOCK).is_file()
