"""``label --csv``: the labels table written beside the printed lines."""

from __future__ import annotations

import csv
from types import SimpleNamespace

from devise_utils import cli
from devise_utils.apps import commands
from devise_utils.apps.commands import write_labels_csv


def _rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_round_trip_with_k_columns_and_a_comma_in_a_path(tmp_path):
    """Paths with commas must survive (quoted), and each ranking spreads over k column pairs."""
    ranked = {
        "photos/a, b.jpg": [("zebra", 0.91), ("horse", 0.5), ("lion", -0.125)],
        "photos/plain.jpg": [("lion", 0.75), ("zebra", 0.25), ("horse", 0.0)],
    }
    out = write_labels_csv(tmp_path / "labels.csv", ranked)

    rows = _rows(out)
    assert rows[0] == ["path", "label", "score", "label_2", "score_2", "label_3", "score_3"]
    assert rows[1] == ["photos/a, b.jpg", "zebra", "0.91", "horse", "0.5", "lion", "-0.125"]
    assert rows[2][0] == "photos/plain.jpg" and rows[2][1] == "lion"
    assert float(rows[2][2]) == 0.75
    assert '"photos/a, b.jpg"' in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # no temp file left


def test_k1_has_only_the_base_columns(tmp_path):
    out = write_labels_csv(tmp_path / "one.csv", {"x.jpg": [("zebra", 1.0)]})
    assert _rows(out) == [["path", "label", "score"], ["x.jpg", "zebra", "1.0"]]


def test_missing_csv_folder_fails_before_the_model_opens(tmp_path, monkeypatch, capsys):
    """A bad --csv is reported at once, not after minutes of loading and labelling."""
    def no_model(*args, **kwargs):
        raise AssertionError("the model was opened before --csv was checked")

    monkeypatch.setattr(commands, "open_labeller", no_model)
    out = tmp_path / "missing" / "labels.csv"
    rc = cli.main(["label", str(tmp_path), "--model", "m.onnx", "--classes", "zebra",
                   "--csv", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--csv" in err and str(out.parent) in err


def test_label_command_prints_and_writes_the_csv(tmp_path, monkeypatch, capsys):
    """The command's wiring, with the model and vectors stubbed out (no real inference)."""
    labels = {"p/x.jpg": [("zebra", 0.5), ("horse", 0.25)]}
    monkeypatch.setattr(commands, "open_labeller",
                        lambda *a, **kw: SimpleNamespace(head=None))
    monkeypatch.setattr(commands, "model_vectors", lambda model, vectors: "v.txt")
    monkeypatch.setattr(commands, "load_vectors", lambda *a, **kw: None)
    monkeypatch.setattr(commands, "label_folder", lambda *a, **kw: labels)
    out = tmp_path / "labels.csv"
    rc = cli.main(["label", str(tmp_path), "--model", "m.onnx", "--classes", "zebra,horse",
                   "-k", "2", "--csv", str(out)])
    assert rc == 0
    assert "p/x.jpg  zebra 0.5000  horse 0.2500" in capsys.readouterr().out
    assert _rows(out) == [["path", "label", "score", "label_2", "score_2"],
                          ["p/x.jpg", "zebra", "0.5", "horse", "0.25"]]
