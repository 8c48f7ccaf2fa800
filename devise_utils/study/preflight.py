"""Pre-flight: every input a configuration names, checked cheaply before anything is trained.

The pipeline calls :func:`preflight` before its first notebook and :class:`Run` when it is
made, so a bad weights file, vector file or dataset is refused in seconds with an error that
names the file and the fix, instead of minutes later in the middle of a notebook. Each check
lives beside the code that reads that input (``data/awa2.py``, ``data/vectors.py``,
``model/backbones.py``); this module only decides what a config needs. It lives in ``study``
because that is the first layer that sees both the data and the model (as :class:`Run` does).

What it costs: reading the split files and listing the image folders, decoding one photo a
class, one pass over the vector file, ``torch.load(weights_only=True)`` of the weights
compared with a meta-device model. The result is remembered per process for the same files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from devise_utils.core.config import Config, ConfigError
from devise_utils.core.errors import DataError
from devise_utils.data.awa2 import (
    check_readable,
    dataset_root,
    default_vectors,
    read_awa2,
    seen_unseen,
)
from devise_utils.data.vectors import check_class_vectors, load_vectors
from devise_utils.model.backbones import WeightsUnavailableError, check_weights, weights_for
from devise_utils.study import semantics

#: What the pipeline reports as bad input (exit code 2, the message alone) and not as a crash.
INPUT_ERRORS = (ConfigError, DataError, WeightsUnavailableError)
#: A dataset folder's optional class -> WordNet id file (study/semantics.py reads it).
CLASS_SYNSETS = "class_synsets.txt"
#: AwA2's 50 classes, each with its checked synset (the animal, never sealing wax).
AWA2_SYNSETS = Path(__file__).with_name("awa2_class_synsets.txt")


@dataclass(frozen=True)
class Checked:
    """What pre-flight found: the dataset, the classes on each side, the vectors' dimension."""

    root: Path
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    vectors: Path
    dim: int


_DONE: dict[str, Checked] = {}


def _stamp(path: Path) -> list:
    try:
        s = path.stat()
        return [str(path), s.st_size, s.st_mtime_ns]
    except OSError:
        return [str(path), None]


def weights_needed(cfg: Config, study: bool = False) -> list[tuple[str, str]]:
    """(backbone, weights) pairs ``cfg`` trains; ``study``: also every backbone the
    comparison notebooks train, each with the weights it gets there."""
    pairs = [(cfg.backbone, cfg.weights)]
    if study:

        pairs += [(b, weights_for(b, cfg)) for b in cfg.compare_backbones]
    return list(dict.fromkeys(pairs))


def _key(*parts: object, files: list[Path]) -> str:
    return json.dumps([*parts, [_stamp(f) for f in files]], default=str)


def preflight(cfg: Config, *, study: bool = False) -> Checked:
    """Check the weights, dataset and word vectors ``cfg`` names (``study``: also the weights
    of every compared backbone). Raises one of :data:`INPUT_ERRORS`, naming the file or
    parameter and the fix. Trains and writes nothing, except that the built-in dataset is
    generated on first use, as reading it would."""
    pairs = weights_needed(cfg, study)
    wkey = _key(pairs, files=[Path(w) for _, w in pairs if w not in ("none", "imagenet")])
    if wkey not in _DONE:  # first: the weights need no dataset (the built-in one is made)
        for backbone, weights in pairs:
            check_weights(backbone, weights)
    root, vpath = dataset_root(cfg), default_vectors(cfg)
    key = _key(wkey, cfg.split, cfg.semantics, files=[
        vpath, root / "classes.txt", root / "trainclasses.txt", root / "testclasses.txt",
        root / "JPEGImages", synsets_file(cfg, root)])
    if key in _DONE:
        return _DONE[key]
    ds = read_awa2(root)
    seen, unseen = seen_unseen(ds, cfg.split)
    check_readable(ds, seen + unseen)
    if not vpath.is_file():
        raise ConfigError(f"parameter 'vectors': word-vector file {vpath} does not exist; pass "
                          "--vectors FILE or run `python -m devise_utils download fasttext`")
    wv = load_vectors(vpath, words=seen + unseen)
    check_class_vectors(wv, seen + unseen)
    check_semantics(cfg, root, ds.classes)
    _DONE[key] = _DONE[wkey] = Checked(root, tuple(seen), tuple(unseen), vpath, wv.dim)
    return _DONE[key]


def wordnet_missing() -> str | None:
    """Why nltk cannot find WordNet 3.0 (None when it can), without loading it."""
    import nltk

    for name in ("corpora/wordnet.zip/wordnet/", "corpora/wordnet"):
        try:
            nltk.data.find(name)
            return None
        except LookupError:
            continue
    return ("WordNet is not installed for nltk (looked in: " + ", ".join(nltk.data.path)
            + "); run `python -c \"import nltk; nltk.download('wordnet')\"` or set NLTK_DATA "
            "to a folder holding corpora/wordnet.zip")


def synsets_file(cfg: Config, root: Path, classes: Sequence[str] = ()) -> Path:
    """The class -> WordNet id file a config reads: ``class_synsets``, else the dataset's,
    else, for AwA2's classes, the checked file the package ships (``AWA2_SYNSETS``)."""
    if cfg.class_synsets:
        return Path(cfg.class_synsets)
    own = root / CLASS_SYNSETS
    if not own.is_file() and classes and set(classes) <= awa2_classes():
        return AWA2_SYNSETS
    return own


@lru_cache(maxsize=1)
def awa2_classes() -> frozenset[str]:
    return frozenset(ln.split("#", 1)[0].split()[0]
                     for ln in AWA2_SYNSETS.read_text(encoding="utf-8").splitlines()
                     if ln.split("#", 1)[0].strip())


def check_semantics(cfg: Config, root: Path, classes: list[str]) -> None:
    """The transfer methods' class semantics: known parts, WordNet where the parts need it,
    and a class_synsets file of real WordNet 3.0 ids for known classes."""
    parts = cfg.semantics.split("+")
    unknown = [p for p in parts if p not in semantics.PARTS]
    if unknown:
        raise ConfigError(f"parameter 'semantics': unknown part(s) {', '.join(unknown)}; join "
                          f"parts of {', '.join(semantics.PARTS)} with '+', e.g. 'name+gloss'")
    path = synsets_file(cfg, root, classes)
    if cfg.class_synsets and not path.is_file():
        raise ConfigError(f"parameter 'class_synsets': {path} is not a file; give a "
                          f"class<TAB>wnid file, or leave it unset to read {root / CLASS_SYNSETS}")
    missing = wordnet_missing()
    if missing and parts != ["name"]:
        raise DataError(f"parameter 'semantics' is {cfg.semantics!r}, which needs WordNet: "
                        + missing)
    if missing or not path.is_file():  # the class names alone need no WordNet
        return
    try:
        synsets = semantics.read_class_synsets(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8") from None
    except (ValueError, LookupError) as e:  # an unknown wnid, a bad line
        if isinstance(e, DataError):
            raise
        raise DataError(e.args[0] if e.args else str(e)) from e
    unknown = sorted(set(synsets) - set(classes))
    if unknown and path != AWA2_SYNSETS:  # the shipped file covers all 50; a subset may use it
        raise DataError(f"{path} names class(es) not in {root / 'classes.txt'}: "
                        f"{', '.join(unknown)}; fix the spelling or delete those lines")
