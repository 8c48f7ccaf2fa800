"""Random input never escapes as a raw traceback: the vector parser and the class-name parser
either return a valid result or raise the project's bad-input error (DataError) naming the
file. Hypothesis draws random bytes and random rows of random numbers."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devise_utils.core.errors import DataError
from devise_utils.data.awa2 import _read_classes, _read_names
from devise_utils.data.vectors import check_class_vectors, load_vectors

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = ["a", "b", "c", "a+b"]


def _valid(wv, words: list[str]) -> None:
    assert wv.vectors.ndim == 2 and len(wv.words) == len(wv.vectors) == len(set(wv.words))
    assert np.isfinite(wv.vectors).all()
    norms = np.linalg.norm(wv.vectors, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))
    if words:
        assert wv.lookup(words).shape == (len(words), wv.dim)


@SETTINGS
@given(data=st.binary(max_size=300), words=st.lists(st.sampled_from(WORDS), max_size=3))
@example(data=b"\xff\xfe1 2\n", words=["a"])
@example(data=b"2 3\na 1 2 3\n", words=["a"])
def test_vector_parser_on_random_bytes(tmp_path, data, words):
    path = tmp_path / "r.vec"
    path.write_bytes(data)
    try:
        wv = load_vectors(path, words or None)
    except DataError as e:
        assert str(path) in str(e)
        return
    _valid(wv, words)


_number = st.one_of(st.floats(width=32).map(repr), st.integers(-10**40, 10**40).map(str),
                    st.sampled_from(["", "x", "-", "1e", "nan", "-inf", "1e39", "\u00b2"]))
_row = st.tuples(st.sampled_from(["a", "b", "c", "a+b", "", "\u00e9", "b\tc"]),
                 st.lists(_number, max_size=4))


@SETTINGS
@given(rows=st.lists(_row, max_size=6),
       header=st.one_of(st.none(), st.tuples(st.integers(0, 8), st.integers(0, 5))),
       words=st.lists(st.sampled_from(WORDS), max_size=3, unique=True))
def test_vector_parser_on_random_numbers(tmp_path, rows, header, words):
    lines = [f"{header[0]} {header[1]}"] if header else []
    lines += [w + " " + " ".join(v) for w, v in rows]
    path = tmp_path / "n.vec"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        wv = load_vectors(path, words or None)
        if words:
            check_class_vectors(wv, words)
    except DataError as e:
        assert str(path) in str(e)
        return
    _valid(wv, words)


@SETTINGS
@given(data=st.binary(max_size=200))
@example(data="\u00b2\tzebra\n".encode())  # a Unicode digit: str.isdigit() but not int()
@example(data=b"1\tch\xe8vre\n")
def test_class_files_on_random_bytes(tmp_path, data):
    path = tmp_path / "classes.txt"
    path.write_bytes(data)
    for read in (_read_classes, _read_names):
        try:
            read(path)
        except DataError as e:
            assert str(path) in str(e)


_name = st.text(st.sampled_from("aAbB+_ .\t/\u00e9\u0130\u0131\x00\u00b2"), max_size=4)


@SETTINGS
@given(names=st.lists(_name, max_size=5), enc=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
       junk=st.binary(max_size=4))
def test_class_files_on_random_names(tmp_path, names, enc, junk):
    files = {"classes.txt": "".join(f"{i}\t{n}\n" for i, n in enumerate(names, 1)),
             "trainclasses.txt": "".join(f"{n}\n" for n in names)}
    for name, text in files.items():
        path = tmp_path / name
        path.write_bytes(text.encode(enc, errors="replace") + junk)
        try:
            got = _read_classes(path)[0] if name == "classes.txt" else _read_names(path)
        except DataError as e:
            assert str(path) in str(e)
            continue
        assert all(got) and len(got) == len(set(got))
        assert all("/" not in n and "\x00" not in n and n not in (".", "..") for n in got)
        if name == "classes.txt":
            assert len({n.casefold() for n in got}) == len(got)
