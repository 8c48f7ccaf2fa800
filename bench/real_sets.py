"""The real photo sets of ../shared the zero-shot benchmarks run on, as they read them."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DEVISE_SHARED", HERE.parent.parent / "shared"))
#: name: (folder, vectors, class -> WordNet id file). The id files fix the classes whose first
#: noun sense is not what the photos show (bass the fish, nail the fastener), chosen from
#: the class's meaning, never from images.
DATASETS = {
    "caltech-zsl-dev": ("data/caltech-zsl-dev", "vectors/caltech-zsl-dev.glove50.vec",
                        HERE / "class_synsets" / "caltech-zsl-dev.txt"),
    "tiny-objects-50": ("data/tiny-objects-50", "vectors/glove-6b-50d.top20k.vec",
                        HERE / "class_synsets" / "tiny-objects-50.txt"),
    "awa2-real-mini": ("data/awa2-real-mini",
                       "vectors/fasttext-wiki-news-subwords-300.awa2-classes.vec",
                       HERE / "class_synsets" / "awa2-real-mini.txt"),
}
WEIGHTS = "weights/squeezenet1_1-imagenet-onnxzoo.pth"


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"
