"""``hardcse mlm``: continued masked-LM training on the tiny BERT.

The loss falls, the output is a plain Hugging Face directory that trains as ``--model``, runs
are deterministic given the seed, a run stopped at a checkpoint and resumed ends with the
uninterrupted run's weights, and bad inputs give one sentence, a non-zero exit and lose nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_sentence_error, run_cli, write_corpus
from helpers import make_tiny_bert as make_bert
from safetensors.torch import load_file
from transformers import TrainerCallback

from hardcse.errors import ConfigError, TrainingError
from hardcse.training.mlm import MLMConfig, hf_model_path, load_mlm_model, reinit_top_layers, train_mlm


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlm")
    return {"root": root, "bert": make_bert(root / "bert"), "corpus": write_corpus(root / "corpus.txt")}


def _config(inputs: dict[str, Path], output: Path, **changes) -> MLMConfig:
    values = {
        "model": str(inputs["bert"]),
        "corpus": [str(inputs["corpus"])],
        "output": str(output),
        "steps": 6,
        "batch_size": 16,
        "lr": 1e-3,
        "save_steps": 3,
        "seed": 0,
    }
    return MLMConfig(**{**values, **changes})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_cli_mlm_loss_falls_and_the_output_trains_as_model(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["mlm", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"]), "--output", str(out)]
    args += ["--steps", "30", "--batch-size", "16", "--lr", "1e-3", "--save-steps", "10", "--seed", "0", "--quiet"]
    code, stdout, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 0, stderr
    assert "head tensors initialised fresh" in stderr  # the tiny BERT is saved without an MLM head
    assert "hardcse train --model" in stdout
    result = json.loads((out / "mlm.json").read_text())
    assert result["steps"] == 30 and result["seed"] == 0 and result["loss_window"] == 10
    assert result["loss_last"] < result["loss_first"]  # means of the first and last 10 steps
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert len(losses) == 30 and sum(losses[-10:]) < sum(losses[:10])
    assert any(k.startswith("cls.predictions") for k in result["fresh_head"])
    assert not (out / "checkpoints").exists()  # deleted once the model is written

    # A plain HF directory: AutoModel loads it, and it becomes a hardcse training model.
    from transformers import AutoModel

    from hardcse.models.representation import Pooled

    backbone = AutoModel.from_pretrained(str(out / "model"))
    before = AutoModel.from_pretrained(str(inputs["bert"]))
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(backbone.state_dict()[name], before.state_dict()[name])
    model = Pooled("cls").build(str(out / "model"), max_seq_length=32)
    vectors = model.encode(["the dog plays", "a red house"], convert_to_tensor=True)
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()
    assert torch.equal(model[0].auto_model.state_dict()[name], backbone.state_dict()[name])

    # Continuing from the output keeps its trained head (nothing initialised fresh).
    again = train_mlm(_config(inputs, tmp_path / "again", model=str(out / "model"), steps=2), show_progress=False)
    assert again["fresh_head"] == []


def test_same_seed_same_weights_other_seed_other_weights(inputs, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_mlm(_config(inputs, tmp_path / name, seed=seed, reinit_top_layers=1), show_progress=False)
        runs[name] = _weights(tmp_path / name)
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_stopped_and_resumed_run_ends_as_the_uninterrupted_one(inputs, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    train_mlm(_config(inputs, whole), show_progress=False)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingError, match="--resume"):
        train_mlm(_config(inputs, cut), show_progress=False, callbacks=[_StopAt(3)])
    assert (cut / "checkpoints" / "checkpoint-3").is_dir() and not (cut / "mlm.json").exists()
    code, _, stderr = run_cli(["mlm", "--output", str(cut), "--resume", "--quiet"], monkeypatch, capsys)
    assert code == 0, stderr
    a, b = _weights(whole), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((whole / "mlm.json").read_text())["history"]
    hb = json.loads((cut / "mlm.json").read_text())["history"]
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    # A finished run is not resumed again.
    code, _, stderr = run_cli(["mlm", "--output", str(cut), "--resume"], monkeypatch, capsys)
    assert_one_sentence_error(code, stderr, "already complete")


def test_constant_schedule_checkpoint_n_equals_an_n_step_run(inputs, tmp_path):
    """With ``lr_schedule="constant"`` and a fixed warm-up, step N of a longer run is an N-step run
    (one run measures several lengths); with the linear decay it is not."""
    for schedule, same in (("constant", True), ("linear", False)):
        longer, short = tmp_path / f"{schedule}-6", tmp_path / f"{schedule}-3"
        changes = {"lr_schedule": schedule, "warmup_steps": 1, "save_steps": 3}
        with pytest.raises(TrainingError):
            train_mlm(_config(inputs, longer, **changes), show_progress=False, callbacks=[_StopAt(3)])
        train_mlm(_config(inputs, short, steps=3, **changes), show_progress=False)
        a = load_file(str(longer / "checkpoints" / "checkpoint-3" / "model.safetensors"))
        b = _weights(short)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a) is same, schedule


def test_reinit_top_layers_resets_only_the_top_layers(inputs):
    def load(seed: int):
        torch.manual_seed(seed)
        model, _ = load_mlm_model("tiny", str(inputs["bert"]))
        return model

    original, model = load(0), load(0)
    torch.manual_seed(5)
    assert reinit_top_layers(model, 1) == [1]
    layers = model.bert.encoder.layer
    old = original.bert.encoder.layer
    assert all(torch.equal(p, q) for p, q in zip(layers[0].parameters(), old[0].parameters(), strict=True))
    top, top_old = layers[1].attention.self.query, old[1].attention.self.query
    assert not torch.equal(top.weight, top_old.weight)
    # BERT's own initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm.
    assert abs(float(top.weight.detach().std()) - model.config.initializer_range) < 0.005
    assert torch.count_nonzero(top.bias) == 0
    assert torch.equal(layers[1].output.LayerNorm.weight, torch.ones_like(layers[1].output.LayerNorm.weight))
    again = load(0)
    torch.manual_seed(5)
    reinit_top_layers(again, 1)
    assert torch.equal(again.bert.encoder.layer[1].attention.self.query.weight, top.weight)
    with pytest.raises(ConfigError, match="exceeds"):
        reinit_top_layers(load(0), 3)


def test_hf_model_path_finds_the_transformer_of_a_sentence_transformers_directory(inputs, tmp_path):
    assert hf_model_path(str(inputs["bert"])) == str(inputs["bert"])
    st = tmp_path / "st"
    shutil.copytree(inputs["bert"], st / "0_Transformer")
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]
    (st / "modules.json").write_text(json.dumps(modules))
    assert hf_model_path(str(st)) == str(st / "0_Transformer")
    assert hf_model_path("some-org/some-model") == "some-org/some-model"  # hub names as they are


# -- bad input -------------------------------------------------------------------------------
def _no_mask_model(inputs, root: Path) -> Path:
    from transformers import AutoTokenizer

    path = root / "nomask"
    tokenizer = AutoTokenizer.from_pretrained(str(inputs["bert"]))
    tokenizer.mask_token = None
    tokenizer.save_pretrained(str(path))
    for name in ("config.json", "model.safetensors"):
        shutil.copy(inputs["bert"] / name, path / name)
    return path


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("empty corpus", "has no sentences"),
        ("non-UTF-8 corpus", "not valid UTF-8"),
        ("no mask token", "no mask token"),
        ("zero steps", "--steps must be at least 1"),
        ("unknown schedule", "--lr-schedule must be one of"),
        ("missing corpus", "does not exist"),
        ("reinit too many layers", "exceeds"),
        ("nothing to resume", "nothing to resume"),
    ],
)
def test_bad_input_is_one_sentence_and_creates_nothing(inputs, tmp_path, monkeypatch, capsys, case, fragment):
    out = tmp_path / "out"
    model, corpus, extra = str(inputs["bert"]), str(inputs["corpus"]), []
    if case == "empty corpus":
        (tmp_path / "empty.txt").write_text("\n\n")
        corpus = str(tmp_path / "empty.txt")
    elif case == "non-UTF-8 corpus":
        (tmp_path / "latin1.txt").write_bytes("the caf\xe9 is open\n".encode("latin-1"))
        corpus = str(tmp_path / "latin1.txt")
    elif case == "no mask token":
        model = str(_no_mask_model(inputs, tmp_path))
    elif case == "zero steps":
        extra = ["--steps", "0"]
    elif case == "unknown schedule":
        extra = ["--lr-schedule", "cosine"]
    elif case == "missing corpus":
        corpus = str(tmp_path / "nowhere.txt")
    elif case == "reinit too many layers":
        extra = ["--reinit-top-layers", "5"]
    elif case == "nothing to resume":
        extra = ["--resume"]
    args = ["mlm", "--model", model, "--corpus", corpus, "--output", str(out), "--steps", "2", *extra, "--quiet"]
    code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, stderr, fragment)
    assert not out.exists()


def test_existing_output_is_refused_and_left_byte_for_byte(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "earlier"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    (out / "mlm.json").write_text('{"earlier": true}')
    (out / ".hardcse-run").write_text('{"kind": "mlm"}')  # an earlier `hardcse mlm` run
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    args = ["mlm", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"]), "--output", str(out)]
    code, _, stderr = run_cli([*args, "--steps", "2", "--quiet"], monkeypatch, capsys)
    assert_one_sentence_error(code, stderr, "--overwrite")
    # --overwrite with a bad corpus still loses nothing: inputs are checked first.
    (tmp_path / "empty.txt").write_text("")
    bad = ["mlm", "--model", str(inputs["bert"]), "--corpus", str(tmp_path / "empty.txt"), "--output", str(out)]
    code, _, stderr = run_cli([*bad, "--overwrite", "--quiet"], monkeypatch, capsys)
    assert_one_sentence_error(code, stderr, "no sentences")
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    # A directory that is not an mlm run is never replaced, not even with --overwrite.
    (out / ".hardcse-run").write_text('{"kind": "train"}')
    code, _, stderr = run_cli([*args, "--steps", "2", "--overwrite", "--quiet"], monkeypatch, capsys)
    assert_one_sentence_error(code, stderr, "not a mlm run")
