"""Class semantics from WordNet, on the real WordNet 3.0 in ../shared/nltk_data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

from devise_utils.data.vectors import WordVectors
from devise_utils.study import semantics as S


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# Hand-made 3-D word vectors: dog = e1, domestic = e2, canine = e3 (no other word known).
WV = WordVectors(["dog", "domestic", "canine"], np.eye(3, dtype=np.float32))


def test_missing_wordnet_names_the_download_and_nltk_data(tmp_path):
    with pytest.raises(S.WordNetMissingError) as e:
        S.wordnet(str(tmp_path))
    msg = str(e.value)
    assert 'nltk.download("wordnet")' in msg.replace("'", '"')
    assert "NLTK_DATA" in msg and str(tmp_path) in msg


def test_class_synsets_joined_name_first_sense_and_override(wn):
    names = ["german+shepherd", "bass", "dog", "wild+cat"]
    got = S.class_synsets(names, wn=wn)
    assert [s.name() if s else None for s in got] == [
        "german_shepherd.n.01", "bass.n.01", "dog.n.01", None]   # bass.n.01: the music sense
    fixed = S.class_synsets(names, {"bass": "n02565573", "wild+cat": "n02124623"}, wn)
    assert fixed[1].name() == "bass.n.08" and "fish" in fixed[1].definition()
    assert fixed[3].name() == "wildcat.n.03"
    assert S.wnid(fixed[2]) == "n02084071"                        # ImageNet's dog


def test_read_class_synsets(tmp_path, wn):
    good = tmp_path / "class_synsets.txt"
    good.write_text("# fixes\nbass\tn02565573\n\ntick\tn01776313  # the arachnid\n")
    assert S.read_class_synsets(good, wn) == {"bass": "n02565573", "tick": "n01776313"}
    bad = tmp_path / "bad.txt"
    bad.write_text("bass\tn02565573\ntick\tn99999999\n")
    with pytest.raises(ValueError, match=r"bad\.txt: line 2: class 'tick'.*n99999999"):
        S.read_class_synsets(bad, wn)
    bad.write_text("bass n0256\n")
    with pytest.raises(ValueError, match="line 1: class 'bass'"):
        S.read_class_synsets(bad, wn)
    bad.write_text("bass\n")
    with pytest.raises(ValueError, match="line 1 should be 'class<TAB>wnid'"):
        S.read_class_synsets(bad, wn)


def test_semantic_words_of_dog(wn):
    words = S.semantic_words(wn.synset("dog.n.01"), ["synonyms", "gloss", "hypernyms"])
    assert words["synonyms"] == ["dog", "domestic_dog", "canis_familiaris"]
    # "a member of the genus Canis (probably descended from the common wolf) that has been
    #  domesticated by man since prehistoric times; occurs in many breeds"
    assert words["gloss"][:7] == ["member", "genus", "canis", "probably", "descended",
                                  "common", "wolf"]
    assert not {"the", "of", "that", "has", "been", "by"} & set(words["gloss"])
    # hypernyms sorted by synset name (canine.n.02 < domestic_animal.n.01), whatever the
    # process's hash seed
    assert words["hypernyms"] == ["canine", "canid", "domestic_animal", "domesticated_animal"]
    with pytest.raises(ValueError, match="unknown semantic part"):
        S.semantic_words(wn.synset("dog.n.01"), ["meronyms"])


def test_class_semantics_sums_unit_parts(wn):
    syn = [wn.synset("dog.n.01")]
    np.testing.assert_allclose(S.class_semantics(["dog"], WV), [[1, 0, 0]])
    # synonyms: dog -> e1, domestic_dog -> unit(e1 + e2), canis_familiaris -> no vector
    syn_vec = _unit(np.array([1, 0, 0]) + _unit([1, 1, 0]))
    want = _unit(np.array([1, 0, 0]) + syn_vec)
    got = S.class_semantics(["dog"], WV, ("name", "synonyms"), syn)
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    # hypernyms: domestic_animal -> e2 (only 'domestic' known), canine -> e3, others none
    got = S.class_semantics(["dog"], WV, ("hypernyms",), syn)
    np.testing.assert_allclose(got[0], _unit([0, 1, 1]), atol=1e-6)
    got = S.class_semantics(["dog"], WV, ("name", "hypernyms"), syn, {"name": 2.0})
    np.testing.assert_allclose(got[0], _unit(2 * np.array([1, 0, 0]) + _unit([0, 1, 1])),
                               atol=1e-6)
    with pytest.raises(ValueError, match="need one synset per class"):
        S.class_semantics(["dog"], WV, ("name", "gloss"))


def test_wordnet_graph_classes_then_ancestors(wn):
    dog, cat = wn.synset("dog.n.01"), wn.synset("cat.n.01")
    A, nodes = S.wordnet_graph([dog, cat], hops=1)
    assert [n.name() for n in nodes] == ["dog.n.01", "cat.n.01", "canine.n.02",
                                         "domestic_animal.n.01", "feline.n.01"]
    edges = {(i, j) for i, j in zip(*np.nonzero(A)) if i < j}
    assert edges == {(0, 2), (0, 3), (1, 4)}
    np.testing.assert_array_equal(A, A.T)


def test_graph_and_words_do_not_depend_on_the_hash_seed(wn):
    """nltk stores a synset's pointers in a set: without sorting, the node order and the
    word lists change with PYTHONHASHSEED (they did between two machines)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from devise_utils.study import semantics as S\n"
            "wn = S.wordnet(sys.argv[1])\n"
            "syn = [wn.synset(n) for n in ('dog.n.01', 'cat.n.01', 'bus.n.01', 'oak.n.01')]\n"
            "A, nodes = S.wordnet_graph(syn, hops=3)\n"
            "print([n.name() for n in nodes], S.semantic_words(syn[0], ['hypernyms']))")
    outs = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", code, str(SHARED / "nltk_data")], env=env,
                           capture_output=True, text=True, check=True)
        outs.add(r.stdout)
    assert len(outs) == 1, outs


def test_wordnet_graph_reuses_a_class_node_as_ancestor(wn):
    """german_shepherd -> shepherd_dog -> working_dog -> dog: dog is class node 0."""
    dog, gs = wn.synset("dog.n.01"), wn.synset("german_shepherd.n.01")
    A, nodes = S.wordnet_graph([dog, gs], hops=3)
    assert [n.name() for n in nodes].count("dog.n.01") == 1
    working = [n.name() for n in nodes].index("working_dog.n.01")
    assert A[0, working] == 1 and A[working, 0] == 1
    A0, nodes0 = S.wordnet_graph([dog, None], hops=0)
    assert len(nodes0) == 2 and not A0.any()


def test_node_semantics_ancestors_get_their_lemma_vectors(wn):
    syn = [wn.synset("dog.n.01")]
    A, nodes = S.wordnet_graph(syn, hops=1)    # dog, canine.n.02, domestic_animal
    V = S.node_semantics(nodes, WV, 1, np.array([[0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(V[0], [0, 0, 1])          # the class row is the one passed
    np.testing.assert_allclose(V[1], [0, 0, 1])          # canine.n.02 lemmas: canine, canid
    np.testing.assert_allclose(V[2], [0, 1, 0])          # domestic_animal: 'domestic'


@pytest.mark.shared
def test_gloss_moves_caltech_bass_towards_fish(wn):
    """The GloVe word 'bass' is mostly music; the fish synset's gloss and hypernyms fix it."""
    from devise_utils.data.vectors import load_vectors

    path = SHARED / "vectors" / "caltech-zsl-dev.glove50.vec"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wv = load_vectors(path, hash_file=False)
    fish = S.class_synsets(["bass"], {"bass": "n02565573"}, wn)
    name = S.class_semantics(["bass"], wv, ("name",))[0]
    rich = S.class_semantics(["bass"], wv, ("name", "gloss", "hypernyms"), fish)[0]
    f, g = wv.lookup(["fish"])[0], wv.lookup(["guitar"])[0]
    assert rich @ f > name @ f + 0.2 and rich @ f > rich @ g


def test_a_first_sense_that_is_no_thing_is_warned_about(wn):
    import warnings

    with pytest.warns(UserWarning, match=r"class 'mole'.*gram_molecule.*class_synsets.txt"):
        S.class_synsets(["mole"], None, wn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S.class_synsets(["tractor", "mole"], {"mole": "n01889520"}, wn)  # fixed: no warning
        assert S.class_synsets(["n01889520"], None, wn)[0].name() == "mole.n.06"  # a wnid


def test_the_shipped_awa2_synsets_are_animals(wn):
    from devise_utils.study.preflight import AWA2_SYNSETS, awa2_classes

    ids = S.read_class_synsets(AWA2_SYNSETS, wn)
    assert len(ids) == 50 == len(awa2_classes())
    animal = wn.synset("animal.n.01")
    for cls, wid in ids.items():
        assert animal in S.synset_of(wid, wn).closure(lambda s: s.hypernyms()), cls
    assert S.synset_of(ids["seal"], wn).name() == "seal.n.09"
