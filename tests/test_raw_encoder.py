"""The ``raw`` starting encoder: cached build, ``--model raw`` / ``--preset raw`` and their errors.

The build itself is the masked-LM run of :mod:`hardcse.training.mlm` (tested in test_mlm.py); here
its recipe is swapped for the tiny BERT so the cache, the resolution of ``raw`` and the presets can
be checked in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, make_tiny_bert, run_cli, write_corpus

from hardcse.errors import ConfigError
from hardcse.models import defaults
from hardcse.training import raw_encoder
from hardcse.training.config import make_config
from hardcse.training.mlm import MLMConfig
from hardcse.training.presets import CPU, preset_names, resolve_preset


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_raw_is_refused_with_the_build_command_until_built(cache):
    with pytest.raises(ConfigError, match="hardcse raw-encoder"):
        defaults.resolve_model_name("raw")
    assert defaults.raw_encoder_dir() == cache / "raw-encoder" / defaults.RAW_ENCODER_BUILD
    assert defaults.display_name("raw").startswith("raw (sentence-transformers/all-MiniLM-L6-v2")


def test_train_preset_raw_before_the_build_is_one_sentence_and_creates_nothing(cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--preset", "raw", "--output", str(out), "--quiet"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "'raw' starting encoder is not built", "hardcse raw-encoder")
    assert not out.exists()


def test_raw_preset_is_the_cpu_preset_on_the_raw_encoder_for_every_recipe():
    assert "raw" in preset_names()
    simcse = resolve_preset("raw", None)
    assert simcse["model"] == "raw" and simcse["recipe"] == "simcse" and simcse["preset"] == "raw"
    assert simcse["steps"] == 500 and simcse["eval_steps"] == 125
    assert {k: v for k, v in simcse.items() if k not in ("model", "steps", "eval_steps", "recipe", "preset")} == {
        k: v for k, v in CPU.items() if k not in ("model", "steps", "eval_steps")
    }
    both = resolve_preset("raw", "clusterns+hsimcse")
    cpu_both = resolve_preset("cpu", "clusterns+hsimcse")
    assert both["clusterns"] == cpu_both["clusterns"] and both["hsimcse"] == cpu_both["hsimcse"]


def test_build_is_cached_and_model_raw_resolves_to_it(cache, tmp_path, monkeypatch, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    corpus = write_corpus(tmp_path / "corpus.txt")

    def tiny_recipe(data_dir=None) -> MLMConfig:
        return MLMConfig(
            model=str(bert),
            corpus=[str(corpus)],
            output=str(defaults.raw_encoder_dir()),
            steps=4,
            batch_size=8,
            lr=1e-3,
            max_seq_length=16,
            reinit_top_layers=1,
            save_steps=2,
            seed=0,
        )

    monkeypatch.setattr(raw_encoder, "raw_encoder_config", tiny_recipe)
    code, stdout, stderr = run_cli(["raw-encoder", "--quiet"], monkeypatch, capsys)
    assert code == 0, stderr
    assert "raw encoder built" in stdout
    model = defaults.raw_encoder_dir() / "model"
    assert (model / "config.json").is_file()
    assert defaults.resolve_model_name("raw") == str(model)
    stamp = (model / "model.safetensors").stat().st_mtime_ns

    code, stdout, _ = run_cli(["raw-encoder", "--quiet"], monkeypatch, capsys)
    assert code == 0 and "already built" in stdout
    assert (model / "model.safetensors").stat().st_mtime_ns == stamp  # not trained again

    # With the encoder built, the raw preset passes the checks made before anything loads.
    config = make_config(preset="raw", recipe="clusterns", output=str(tmp_path / "r"))
    config.validate()
    assert config.model == "raw"

    code, stdout, stderr = run_cli(["raw-encoder", "--quiet", "--rebuild"], monkeypatch, capsys)
    assert code == 0, stderr
    assert "raw encoder built" in stdout


def test_the_build_recipe_is_the_measured_one():
    recipe = raw_encoder.raw_encoder_config()
    assert (recipe.reinit_top_layers, recipe.steps, recipe.batch_size, recipe.max_seq_length, recipe.seed) == (
        4,
        300,
        32,
        32,
        42,
    )
    assert recipe.model == "default" and recipe.lr == 5e-5
