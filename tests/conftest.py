"""Shared test fixtures. ``shared`` is the real data beside the repo (../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real AwA2-layout photos, real fastText vectors, real SqueezeNet weights)."""
    if not (SHARED / "data" / "awa2-real-mini").is_dir():
        pytest.skip(f"real test data not found at {SHARED} (../shared is absent on a user's "
                    "clone; set DEVISE_SHARED to point at it)")
    return SHARED


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory) -> Path:
    """A data_dir holding the generated built-in dataset (made once per test session)."""
    from devise_utils.builtin import ensure_builtin

    d = tmp_path_factory.mktemp("data")
    ensure_builtin(d / "builtin", seed=0)
    return d
