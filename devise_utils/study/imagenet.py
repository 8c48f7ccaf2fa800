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


@lru_cache(maxsize=1)
def _lookups() -> tuple[dict[str, int], dict[str, int]]:
    """(normalised category name -> index, wnid -> index)."""
    return ({_norm(c): i for i, c in enumerate(imagenet_categories())},
            {w: i for i, w in enumerate(imagenet_wnids())})


def matching_1k(name: str, synset: Any | None) -> dict[int, str]:
    """The ImageNet-1K classes (index -> why) that *are* this class for the backbone: its
    synset, any hyponym of it (the backbone saw a subclass), a synonym that is an ImageNet
    category name (maybe a homonym), or its name. What the 1K basis must drop before this
    class is scored as unseen (:mod:`~devise_utils.study.basis1k`)."""
    from .semantics import wnid

    names, in1k = _lookups()
    out: dict[int, str] = {}
    if synset is not None:
        if wnid(synset) in in1k:
            out[in1k[wnid(synset)]] = "synset"
        for h in synset.closure(lambda s: s.hyponyms() + s.instance_hyponyms()):
            if wnid(h) in in1k:
                out.setdefault(in1k[wnid(h)], "hyponym")
        for lem in synset.lemma_names():
            if _norm(lem) in names and _norm(lem) != _norm(name):
                out.setdefault(names[_norm(lem)], "synonym")
    if _norm(name) in names:
        out.setdefault(names[_norm(name)], "name")
    return dict(sorted(out.items()))


def _wordnet_matches(name: str, synset: Any) -> list[str]:
    """One reason per kind of match (synset, hyponyms, synonyms); empty when clean."""
    cats, wnids = imagenet_categories(), imagenet_wnids()
    found = matching_1k(name, synset)
    by_kind = {k: [i for i, why in found.items() if why == k]
               for k in ("synset", "hyponym", "synonym")}
    out = [f"synset {synset.name()} is ImageNet class {wnids[i]} '{cats[i]}'"
           for i in by_kind["synset"]]
    hypo = by_kind["hyponym"]
    if hypo:
        shown = ", ".join(f"{wnids[i]} '{cats[i]}'" for i in hypo[:3])
        out.append(f"{len(hypo)} hyponym(s) of {synset.name()} are ImageNet classes: {shown}"
                   + (", ..." if len(hypo) > 3 else ""))
    for i in by_kind["synonym"]:
        out.append(f"synonym '{_norm(cats[i])}' of {synset.name()} is ImageNet category {i} "
                   f"({wnids[i]}; may be a homonym)")
    return out


def nearest_1k(synset: Any, wn: Any) -> dict[str, Any]:
    """The ImageNet-1K class nearest to ``synset`` in WordNet (Wu-Palmer) and how the two
    are related, so a reader sees how close the backbone came to a class it never saw."""
    from .semantics import synset_of

    wnids = imagenet_wnids()
    basis = [synset_of(w, wn) for w in wnids]
    sims = [b.wup_similarity(synset) or 0.0 for b in basis]
    i = max(range(len(basis)), key=lambda j: (sims[j], -j))
    b = basis[i]
    down = {h: d for h, d in _depths(synset, lambda s: s.hyponyms() + s.instance_hyponyms())}
    up = {h: d for h, d in _depths(synset, lambda s: s.hypernyms() + s.instance_hypernyms())}
    if b == synset:
        rel = "the same synset"
    elif b in down:
        rel = f"hyponym ({down[b]} step{'s' * (down[b] > 1)} below)"
    elif b in up:
        rel = f"hypernym ({up[b]} step{'s' * (up[b] > 1)} above)"
    elif set(b.hypernyms()) & set(synset.hypernyms()):
        rel = "sibling (same parent)"
    else:
        lcs = b.lowest_common_hypernyms(synset)
        rel = (f"{b.shortest_path_distance(synset)} steps apart, via "
               f"{lcs[0].name() if lcs else '?'}")
    return {"nearest_1k": f"{wnids[i]} {imagenet_categories()[i]}", "relation": rel,
            "wup": round(float(sims[i]), 3)}


def _depths(s: Any, nxt) -> list[tuple[Any, int]]:
    """Every synset reached from ``s`` by ``nxt``, with its fewest steps."""
    seen, frontier, out, d = {s}, [s], [], 0
    while frontier:
        d += 1
        frontier = [n for f in frontier for n in nxt(f) if n not in seen and not seen.add(n)]
        out += [(n, d) for n in frontier]
    return out


def imagenet_overlap(names: Sequence[str], synsets: Sequence[Any | None] | None = None,
                     wn: Any | None = None) -> list[dict[str, Any]]:
    """Per class: ``{"class", "imagenet" (bool), "name_match", "wordnet_match", "reasons"}``,
    and, for a class WordNet knows, its nearest ImageNet-1K class (:func:`nearest_1k`).

    ``synsets``: one per name (:func:`~devise_utils.study.semantics.class_synsets`, which
    honours a ``class_synsets.txt``); default: the first noun sense of each name. A class
    WordNet does not know is checked by name only (its reasons say so).
    """
    from .semantics import class_synsets, wordnet

    names = list(names)
    if synsets is None:  # WordNet is needed only to find the synsets
        synsets = class_synsets(names, None, wn or wordnet())
    if any(s is not None for s in synsets):
        wn = wn or wordnet()
    if len(synsets) != len(names):
        raise ValueError(f"synsets has {len(synsets)} entries for {len(names)} names")
    cats = _lookups()[0]
    out = []
    for name, syn in zip(names, synsets):
        reasons = []
        name_match = _norm(name) in cats
        if name_match:
            reasons.append(f"name '{_norm(name)}' is ImageNet category {cats[_norm(name)]}")
        wn_reasons = _wordnet_matches(name, syn) if syn is not None else []
        reasons += wn_reasons or ([] if syn is not None else ["not in WordNet: name check only"])
        out.append({"class": name, "imagenet": bool(name_match or wn_reasons),
                    "name_match": name_match, "wordnet_match": bool(wn_reasons),
                    "reasons": reasons, **(nearest_1k(syn, wn) if syn is not None else {})})
    return out
