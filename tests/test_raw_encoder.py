"""``benchmarks/raw_encoder.py``: the raw-masked-LM-like starting encoder, built into a directory.

The build itself is the masked-LM run of :mod:`hardcse.training.mlm` (tested in test_mlm.py); here
its recipe is swapped for the tiny BERT so the caching and the rebuild are checked in seconds. It
is a benchmark, not a command: ``hardcse`` has no ``raw-encoder`` command, ``raw`` preset or
``raw`` model name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import make_tiny_bert, run_cli, write_corpus

from hardcse.errors import ConfigError
from hardcse.models.defaults import resolve_model_name
from hardcse.training.mlm import MLMConfig
from hardcse.training.presets import preset_names, resolve_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import raw_encoder  # noqa: E402


def test_the_build_recipe_is_the_measured_one(tmp_path):
    recipe = raw_encoder.raw_encoder_config(tmp_path / "raw")
    assert (recipe.reinit_top_layers, recipe.steps, recipe.batch_size, recipe.max_seq_length, recipe.seed) == (
        4,
        300,
        32,
        32,
        42,
    )
    assert recipe.model == "default" and recipe.lr == 5e-5 and recipe.output == str(tmp_path / "raw")


def test_build_is_kept_and_rebuilt_on_request(tmp_path, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    corpus = write_corpus(tmp_path / "corpus.txt")

    def tiny_recipe(output, data_dir=None) -> MLMConfig:
        return MLMConfig(
            model=str(bert),
            corpus=[str(corpus)],
            output=str(output),
            steps=4,
            batch_size=8,
            lr=1e-3,
            max_seq_length=16,
            reinit_top_layers=1,
            save_steps=2,
            seed=0,
        )

    out = tmp_path / "raw"
    model, built = raw_encoder.build_raw_encoder(out, show_progress=False, config=tiny_recipe)
    assert built and model == out / "model" and (model / "config.json").is_file()
    stamp = (model / "model.safetensors").stat().st_mtime_ns
    model, built = raw_encoder.build_raw_encoder(out, show_progress=False, config=tiny_recipe)
    assert not built and (model / "model.safetensors").stat().st_mtime_ns == stamp  # not trained again
    model, built = raw_encoder.build_raw_encoder(out, rebuild=True, show_progress=False, config=tiny_recipe)
    assert built and (model / "config.json").is_file()


def test_hardcse_has_no_raw_command_preset_or_model_name(monkeypatch, capsys):
    code, stdout, _ = run_cli(["--help"], monkeypatch, capsys)
    assert code == 0 and "raw-encoder" not in stdout and "mlm" in stdout
    assert "raw" not in preset_names()
    with pytest.raises(ConfigError, match="unknown preset 'raw'"):
        resolve_preset("raw", None)
    assert resolve_model_name("raw") == "raw"  # an ordinary (hub) name now
