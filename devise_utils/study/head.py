"""A zero-shot method as a plain image model plus a small head: what label, tag and the
export use, so the method chosen on held-out seen classes is the one users get.

Every method scores an image against a class as ``score(g(f(x)), r_c)``: ``f`` is one feature
model (``FEATURES``: Stage II's embedding, Stage I's logits or penultimate features, the
frozen backbone's pooled features), ``g`` a fixed map of its output (an affine map, or
ConSE's convex combination) and ``r_c`` a row made from the class's semantics. The head
keeps ``g`` and how rows are made, so a class the run never had gets a row without
training (``rows_from``):

- ``words``: the class's unit semantics (DeViSE, ConSE and the linear map: its name's word
  vector; ESZSL: the semantics it was fitted on);
- ``ridge``: EXEM's kernel ridge prediction from the seen classes' semantics (a seen class
  keeps its own prototype);
- ``fixed``: the run's classes only (the graph method: a new class needs a new graph);
- ``basis``: ConSE over the pretrained network's 1,000 ImageNet classes: a row is the chosen
  kernel between those classes and the name's synset (WordNet, and word vectors when the
  kernel has them: :mod:`~devise_utils.study.basis1k`); ``keep`` marks the basis classes
  used (a run's head drops its unseen classes' own 1K classes, as it was scored).

Pure NumPy (no torch): the exported feature model and this head run on a phone or in
``label`` without the training stack; only a ``basis`` head whose kernel reads glosses needs
the sentence encoder (sentence-transformers, torch) to make rows for names. :func:`fit_head`
builds one from a trained run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devise_utils.core.files import atomic_write
from devise_utils.data.vectors import load_vectors
from devise_utils.study import semantics as S_
from devise_utils.study import transfer as T

#: The feature model a head reads: the Stage II embedder, Stage I's logits, Stage I's
#: penultimate features, or the pretrained backbone's pooled features (not fine-tuned).
FEATURES = ("stage2", "stage1_logits", "stage1_penultimate", "backbone", "imagenet_logits")
ROWS_FROM = ("words", "ridge", "fixed", "basis")
#: Bumped when the saved layout changes.
HEAD_FORMAT = 1
_ARRAYS = ("mean", "scale", "M", "c", "seen_vecs", "S_seen", "T_seen", "rows", "keep",
           "basis_vecs")


@dataclass
class ZeroShotHead:
    """One method's image map and class rows (see the module docstring)."""

    method: str
    features: str
    metric: str = "cosine"
    rows_from: str = "words"
    semantics: str = "name"
    mean: np.ndarray | None = None      # g(f) = ((f - mean) / scale) @ M + c
    scale: np.ndarray | None = None
    M: np.ndarray | None = None
    c: np.ndarray | None = None
    conse_top: int = 0                  # > 0: g = ConSE over softmax(f), the seen vectors
    seen: list[str] = field(default_factory=list)
    seen_vecs: np.ndarray | None = None
    S_seen: np.ndarray | None = None    # ridge: seen semantics -> their prototypes T_seen
    T_seen: np.ndarray | None = None
    ridge: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)   # fixed: the classes of ``rows``
    rows: np.ndarray | None = None
    kernel: str = ""                    # basis: the kernel's parts (basis1k.KERNELS)
    keep: np.ndarray | None = None      # basis: which of the 1,000 classes are used
    basis_vecs: np.ndarray | None = None  # basis + words kernel: the classes' lemma vectors
    image_size: int = 0                 # > 0: the feature model reads photos at this size
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.rows_from not in ROWS_FROM:
            raise ValueError(f"rows_from must be one of {ROWS_FROM}, got {self.rows_from!r}")

    @property
    def semantic_dim(self) -> int | None:
        """The word-vector dimension its class rows need (None: any, or rows are fixed)."""
        if self.rows_from == "basis":
            return None if self.basis_vecs is None else int(self.basis_vecs.shape[1])
        if self.rows_from == "ridge":
            return int(self.S_seen.shape[1])
        if self.rows_from == "words" and self.conse_top:
            return int(self.seen_vecs.shape[1])
        if self.rows_from == "words" and self.M is not None:
            return int(self.M.shape[1])
        return None

    @property
    def parts(self) -> list[str]:
        """The semantics parts a class row needs (``name``, WordNet parts)."""
        return self.semantics.split("+")

    def image_vectors(self, F: np.ndarray) -> np.ndarray:
        """The method's image vectors ``g(f)`` of raw feature-model outputs ``F`` (n, d)."""
        F = np.asarray(F, np.float64)
        if self.rows_from == "basis":
            from devise_utils.study.basis1k import conse_weights

            return conse_weights(F, self.keep, self.conse_top).astype(np.float32)
        if self.conse_top:
            from devise_utils.study.baselines import conse_embed  # scikit-learn: only here

            z = F - F.max(1, keepdims=True)
            p = np.exp(z)
            return conse_embed(p / p.sum(1, keepdims=True), self.seen_vecs, self.conse_top)
        if self.mean is not None:
            F = (F - self.mean) / self.scale
        if self.M is not None:
            F = F @ self.M
        if self.c is not None:
            F = F + self.c
        return F.astype(np.float32)

    def class_rows(self, names: Sequence[str], semantics: np.ndarray | None = None
                   ) -> np.ndarray:
        """One row per name. ``semantics``: the names' class semantics (``parts``), needed
        unless ``rows_from`` is ``fixed``; a ``ridge`` head keeps a seen class's own row."""
        names = list(names)
        if self.rows_from == "basis":
            raise ValueError("a basis head's rows come from WordNet: use rows_for(head, names, "
                             "word_vectors)")
        if self.rows_from == "fixed":
            missing = [n for n in names if n not in self.classes]
            if missing:
                raise ValueError(
                    f"the {self.method} head has rows for its run's {len(self.classes)} "
                    f"classes only, not {missing}: a new class needs a new WordNet graph; "
                    "export with --method prototypes (or another method) for new names")
            return self.rows[[self.classes.index(n) for n in names]]
        if semantics is None or len(semantics) != len(names):
            raise ValueError(f"class_rows needs one semantics row per name ({len(names)})")
        S = np.asarray(semantics, np.float64)
        if self.rows_from == "words":
            return S.astype(np.float32)
        rows = T.ridge_transfer(self.S_seen, self.T_seen, S, **self.ridge)
        for i, n in enumerate(names):
            if n in self.seen:
                rows[i] = self.T_seen[self.seen.index(n)]
        return rows.astype(np.float32)

    def scores(self, G: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(n, C) scores of image vectors against class rows (the method's metric)."""
        return T.prototype_scores(G, rows, self.metric)

    # -- files ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """One ``.npz`` (arrays, and the rest as JSON), written atomically."""
        meta = {k: v for k, v in asdict(self).items() if k not in _ARRAYS}
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, _meta=np.array(json.dumps({"format": HEAD_FORMAT, **meta})),
                         **arrays)
        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> ZeroShotHead:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["_meta"]))
                arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path} is not a zero-shot head ({e}); export it again with "
                             "`python -m devise_utils export`") from e
        if meta.pop("format", None) != HEAD_FORMAT:
            raise ValueError(f"{path} is a head of another format; export it again")
        return cls(**meta, **arrays)


def rows_for(head: ZeroShotHead, names: Sequence[str], word_vectors: Any,
             class_synsets: str | Path | None = None) -> np.ndarray:
    """The head's rows of ``names``: their semantics (the name's word vector, plus the
    WordNet parts the head was fitted with: nltk's WordNet, the first noun sense unless the
    run's or ``class_synsets``' class -> wnid lines name another) turned into rows.
    ``word_vectors``: a :class:`~devise_utils.data.vectors.WordVectors` with the names (and,
    for WordNet parts, the words of their synsets: :func:`words_needed`)."""
    if head.rows_from == "fixed":
        return head.class_rows(names)
    if head.rows_from == "basis":
        return _basis_rows(head, names, word_vectors, class_synsets)
    wanted = head.parts
    if wanted == ["name"]:
        return head.class_rows(names, S_.class_semantics(names, word_vectors))
    synsets = _synsets(head, names, class_synsets)
    return head.class_rows(names, S_.class_semantics(names, word_vectors, wanted, synsets))


def _basis_rows(head: ZeroShotHead, names: Sequence[str], word_vectors: Any,
                class_synsets: str | Path | None) -> np.ndarray:
    """The kernel columns of ``names`` against the 1,000 basis classes, as the run made them."""
    from devise_utils.study import basis1k as B

    synsets = _synsets(head, names, class_synsets)
    unknown = [n for n, s in zip(names, synsets) if s is None]
    if unknown:
        raise ValueError(f"no WordNet noun synset for {unknown}: the {head.method} head rates "
                         "a class by its synset; use a WordNet noun, or give its wnid "
                         "(n02084071) as the name or in --class-synsets")
    parts = head.kernel.split("+")
    K = B.kernels_for(names, synsets, B.basis_synsets(S_.wordnet()),
                      word_vectors if "words" in parts else None, head.basis_vecs,
                      gloss="gloss" in parts)
    return B.combined(head.kernel, K, head.keep).T.astype(np.float32)


def words_needed(head: ZeroShotHead, names: Sequence[str],
                 class_synsets: str | Path | None = None) -> list[str]:
    """The extra words (beyond the names) whose vectors :func:`rows_for` reads."""
    if head.rows_from == "basis":
        from devise_utils.study.basis1k import synset_words

        return sorted({w for n, s in zip(names, _synsets(head, names, class_synsets))
                       if s is not None for w in synset_words(s, n)})
    wn_parts = [p for p in head.parts if p != "name"]
    if not wn_parts or head.rows_from == "fixed":
        return []
    return sorted({w for s in _synsets(head, names, class_synsets) if s is not None
                   for ws in S_.semantic_words(s, wn_parts).values() for w in ws})


def _synsets(head: ZeroShotHead, names: Sequence[str], class_synsets: str | Path | None
             ) -> list[Any]:
    wn = S_.wordnet()
    overrides = dict(head.info.get("synset_overrides") or {})
    if class_synsets:
        overrides.update(S_.read_class_synsets(str(class_synsets), wn))
    return S_.class_synsets(list(names), overrides, wn)


# --- fitting one from a trained run ----------------------------------------------------------

def _compose(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """((f - m1) / s1 - m2) / s2 as one (f - mean) / scale."""
    return m1 + s1 * m2, s1 * s2


def _overrides(run: Any) -> dict[str, str]:
    """The run's class -> wnid lines (``class_synsets``), kept in the head so its own
    classes get the same synsets wherever it is used."""
    path = run.synsets_file
    if path is None or run.class_space["synsets"] is None:
        return {}
    classes = set(run.data.classes)  # the shipped AwA2 file lists all 50; keep the run's
    return {c: w for c, w in S_.read_class_synsets(str(path)).items() if c in classes}


def fit_head(run: Any, method: str) -> ZeroShotHead:
    """The head of ``method`` (a key of the run's metrics: ``devise``, ``conse``, ``linear``,
    ``prototypes``, ``eszsl``, ``gcn``, each transfer method also ``*_backbone``), fitted
    exactly as the run scores it: on its train images of the seen classes, with the choices
    its metrics record (:meth:`Run.chosen`; before there are metrics, chosen anew by leaving
    seen classes out). Reads the run's cached features; trains nothing."""
    from devise_utils.study.baselines import fit_linear_map
    from devise_utils.study.methods import (
        backbone_space,
        eszsl_method,
        gcn_method,
        prototype_method,
    )

    exp, cfg = run.data, run.cfg
    seen, n = list(exp.seen), len(exp.seen)
    common = {"method": method, "info": {"run_key": cfg.key(), "classes": list(exp.classes)}}
    if method == "devise":
        return ZeroShotHead(features="stage2", **common)
    if method == "conse":
        return ZeroShotHead(features="stage1_logits", conse_top=cfg.conse_top, seen=seen,
                            seen_vecs=np.asarray(exp.class_vectors(seen), np.float64),
                            **common)
    if method == "conse_1k":
        return _basis_head(run, common)
    if method == "linear":
        train = run.features.of("train")
        lm = fit_linear_map(train.X, train.labels(seen), exp.class_vectors(seen),
                            seed=cfg.seed)
        return ZeroShotHead(features="backbone", mean=lm.mean, scale=lm.scale, M=lm.W, c=lm.b,
                            **common)
    base, backbone = method.removesuffix("_backbone"), method.endswith("_backbone")
    if base not in ("prototypes", "eszsl", "gcn"):
        raise ValueError(f"unknown method {method!r}")
    if backbone:
        m1, s1 = T.standardizer(run.features.of("train").X)  # as backbone_space standardises
        feats, W = backbone_space(run.features, seen)
        kind = "backbone"
    else:
        from devise_utils.model.backbones import last_layer  # torch: only to fit, not to use

        feats, W = run.penultimate, last_layer(run.stage1.model())[1]
        m1, s1 = np.zeros(feats.X.shape[1]), np.ones(feats.X.shape[1])
        kind = "stage1_penultimate"
    space = run.class_space
    S = space["S"]
    common["semantics"] = cfg.semantics
    common["info"]["synset_overrides"] = _overrides(run)
    if base == "gcn":
        if space["adjacency"] is None:
            raise ValueError(f"no graph method for this run: {space['why_no_graph']}")
        _, rows, chosen = gcn_method(feats, seen, W, space["adjacency"], space["node_vecs"],
                                     len(exp.classes), cfg.seed)
        return ZeroShotHead(features=kind, mean=m1, scale=s1, rows_from="fixed",
                            classes=list(exp.classes), rows=rows,
                            **{**common, "info": {**common["info"], "chosen": chosen}})
    train = feats.of("train")
    m2, s2 = T.standardizer(train.X)
    if base == "eszsl":
        _, _, chosen = eszsl_method(feats, seen, S, run.chosen(method))
        X = (train.X - m2) / s2
        V = T.eszsl_fit(X, train.labels(seen), S[:n], gamma=chosen["gamma"],
                        lam=chosen["lam"])
        mean, scale = _compose(m1, s1, m2, s2)
        return ZeroShotHead(features=kind, mean=mean, scale=scale, M=V,
                            **{**common, "info": {**common["info"], "chosen": chosen}})
    _, rows, chosen = prototype_method(feats, seen, S, W, run.chosen(method))
    mean, scale = _compose(m1, s1, m2, s2) if chosen["target"] == "centres" else (m1, s1)
    ridge = {k: chosen[k] for k in ("lam", "kernel", "gamma")}
    return ZeroShotHead(features=kind, metric=chosen["metric"], rows_from="ridge",
                        mean=mean, scale=scale, seen=seen, S_seen=S[:n], T_seen=rows[:n],
                        ridge=ridge, **{**common, "info": {**common["info"], "chosen": chosen}})


def _basis_head(run: Any, common: dict[str, Any]) -> ZeroShotHead:
    """ConSE over the 1K basis as the run scored it (its choice, its unseen classes out)."""
    from devise_utils.study import basis1k as B
    from devise_utils.study.methods import basis_method

    exp = run.data
    _, _, chosen = basis_method(run.imagenet_logits, exp.seen, exp.unseen,
                                run.class_space["synsets"], run.basis_kernels, run.cfg.seed,
                                run.chosen("conse_1k"))
    keep = np.ones(1000, bool)
    keep[[r["index"] for r in chosen["excluded_1k"]]] = False
    vecs = None
    if "words" in chosen["kernel"].split("+"):
        basis = B.basis_synsets(S_.wordnet())
        wv = load_vectors(exp.vectors_path, words=exp.classes, hash_file=False,
                          optional=sorted({w for ws in B.basis_words(basis) for w in ws}))
        vecs = B.basis_vectors(basis, wv)
    common["info"]["synset_overrides"] = _overrides(run)
    return ZeroShotHead(features="imagenet_logits", metric="dot", rows_from="basis",
                        conse_top=chosen["T"], kernel=chosen["kernel"], keep=keep,
                        basis_vecs=vecs, image_size=B.BASIS_IMAGE_SIZE,
                        **{**common, "info": {**common["info"], "chosen": chosen}})
