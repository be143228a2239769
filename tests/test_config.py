"""Configuration values are checked against the field types (YAML and --set give strings)."""

from __future__ import annotations

import pytest

import hardcse
from hardcse.errors import ConfigError
from hardcse.training.config import TrainConfig, load_yaml


def test_numeric_strings_become_numbers(tmp_path):
    # YAML 1.1 reads 5e-4 (no dot) as a string; --set and config files must still work.
    config = hardcse.make_config(lr="5e-4", steps="10", eval_steps=5.0)
    assert config.lr == 5e-4 and isinstance(config.lr, float)
    assert config.steps == 10 and isinstance(config.steps, int) and config.eval_steps == 5
    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\nbatch_size: 32\n", encoding="utf-8")
    assert load_yaml(path)["lr"] == "5e-4"
    assert hardcse.make_config(config_file=path).lr == 5e-4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": "abc"}, "'lr' in the options must be a number, got 'abc'."),
        ({"steps": 2.5}, "'steps' in the options must be a whole number, got 2.5."),
        ({"fp16": "yes"}, "'fp16' in the options must be true or false, got 'yes'."),
        ({"batch_size": True}, "'batch_size' in the options must be a number, got True."),
    ],
)
def test_wrong_types_are_one_sentence(changes, message):
    with pytest.raises(ConfigError) as err:
        hardcse.make_config(**changes)
    assert str(err.value) == message


def test_none_keeps_optional_fields_empty():
    assert TrainConfig.from_dict({"steps": None, "max_sentences": None}).steps is None


def test_nested_method_values_are_typed_before_anything_loads():
    # --set clusterns.eta=1e-3 arrives as the string '1e-3' (YAML 1.1); it used to reach the
    # ClusterNS constructor as a string and fail with a TypeError after the model had loaded.
    config = hardcse.make_config(recipe="clusterns", clusterns={"eta": "1e-3", "k": "16"})
    assert config.method_configs()["clusterns"].eta == 1e-3
    assert config.method_configs()["clusterns"].k == 16
    with pytest.raises(ConfigError, match="'clusterns.k' in the options must be a number, got 'abc'"):
        hardcse.make_config(recipe="clusterns", clusterns={"k": "abc"})
    with pytest.raises(ConfigError, match="unknown key 'clusterns.kk'"):
        hardcse.make_config(recipe="simcse", clusterns={"kk": 3})


def test_default_output_names_the_recipe_and_preset():
    assert hardcse.make_config(recipe="clusterns").output == "runs/clusterns-cpu"
    assert hardcse.make_config(recipe="hsimcse", output=None).output == "runs/hsimcse-cpu"
    assert hardcse.make_config(output="runs/mine").output == "runs/mine"
