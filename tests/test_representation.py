"""The sentence representation as one object (:mod:`hardcse.models.representation`): read from the
configuration, the pooling names and start-key parts that result files and comparisons depend on,
building, collation, export and loading back."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from helpers import make_tiny_bert

from hardcse.errors import ConfigError
from hardcse.models.loading import describe_pooling
from hardcse.models.representation import Pooled, Prompted, Representation
from hardcse.models.templates import BERT_TEMPLATE, BERT_TEMPLATE2, PROMPT_TEMPLATE
from hardcse.training.config import TrainConfig, make_config


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("representation") / "bert", dropout=0.0)


def _old_start_key(config: TrainConfig) -> str:
    """The start key as comparisons computed it before the representation object (its inputs and
    their order written out), so existing ``start-<key>.json`` files keep matching."""
    values = {
        "model": config.model,
        "pooling": config.pooling,
        "test_tasks": config.test_tasks,
        "data_dir": config.data_dir,
        "eval_batch_size": config.eval_batch_size,
        "trust_remote_code": config.trust_remote_code,
    }
    if config.dev or config.test:
        values.update(dev=config.dev, test=config.test, pair_columns=config.pair_columns)
    if config.prompt:
        values.update(prompt=True, prompt_template=config.prompt_template, prompt_template2=config.prompt_template2)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


CONFIGS = {
    "plain": {},
    "mean": {"pooling": "mean"},
    "pairs": {"dev": "STS-B:captions", "test": ["SICK"]},
    "prompt": {"prompt": True},
    "prompt-mean": {"prompt": True, "pooling": "mean"},
    "prompt-templates": {"prompt": True, "prompt_template": BERT_TEMPLATE, "prompt_template2": BERT_TEMPLATE2},
    "prompt-no-denoise": {"prompt": True, "prompt_denoise": False},
    "templates-without-prompt": {"prompt_template": BERT_TEMPLATE},
    "official-template-spelled-out": {"prompt": True, "prompt_template": PROMPT_TEMPLATE},
}


# -- from the configuration -------------------------------------------------------------------


def test_from_config():
    assert make_config().representation == Pooled("cls")
    assert make_config(pooling="max").representation == Pooled("max")
    # Templates without prompt are checked, but the run stays a plain one.
    assert make_config(prompt_template=BERT_TEMPLATE).representation == Pooled("cls")
    assert make_config(prompt=True).representation == Prompted()
    config = make_config(
        prompt=True,
        pooling="mean",
        prompt_template=BERT_TEMPLATE,
        prompt_template2=BERT_TEMPLATE2,
        prompt_denoise=False,
    )
    assert config.representation == Prompted(
        template=BERT_TEMPLATE, template2=BERT_TEMPLATE2, denoise=False, pooling="mean"
    )
    # The ClusterNS prompt presets spell the official templates out.
    preset = make_config(preset="clusterns-prompt-bert-base", recipe="clusterns").representation
    assert isinstance(preset, Prompted) and preset.template == PROMPT_TEMPLATE and preset.denoise


def test_from_settings_of_a_saved_config_yaml():
    saved = yaml.safe_load(yaml.safe_dump(make_config(prompt=True, prompt_denoise=False).to_dict()))
    assert Representation.from_settings(saved) == Prompted(denoise=False)
    assert Representation.from_settings({}) == Pooled("cls")  # absent keys: the defaults
    assert Representation.from_settings({"pooling": "mean", "prompt": False}) == Pooled("mean")


def test_representations_are_frozen_values():
    with pytest.raises(AttributeError):
        Pooled().pooling = "mean"  # type: ignore[misc]
    assert Prompted(template=BERT_TEMPLATE) != Prompted()
    assert len({Pooled(), Pooled("cls"), Prompted(), Prompted()}) == 2
    with pytest.raises(TypeError):
        Prompted(BERT_TEMPLATE)  # type: ignore[misc]  # keyword-only: no template taken for a pooling


# -- result names and start keys --------------------------------------------------------------


def test_describe_gives_the_pooling_names_of_result_files():
    assert [Pooled(p).describe() for p in ("cls", "mean", "max")] == ["cls", "mean", "max"]
    assert Prompted().describe() == Prompted(pooling="mean", template=BERT_TEMPLATE).describe() == "prompt-mask"


def test_identity_is_the_configuration_s_part_of_the_start_key():
    assert Pooled("mean").identity() == {"pooling": "mean"}
    assert Prompted().identity() == {
        "pooling": "cls",
        "prompt": True,
        "prompt_template": None,
        "prompt_template2": None,
    }
    # Denoising acts in training only: the untrained scores do not depend on it.
    assert Prompted(denoise=False).identity() == Prompted().identity()
    # A template left null and the same template spelled out were always different keys.
    assert Prompted(template=PROMPT_TEMPLATE).identity() != Prompted().identity()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_start_keys_are_unchanged(name):
    from hardcse.training.start import start_key

    config = make_config(preset="cpu", recipe="simcse", output="x", **CONFIGS[name])
    assert start_key(config) == _old_start_key(config)


def test_start_keys_of_committed_runs_are_pinned():
    from hardcse.training.start import start_key

    # The cpu comparison's start file (docs/results/cpu/finished-runs/start-2d296e59cc.json) and a
    # prompt run's key, both computed before the representation object.
    assert start_key(make_config(preset="cpu", recipe="simcse", output="x")) == "2d296e59cc"
    assert start_key(make_config(preset="cpu", recipe="clusterns", prompt=True, output="x")) == "904e895387"


# -- building, collation, export --------------------------------------------------------------


def test_build_describes_itself_as_the_built_model_does(tiny_bert):
    for representation in (Pooled("mean"), Prompted()):
        model = representation.build(str(tiny_bert), mlp_head=False)
        assert describe_pooling(model) == representation.describe()
    with pytest.raises(ConfigError, match="unknown pooling 'avg'"):
        Pooled("avg").build(str(tiny_bert))


def test_collators(tiny_bert):
    plain = Pooled().build(str(tiny_bert))
    assert Pooled().collator(plain) is None  # the trainer's own
    prompt = Prompted().build(str(tiny_bert))
    batch = Prompted().collator(prompt)([{"text": "the dog plays"}, {"text": "a red house"}])
    # Each sentence tokenised alone, without special tokens: the encoder wraps it per view.
    ids = prompt[0].tokenizer("the dog plays", add_special_tokens=False)["input_ids"]
    assert batch["text_input_ids"][0][: len(ids)].tolist() == ids
    with pytest.raises(ConfigError, match="PromptTransformer"):
        Prompted().collator(plain)


@pytest.mark.parametrize("representation", [Pooled("mean"), Prompted()], ids=["pooled", "prompted"])
def test_export_loads_back_as_trained(representation, tiny_bert, tmp_path):
    torch.manual_seed(0)
    model = representation.build(str(tiny_bert))
    model.eval()
    sentences = ["the dog plays", "a man sits on the red house."]
    expected = model.encode(sentences, convert_to_tensor=True)
    representation.export(model, tmp_path / "model", eval_max_seq_length=128)
    loaded = representation.load_export(tmp_path / "model", device="cpu")
    assert describe_pooling(loaded) == representation.describe()
    assert loaded.max_seq_length == 128
    torch.testing.assert_close(loaded.encode(sentences, convert_to_tensor=True), expected)
    modules = json.loads((tmp_path / "model" / "modules.json").read_text())
    assert any(m["type"].startswith("hardcse.") for m in modules) == representation.needs_hardcse
