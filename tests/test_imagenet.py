"""ImageNet-1K overlap check: which class names an ImageNet backbone was trained on."""

from __future__ import annotations

import re

import pytest

from devise_utils.study import imagenet as I
from devise_utils.study import semantics as S


def test_vendored_wnids_and_torchvision_categories_line_up():
    wnids, cats = I.imagenet_wnids(), I.imagenet_categories()
    assert len(wnids) == len(set(wnids)) == 1000 == len(cats)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert (wnids[0], cats[0]) == ("n01440764", "tench")
    assert cats[wnids.index("n04465501")] == "tractor"


def test_known_imagenet_classes_are_flagged(wn):
    tractor, orange = I.imagenet_overlap(["tractor", "orange"], wn=wn)
    for r in (tractor, orange):
        assert r["imagenet"] and r["name_match"] and r["wordnet_match"]
    assert any("n04465501" in why for why in tractor["reasons"])
    assert any("n07747607" in why for why in orange["reasons"])


def test_clean_classes_pass(wn):
    for r in I.imagenet_overlap(["menorah", "stapler", "helicopter", "joshua+tree"], wn=wn):
        assert not r["imagenet"] and r["reasons"] == [], r


def test_hyponyms_synonyms_and_names_unknown_to_wordnet(wn):
    dog, rooster, wild = I.imagenet_overlap(["dog", "rooster", "wild+cat"], wn=wn)
    assert dog["imagenet"] and not dog["name_match"]          # only its breeds are classes
    assert "hyponym(s) of dog.n.01" in dog["reasons"][0]
    assert rooster["imagenet"] and "'cock'" in rooster["reasons"][0]   # cock.n.04's lemma
    assert not wild["imagenet"] and "name check only" in wild["reasons"][0]
    # with its synset given, wild+cat is caught by its hyponyms (cougar, lynx are classes)
    syn = S.class_synsets(["wild+cat"], {"wild+cat": "n02124623"}, wn)
    assert I.imagenet_overlap(["wild+cat"], syn, wn)[0]["imagenet"]
    with pytest.raises(ValueError, match="entries for 2 names"):
        I.imagenet_overlap(["dog", "cat"], syn, wn)


def test_nearest_imagenet_class_and_how_it_is_related(wn):
    anchor, hawksbill, tractor = I.imagenet_overlap(["anchor", "hawksbill", "tractor"], wn=wn)
    assert not anchor["imagenet"]              # hook is its parent, not it: no overlap
    assert anchor["nearest_1k"] == "n03532672 hook" and anchor["relation"].startswith("hypernym")
    assert hawksbill["nearest_1k"].endswith("loggerhead")
    assert hawksbill["relation"] == "sibling (same parent)"
    assert (tractor["relation"], tractor["wup"]) == ("the same synset", 1.0)
    assert "nearest_1k" not in I.imagenet_overlap(["wild+cat"], wn=wn)[0]  # not in WordNet


def test_matching_1k_is_what_the_basis_drops(wn):
    from devise_utils.study.semantics import class_synsets

    (dog,) = class_synsets(["dog"], None, wn)
    got = I.matching_1k("dog", dog)
    assert len(got) == 118 and set(got.values()) == {"hyponym"}
    (orange,) = class_synsets(["orange"], None, wn)
    assert I.matching_1k("orange", orange) == {950: "synset"}
    assert I.matching_1k("tractor", None) == {866: "name"}   # name alone without WordNet
    assert I.matching_1k("menorah", None) == {}
