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


def test_stored_outputs_reads_each_photo_once_and_keeps_rows_in_table_order(tmp_path):
    """The frozen network's outputs are shared by every run on the same photos: a second,
    larger table computes only its new photos, and each row belongs to its own photo."""
    import pandas as pd
    import torch
    from PIL import Image
    from torch import nn

    from devise_utils.study.evaluate import stored_outputs

    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 20), colour).save(p)
        paths.append(str(p))
    built = []

    def model_fn():
        built.append(1)
        conv = nn.Conv2d(3, 3, 1)  # the identity: each photo's mean colour comes out
        nn.init.zeros_(conv.bias)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    store = tmp_path / "store.npz"
    t1 = pd.DataFrame({"path": paths[:2], "cls": ["r", "g"], "split": ["train", "unseen"]})
    a = stored_outputs(t1, store, model_fn, 2, image_size=16)
    assert len(built) == 1 and a.X.shape == (2, 3) and a.X[0].argmax() == 0
    t2 = pd.DataFrame({"path": paths[::-1], "cls": ["b", "g", "r"],
                       "split": ["valid", "unseen", "train"]})
    b = stored_outputs(t2, store, model_fn, 2, image_size=16)
    assert len(built) == 2                      # only the blue photo was new
    assert [x.argmax() for x in b.X] == [2, 1, 0] and list(b.cls) == ["b", "g", "r"]
    stored_outputs(t2, store, model_fn, 2, image_size=16)
    assert len(built) == 2                      # nothing new: the model is not even built
