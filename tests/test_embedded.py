"""Image vectors with their labels: selection, relabelling and the on-disk cache."""

import numpy as np
import pytest

from devise_utils.study.embedded import Embedded


def sample() -> Embedded:
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    return Embedded(X, np.array(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]),
                    np.array(["zebra", "horse", "okapi", "zebra"]),
                    np.array(["train", "valid", "unseen", "valid"]))


def test_selection_keeps_rows_and_labels_together(tmp_path):
    e = sample()
    v = e.of("valid")
    assert v.path.tolist() == ["b.jpg", "d.jpg"] and v.X[:, 0].tolist() == [3.0, 9.0]
    assert e.of("valid", "unseen").cls.tolist() == ["horse", "okapi", "zebra"]
    assert v.labels(["zebra", "horse"]).tolist() == [1, 0]
    w = v.with_vectors(np.ones((2, 5)))
    assert w.X.shape == (2, 5) and w.path.tolist() == v.path.tolist()
    back = Embedded.load(e.save(tmp_path / "emb.npz"))
    np.testing.assert_array_equal(back.X, e.X)
    assert back.split.tolist() == e.split.tolist()


def test_rows_and_labels_must_agree_in_number():
    e = sample()
    with pytest.raises(ValueError, match="4 vectors but 3 paths"):
        Embedded(e.X, e.path[:3], e.cls, e.split)
