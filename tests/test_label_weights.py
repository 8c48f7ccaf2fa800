"""``label --weights``: zero-shot labels from nothing but the pretrained ImageNet network, its
own 1,000 classes and WordNet, on real photos of classes it never saw (caltech-zsl-dev)."""

from __future__ import annotations

import csv
import os

import pytest

from devise_utils.cli import main

WEIGHTS = "weights/squeezenet1_1-imagenet-onnxzoo.pth"
#: Clean unseen classes of caltech-zsl-dev (none is an ImageNet-1K class): 6 photos each.
CLASSES = ("helicopter", "menorah", "chandelier", "ibis")


@pytest.fixture()
def folder(shared, tmp_path):
    """Class folders reached through symlinks, as a gallery of links would be."""
    (tmp_path / "photos").mkdir()
    for c in CLASSES:
        src = shared / "data" / "caltech-zsl-dev" / "JPEGImages" / c
        real = tmp_path / "store" / c
        real.mkdir(parents=True)
        for p in sorted(src.iterdir())[:6]:
            os.symlink(p, real / p.name)
        os.symlink(real, tmp_path / "photos" / c)
    return tmp_path / "photos"


def test_label_weights_names_clean_unseen_photos(shared, wn, folder, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    rc = main(["label", str(folder), "--weights", str(shared / WEIGHTS), "--classes",
               ",".join(CLASSES), "-k", "2", "--csv", str(out)])
    assert rc == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * len(CLASSES)
    assert list(rows[0]) == ["path", "label", "score", "label_2", "score_2"]
    right = sum(r["label"] in r["path"].split(os.sep)[-2] for r in rows)
    assert right >= 0.5 * len(rows), rows  # chance 25 %; 15 of 24 when written
    assert "conse_1k" in capsys.readouterr().err


def test_label_weights_takes_wnids_and_refuses_unknown_names(shared, wn, folder, capsys):
    heli = f"n{wn.synsets('helicopter', pos='n')[0].offset():08d}"
    rc = main(["label", str(folder / "helicopter"), "--weights", str(shared / WEIGHTS),
               "--classes", f"{heli},menorah", "-k", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 6
    assert sum(f" {heli} " in ln for ln in lines) >= 4
    rc = main(["label", str(folder), "--weights", str(shared / WEIGHTS), "--classes",
               "helicopter,xqzzyw"])
    err = capsys.readouterr().err
    assert rc == 2 and "xqzzyw" in err and "synset" in err


def test_label_weights_refuses_a_missing_file_or_wordnet_first(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(b"")
    rc = main(["label", str(tmp_path), "--weights", str(tmp_path / "nope.pth"),
               "--classes", "emu"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    from devise_utils.study import semantics

    def missing(*a, **k):
        raise semantics.WordNetMissingError("WordNet is not installed for nltk (...)")

    monkeypatch.setattr(semantics, "wordnet", missing)
    rc = main(["label", str(tmp_path), "--weights", "imagenet", "--classes", "emu"])
    assert rc == 2 and "WordNet is not installed" in \
        capsys.readouterr().err
