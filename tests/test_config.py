"""Parameters: one source of defaults, checked before anything runs."""

from __future__ import annotations

import json

import pytest

from devise_utils import pipeline
from devise_utils.core import config
from devise_utils.core.config import Config, ConfigError, make_config


def test_a_typo_names_the_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown parameter 'stage1_epoch'.*stage1_epochs"):
        make_config({"stage1_epoch": 10})
    with pytest.raises(ConfigError, match="unknown parameter 'foo'"):
        Config().replace(foo=1)


@pytest.mark.parametrize("key, value, expects", [
    ("image_size", "abc", "expects an integer"),
    ("final_bn", "yes", "expects true or false"),
    ("stage1_lr", "fast", "expects a number or null"),
    ("compare_backbones", "resnet34", "expects a list of text"),
])
def test_a_wrong_type_names_the_key_and_what_it_expects(key, value, expects):
    with pytest.raises(ConfigError, match=f"parameter '{key}' {expects}"):
        make_config({key: value})


@pytest.mark.parametrize("key, value, expects", [
    ("image_size", 5, r"must be 0 \(from the photos\) or 16..1024"),
    ("stage2_frozen", 4, "must be in 0..3"),
    ("valid_pct", 1.5, "must be in 0.01..0.9"),
    ("loss", "hinge", "must be one of cosine, rank"),
    ("compare_backbones", ["vgg16"], "unknown backbone 'vgg16'"),
])
def test_an_out_of_range_value_is_an_error(key, value, expects):
    with pytest.raises(ConfigError, match=expects):
        make_config({key: value})


def test_pretrained_weights_switch_to_the_real_photo_recipe_explicit_values_win():
    quick = make_config({})
    real = make_config({"weights": "imagenet"})
    for k, v in config.PRETRAINED_RECIPE.items():
        assert getattr(real, k) == v
    assert quick.stage1_epochs == Config().stage1_epochs  # the dataclass holds the defaults
    assert make_config({"weights": "imagenet", "image_size": 96}).image_size == 96


def test_env_overrides_are_checked_too(monkeypatch):
    monkeypatch.setenv(config.ENV_OVERRIDES, json.dumps({"stage1_epochs": 1}))
    assert make_config({"stage1_epochs": 5}).stage1_epochs == 1
    monkeypatch.setenv(config.ENV_OVERRIDES, json.dumps({"stage_epochs": 1}))
    with pytest.raises(ConfigError, match="stage_epochs"):
        make_config({})


def test_model_key_ignores_where_things_go_and_stage2_fields_for_stage1():
    a, b = Config(), Config(runs_dir="/elsewhere", device="cpu", csls_k=5)
    assert a.key() == b.key()
    c = Config(loss="rank")
    assert c.key(1) == a.key(1) and c.key(2) != a.key(2)


@pytest.mark.parametrize("args, message", [
    (["--set", "stage1_epoch=10"], "did you mean stage1_epochs"),
    (["--set", "image_size=abc"], "'image_size' expects an integer"),
    (["--set", "stage2_frozen=9"], "'stage2_frozen' must be in 0..3"),
    (["--weights", "no/such/file.pth"], "'weights'"),
])
def test_pipeline_refuses_bad_parameters_before_any_notebook_runs(args, message, tmp_path,
                                                                   capsys):
    out = tmp_path / "report"
    assert pipeline.main(["--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()          # nothing ran, nothing was written


def test_every_notebook_takes_one_params_dict_and_no_copy_of_the_defaults():
    for nb in pipeline.notebooks():
        cells = json.loads(nb.read_text())["cells"]
        params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1, nb.name
        code = [ln for ln in "".join(params[0]["source"]).splitlines()
                if ln.strip() and not ln.startswith("#")]
        assert code == ["params = {}"], (nb.name, code)
