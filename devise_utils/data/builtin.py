"""The built-in synthetic dataset: a tiny "Animals with Attributes" made of coloured shapes.

It exists so the whole study runs end to end in minutes on a laptop CPU with
nothing downloaded, and so zero-shot transfer is *genuinely* learnable, like in
the real AwA2: every class is a combination of visible attributes (body colour x
pattern x shape) and every unseen class is a NEW combination of attribute values
that all occur among the seen classes. The word vectors mirror fastText: each
attribute word is a random unit vector and a class vector is the normalised sum
of its attribute words plus a little noise (as "zebra" ~ "striped" + "horse"),
so a model that learns to see "striped" can place an unseen striped class.

The folder has the exact AwA2 layout (``classes.txt``, ``trainclasses.txt``,
``testclasses.txt``, ``predicates.txt``, ``predicate-matrix-*.txt``,
``JPEGImages/<class>/<class>_<n>.jpg``) plus ``vectors.vec`` (fastText text
format, 300-d), so every other module treats it like AwA2. Everything is a
function of the seed: re-generating gives the same bytes.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from devise_utils.core.errors import DataError

#: Bump when the generator's output changes, so old folders are regenerated.
GENERATOR_VERSION = 4
MARKER = "builtin.json"
#: Words for "any animal" in the built-in vocabulary.
GENERIC = ("animal", "creature", "beast")

#: Attribute family -> values. Classes are combinations of one value a family.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "yellow", "green", "blue"),
    "pattern": ("solid", "striped", "spotted"),
    "shape": ("round", "square", "triangle"),
}
_HUES = {"red": 0.0, "yellow": 0.15, "green": 0.33, "blue": 0.61}  # far apart on the wheel

DIM = 300
IMAGE_SIZE = 96
N_SEEN, N_UNSEEN = 18, 6
PER_CLASS = (50, 60)          # images a class, inclusive range
N_DISTRACTORS = 300           # extra vocabulary for tag generation and text search


@dataclass(frozen=True)
class Design:
    """Which classes exist, what they look like and how they are split (no pixels)."""

    classes: tuple[str, ...]                 # classes.txt order
    attributes: dict[str, dict[str, str]]    # class -> family -> value
    train: tuple[str, ...]                   # seen
    test: tuple[str, ...]                    # unseen


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """Independent, stable random streams, so changing one part never shifts another."""
    return np.random.default_rng([seed, *stream])


def _names(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """Invented, pronounceable, single-token lowercase names (``vakomi``, ``zelun``)."""
    cons, vows, ends = "bdfgklmnprstvz", "aeiou", "nrlsk"
    out: list[str] = []
    while len(out) < n:
        syll = [rng.choice(list(cons)) + rng.choice(list(vows)) for _ in range(rng.integers(2, 4))]
        name = "".join(syll) + (rng.choice(list(ends)) if rng.random() < 0.4 else "")
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def _pairs(combos: list[tuple[str, ...]]) -> set[tuple[str, str]]:
    return {pair for c in combos for pair in itertools.combinations(c, 2)}


def design(seed: int = 0, n_seen: int = N_SEEN, n_unseen: int = N_UNSEEN) -> Design:
    """Pick the seen and unseen attribute combinations and name them.

    Combinations are drawn until every attribute value occurs in at least two
    seen classes and every pair of values from two families (``striped`` with
    ``square``, ``red`` with ``round`` ...) occurs in some seen class. So each
    unseen class is a new combination of seen parts, and no attribute is
    confounded with another among the seen classes (if every seen square were
    striped, a model could learn "square" as "striped").
    """
    combos = list(itertools.product(*ATTRIBUTES.values()))
    if n_seen + n_unseen > len(combos):
        raise ValueError(f"only {len(combos)} attribute combinations exist; "
                         f"asked for {n_seen} seen + {n_unseen} unseen classes")
    all_pairs = _pairs(combos)
    rng = _rng(seed, 1)
    for _ in range(100_000):
        order = rng.permutation(len(combos))
        unseen = [combos[i] for i in order[:n_unseen]]
        seen = [combos[i] for i in order[n_unseen:n_unseen + n_seen]]
        counts = {v: sum(v in c for c in seen) for vals in ATTRIBUTES.values() for v in vals}
        if min(counts.values()) >= 2 and _pairs(seen) == all_pairs:
            break
    else:
        raise ValueError(f"{n_seen} seen classes cannot cover every pair of attribute values; "
                         "use more seen classes")
    names = _names(rng, n_seen + n_unseen, {v for vals in ATTRIBUTES.values() for v in vals})
    fams = list(ATTRIBUTES)
    attrs = {n: dict(zip(fams, c)) for n, c in zip(names, seen + unseen)}
    train, test = names[:n_seen], names[n_seen:]
    classes = [names[i] for i in rng.permutation(len(names))]  # mixed, like AwA2's classes.txt
    return Design(tuple(classes), attrs, tuple(train), tuple(test))


def class_attributes(seed: int = 0) -> dict[str, dict[str, str]]:
    """Each built-in class's attributes, e.g. ``{"vakomi": {"colour": "red", ...}}``."""
    return design(seed).attributes


def _vectors(d: Design, seed: int) -> tuple[list[str], np.ndarray]:
    """Attribute words, class names and distractors with fastText-like geometry."""
    rng = _rng(seed, 2)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    attr_words = [v for vals in ATTRIBUTES.values() for v in vals]
    attr = dict(zip(attr_words, unit(rng.standard_normal((len(attr_words), DIM)))))
    noise = 0.6 / np.sqrt(DIM)  # |noise| ~ 0.6 against |sum of 3 attributes| ~ 1.7
    cls = [unit(sum(attr[v] for v in d.attributes[c].values())
                + noise * rng.standard_normal(DIM)) for c in d.classes]
    taken = set(attr_words) | set(d.classes) | set(GENERIC)
    extra = _names(_rng(seed, 4), N_DISTRACTORS, taken)
    # Distractors lean a little towards one attribute each, so the vocabulary has structure.
    lean = rng.uniform(0, 0.6, N_DISTRACTORS)[:, None]
    pick = np.stack([attr[attr_words[i]] for i in rng.integers(0, len(attr_words), N_DISTRACTORS)])
    dis = unit(unit(rng.standard_normal((N_DISTRACTORS, DIM))) + lean * pick)
    # Generic words sit near the mean of the class vectors (as fastText's "animal" is near
    # every animal), so queries such as "a striped animal" work on the built-in vocabulary.
    gen = unit(np.mean(cls, 0) + noise * _rng(seed, 5).standard_normal((len(GENERIC), DIM)))
    words = attr_words + list(d.classes) + extra + list(GENERIC)
    return words, np.concatenate([np.stack(list(attr.values())), np.stack(cls), dis, gen])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = Image.new("HSV", (1, 1), (int(h % 1 * 255), int(s * 255), int(v * 255))).convert("RGB")
    return np.asarray(rgb, dtype=np.float32).reshape(3) / 255


def _outline(shape: str) -> np.ndarray:
    """Unit-size polygon (k, 2) of about equal area for every shape (size is not a cue)."""
    if shape == "round":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        return 0.87 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    if shape == "triangle":  # pointing up, centred on its centroid
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return 1.4 * np.stack([np.cos(t), np.sin(t)], 1)
    raise ValueError(f"unknown shape {shape!r}; expected one of {ATTRIBUTES['shape']}")


@functools.lru_cache(maxsize=4)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    return xx, yy


def _shrink(mask: Image.Image, size: int) -> np.ndarray:
    """A 2x-drawn mask box-downsampled to ``size`` (anti-aliased edges), (size, size, 1)."""
    m = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(m, dtype=np.float32)[..., None] / 255


def render(colour: str, pattern: str, shape: str, rng: np.random.Generator,
           size: int = IMAGE_SIZE) -> Image.Image:
    """One image: a patterned, coloured shape at a random place, size and angle on texture.

    Masks are drawn at 2x and box-downsampled (anti-aliased edges); colours are
    composed at 1x, which keeps generation to about two milliseconds an image.
    """
    s = 2 * size
    xx, yy = _grid(s)

    # Background: desaturated colour, low-frequency blotches, brightness varies.
    base = _hsv(rng.random(), rng.uniform(0, 0.2), rng.uniform(0.3, 0.85))
    low = Image.fromarray(rng.standard_normal((6, 6)).astype(np.float32), "F")
    low = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC))
    bg = base * (1 + 0.15 * low[..., None])

    # Shape: random centre, radius and rotation (in 2x pixels).
    r = rng.uniform(0.26, 0.36) * s
    cx, cy = (float(c) for c in rng.uniform(r, s - r, 2))  # may crop a corner
    a = rng.uniform(-0.25, 0.25)  # about upright (+-15 deg), as animals are in photos
    ca, sa = float(np.cos(a)), float(np.sin(a))  # Python floats keep the arrays float32
    rot = np.array([[ca, -sa], [sa, ca]])
    pts = _outline(shape) @ rot.T * r + [cx, cy]
    shape_img = Image.new("L", (s, s))
    ImageDraw.Draw(shape_img).polygon([tuple(p) for p in pts], fill=255)
    mask = _shrink(shape_img, size)

    # Pattern in the shape's own frame: dark stripes or dark spots.
    if pattern == "striped":
        b = a + rng.uniform(0, np.pi)
        period = rng.uniform(0.32, 0.45) * r
        w = ((xx - cx) * float(np.cos(b)) + (yy - cy) * float(np.sin(b))) / period + rng.random()
        ink = _shrink(Image.fromarray((w - np.floor(w) < 0.45).astype(np.uint8) * 255), size)
    elif pattern == "spotted":
        gap, rad = rng.uniform(0.45, 0.6) * r, rng.uniform(0.13, 0.18) * r
        spots = Image.new("L", (s, s))
        draw = ImageDraw.Draw(spots)
        grid = np.arange(-1.5 * r, 1.5 * r + 1, gap)
        for gu, gv in itertools.product(grid, grid):
            gu, gv = gu + rng.uniform(-0.2, 0.2) * gap, gv + rng.uniform(-0.2, 0.2) * gap
            px, py = cx + gu * ca - gv * sa, cy + gu * sa + gv * ca
            draw.ellipse([px - rad, py - rad, px + rad, py + rad], fill=255)
        ink = _shrink(spots, size)
    elif pattern == "solid":
        ink = np.zeros((size, size, 1), np.float32)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {ATTRIBUTES['pattern']}")

    body = _hsv(_HUES[colour] + rng.uniform(-0.025, 0.025), rng.uniform(0.7, 1.0),
                rng.uniform(0.7, 1.0))
    x1, y1 = _grid(size)
    u = ((x1 * 2 - cx) * ca + (y1 * 2 - cy) * sa) / r  # position across the shape
    shade = 1 + 0.15 * rng.uniform(-1, 1) * u[..., None]
    fg = body * shade * (1 - ink * (1 - rng.uniform(0.1, 0.25)))
    img = bg * (1 - mask) + fg * mask
    img *= rng.uniform(0.8, 1.2)
    img += rng.uniform(0.01, 0.04) * rng.standard_normal(img.shape, dtype=np.float32)
    return Image.fromarray((img.clip(0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def generate(root: str | Path, seed: int = 0, *, per_class: tuple[int, int] = PER_CLASS,
             image_size: int = IMAGE_SIZE, n_seen: int = N_SEEN,
             n_unseen: int = N_UNSEEN) -> Path:
    """Write the dataset into ``root`` (created; not atomic, see :func:`ensure_builtin`)."""
    root = Path(root)
    d = design(seed, n_seen, n_unseen)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "classes.txt", "".join(f"{i}\t{c}\n" for i, c in enumerate(d.classes, 1)))
    _write(root / "trainclasses.txt", "".join(f"{c}\n" for c in d.train))
    _write(root / "testclasses.txt", "".join(f"{c}\n" for c in d.test))
    preds = [v for vals in ATTRIBUTES.values() for v in vals]
    _write(root / "predicates.txt", "".join(f"{i}\t{p}\n" for i, p in enumerate(preds, 1)))
    binary = np.array([[int(p in d.attributes[c].values()) for p in preds] for c in d.classes])
    # Continuous strengths as AwA2 has them (0-100): high where present, low elsewhere.
    prng = _rng(seed, 5)
    cont = np.where(binary, prng.uniform(60, 100, binary.shape), prng.uniform(0, 15, binary.shape))
    _write(root / "predicate-matrix-binary.txt",
           "".join(" ".join(map(str, row)) + "\n" for row in binary))
    _write(root / "predicate-matrix-continuous.txt",
           "".join(" ".join(f"{x:.2f}" for x in row) + "\n" for row in cont))

    words, vecs = _vectors(d, seed)
    with open(root / "vectors.vec", "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {DIM}\n")
        for w, v in zip(words, vecs):
            f.write(w + " " + " ".join(f"{x:.5f}" for x in v) + "\n")

    for ci, c in enumerate(d.classes):
        folder = root / "JPEGImages" / c
        folder.mkdir(parents=True, exist_ok=True)
        n = int(_rng(seed, 3, ci).integers(per_class[0], per_class[1] + 1))
        for k in range(n):
            img = render(**d.attributes[c], rng=_rng(seed, 3, ci, k), size=image_size)
            img.save(folder / f"{c}_{10001 + k}.jpg", quality=90)
    return root


def _marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_current(root: Path, seed: int) -> bool:
    m = _marker(root)
    return bool(m) and m.get("version") == GENERATOR_VERSION and m.get("seed") == seed


def ensure_builtin(root: str | Path, seed: int = 0) -> Path:
    """The built-in dataset at ``root``, generated first if absent or stale (a few seconds).

    Built in a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never leaves a half-written dataset that looks complete.
    """
    root = Path(root)
    if _is_current(root, seed):
        return root
    if root.exists() and _marker(root) is None and any(root.iterdir()):
        raise DataError(f"{root} exists but is not a built-in dataset (no {MARKER}); "
                        "move it away or choose another data dir")
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating the built-in dataset (seed {seed}) in {root} ...", flush=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is not
        generate(tmp, seed)
        d = design(seed)
        _write(tmp / MARKER, json.dumps({
            "generator": "devise_utils.data.builtin", "version": GENERATOR_VERSION, "seed": seed,
            "attributes": {c: d.attributes[c] for c in d.classes}}, indent=1))
        if _is_current(root, seed):  # a concurrent twin finished first
            return root
        if root.exists():  # an older version or another seed: replace it
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_current(root, seed):  # not a concurrent twin that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"built-in dataset ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return root
