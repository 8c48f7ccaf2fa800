"""Shared test fixtures. ``shared`` is the real data beside the repo (../shared).

``pytest tests notebooks --nbval-lax`` (``make test``) runs every notebook twice on the
small budget of ``smoke_params.json``: through the pipeline (tests/test_pipeline.py) and
as committed, through nbval. Both share one data and model cache, so nbval re-executes the
notebooks on the models the pipeline test trained instead of training them again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from devise_utils.core.config import ENV_OVERRIDES as ENV  # overrides every Config made

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))
if (SHARED / "nltk_data").is_dir():  # WordNet for the semantics tests, read-only, offline
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
SMOKE = json.loads((Path(__file__).parent / "smoke_params.json").read_text())
_SMOKE_DIR = Path(tempfile.mkdtemp(prefix="devise-smoke-"))


def smoke_params() -> dict:
    """The notebooks' small budget, with the data and model cache this test run shares."""
    return {**SMOKE, "data_dir": str(_SMOKE_DIR / "data"), "runs_dir": str(_SMOKE_DIR / "runs")}


class _NotebookBudget:
    """Gives nbval's kernels the smoke budget through ``$DEVISE_PARAMS``, only while a
    notebook runs (it overrides every Config, so the other tests must not see it). A
    ``$DEVISE_PARAMS`` the user set is left alone."""

    def __init__(self):
        self.user = os.environ.get(ENV)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        if self.user is not None:
            return
        if item.path.suffix == ".ipynb":
            os.environ[ENV] = json.dumps({**smoke_params(),
                                          "report_dir": str(_SMOKE_DIR / "nbval-report")})
        else:
            os.environ.pop(ENV, None)


def pytest_configure(config):
    config.pluginmanager.register(_NotebookBudget(), "devise-notebook-budget")


def pytest_unconfigure(config):
    shutil.rmtree(_SMOKE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real AwA2-layout photos, real fastText vectors, real SqueezeNet weights)."""
    if not (SHARED / "data" / "awa2-real-mini").is_dir():
        pytest.skip(f"real test data not found at {SHARED} (../shared is absent on a user's "
                    "clone; set DEVISE_SHARED to point at it)")
    return SHARED


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory) -> Path:
    """A data_dir holding the generated built-in dataset (made once per test run)."""
    from devise_utils.data.builtin import ensure_builtin

    d = tmp_path_factory.mktemp("data")
    ensure_builtin(d / "builtin", seed=0)
    return d


@pytest.fixture(scope="session")
def wn():
    """WordNet 3.0 for nltk from ../shared (skip where it is absent)."""
    from devise_utils.study.semantics import wordnet

    data = SHARED / "nltk_data"
    if not (data / "corpora" / "wordnet.zip").is_file():
        pytest.skip(f"WordNet not found at {data} (../shared is absent on a user's clone; "
                    "set DEVISE_SHARED to point at it)")
    return wordnet(str(data))
