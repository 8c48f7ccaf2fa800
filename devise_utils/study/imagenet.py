"""Does a class overlap ImageNet-1K? Zero-shot on an ImageNet backbone is only a clean test
for classes the backbone was not trained on.

Two independent checks per class name:

- **name**: the name (``+``/``_`` read as spaces, any case) equals one of the 1,000 category
  names torchvision carries in its weights metadata (no download needed);
- **WordNet**: the class synset or any of its hyponyms (the backbone saw a subclass) is
  among the 1,000 ImageNet-1K wnids (vendored in ``imagenet1k_wnids.txt``), or one of its
  synonyms (lemma names) is an ImageNet category name (``rooster`` -> ``cock``; this can
  be a homonym, so the reason says so).

A class is flagged when either check matches; ``reason`` says which ImageNet class matched.
Siblings (hawksbill vs. loggerhead) are not flagged: that is an honest zero-shot split.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

WNID_FILE = Path(__file__).with_name("imagenet1k_wnids.txt")


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1K wnids in class-index order (the vendored file)."""
    wnids = tuple(ln.strip() for ln in WNID_FILE.read_text(encoding="utf-8").splitlines()
                  if ln.strip() and not ln.startswith("#"))
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f"{WNID_FILE} should list 1000 distinct wnids, found {len(wnids)}; "
                         "restore it from the package")
    return wnids


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 ImageNet-1K category names, index order, from torchvision's metadata."""
    from torchvision.models import SqueezeNet1_1_Weights

    return tuple(SqueezeNet1_1_Weights.IMAGENET1K_V1.meta["categories"])


def _norm(name: str) -> str:
    return " ".join(name.replace("+", " ").replace("_", " ").lower().split())


def _wordnet_matches(name: str, synset: Any, in1k: dict[str, int]) -> list[str]:
    """One reason per kind of match (synset, hyponyms, synonyms); empty when clean."""
    from .semantics import wnid

    cats, wnids = imagenet_categories(), imagenet_wnids()
    out = []
    if wnid(synset) in in1k:
        out.append(f"synset {synset.name()} is ImageNet class {wnid(synset)} "
                   f"'{cats[in1k[wnid(synset)]]}'")
    hypo = sorted({in1k[wnid(h)] for h in synset.closure(
        lambda s: s.hyponyms() + s.instance_hyponyms()) if wnid(h) in in1k})
    if hypo:
        shown = ", ".join(f"{wnids[i]} '{cats[i]}'" for i in hypo[:3])
        out.append(f"{len(hypo)} hyponym(s) of {synset.name()} are ImageNet classes: {shown}"
                   + (", ..." if len(hypo) > 3 else ""))
    names = {_norm(c): i for i, c in enumerate(cats)}
    syn = sorted({names[_norm(lem)] for lem in synset.lemma_names()
                  if _norm(lem) in names and _norm(lem) != _norm(name)})
    for i in syn:
        out.append(f"synonym '{_norm(cats[i])}' of {synset.name()} is ImageNet category {i} "
                   f"({wnids[i]}; may be a homonym)")
    return out


def imagenet_overlap(names: Sequence[str], synsets: Sequence[Any | None] | None = None,
                     wn: Any | None = None) -> list[dict[str, Any]]:
    """Per class: ``{"class", "imagenet" (bool), "name_match", "wordnet_match", "reasons"}``.

    ``synsets``: one per name (:func:`~devise_utils.study.semantics.class_synsets`, which
    honours a ``class_synsets.txt``); default: the first noun sense of each name. A class
    WordNet does not know is checked by name only (its reasons say so).
    """
    from .semantics import class_synsets, wordnet

    names = list(names)
    if synsets is None:  # WordNet is needed only to find the synsets
        synsets = class_synsets(names, None, wn or wordnet())
    if len(synsets) != len(names):
        raise ValueError(f"synsets has {len(synsets)} entries for {len(names)} names")
    cats = {_norm(c): i for i, c in enumerate(imagenet_categories())}
    in1k = {w: i for i, w in enumerate(imagenet_wnids())}
    out = []
    for name, syn in zip(names, synsets):
        reasons = []
        name_match = _norm(name) in cats
        if name_match:
            reasons.append(f"name '{_norm(name)}' is ImageNet category {cats[_norm(name)]}")
        wn_reasons = _wordnet_matches(name, syn, in1k) if syn is not None else []
        reasons += wn_reasons or ([] if syn is not None else ["not in WordNet: name check only"])
        out.append({"class": name, "imagenet": bool(name_match or wn_reasons),
                    "name_match": name_match, "wordnet_match": bool(wn_reasons),
                    "reasons": reasons})
    return out
