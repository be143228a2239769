"""``hardcse convert``: synthetic SimCSE-family checkpoints -> plain ``SentenceTransformer(path)``.

The checkpoints are written here in the layouts the official code produces: a ``BertForCL`` /
``RobertaForCL`` state dict (``bert.*`` / ``roberta.*`` + ``mlp.dense.*``, optionally
``lm_head.*``, old ``position_ids`` buffers and ClusterNS's ``cluster.centroid``) as
``pytorch_model.bin`` or ``model.safetensors``, and the plain Hugging Face layout of
``simcse_to_huggingface.py`` (``mlp.*`` renamed to ``pooler.*``). The reference embedding is the
backbone's raw last-layer first-token vector computed with transformers directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_sentence_error, byte_level_vocab, make_tiny_bert, run_cli

from hardcse.errors import ConfigError, DataError
from hardcse.models.convert import RECORD_FILE, convert_checkpoint

SENTENCES = [
    "the dog runs in the city .",
    "a cat sits on the red house",
    "she reads a book",
    "two old men walk by the river and sing",
]


def _tiny_backbone(kind: str, path: Path) -> tuple[torch.nn.Module, object]:
    """Write a tiny config + tokenizer to ``path``; return a seeded base model (with pooler) and its tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    if kind == "bert":
        from transformers import AutoTokenizer, BertModel

        make_tiny_bert(path, dropout=0.0)
        torch.manual_seed(3)
        model = BertModel.from_pretrained(str(path))
        return model, AutoTokenizer.from_pretrained(str(path))
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    vocab = byte_level_vocab()
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = RobertaTokenizerFast(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"))
    tokenizer.save_pretrained(str(path))
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(3)
    model = RobertaModel(config)
    config.save_pretrained(str(path))
    return model, tokenizer


def write_cl_checkpoint(
    kind: str, path: Path, fmt: str = "bin", mlm: bool = False, extras: bool = True
) -> tuple[torch.nn.Module, object, dict[str, torch.Tensor]]:
    """A BertForCL/RobertaForCL checkpoint directory; returns (backbone, tokenizer, mlp weights)."""
    model, tokenizer = _tiny_backbone(kind, path)
    model.eval()
    d = model.config.hidden_size
    torch.manual_seed(4)
    mlp = {"weight": torch.randn(d, d) * 0.1, "bias": torch.randn(d) * 0.1}
    # BertForCL builds its backbone with add_pooling_layer=False: no pooler keys.
    state = {f"{kind}.{k}": v.clone() for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    state["mlp.dense.weight"], state["mlp.dense.bias"] = mlp["weight"], mlp["bias"]
    if extras:
        # transformers 4.2.1 saved this buffer; ClusterNS saves its centroids.
        state[f"{kind}.embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
        state["cluster.centroid"] = torch.randn(8, d)
    if mlm:
        state["lm_head.dense.weight"] = torch.randn(d, d)
        state["lm_head.bias"] = torch.zeros(model.config.vocab_size)
    for old in ("model.safetensors", "pytorch_model.bin"):
        (path / old).unlink(missing_ok=True)
    if fmt == "bin":
        torch.save(state, path / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["BertForCL" if kind == "bert" else "RobertaForCL"]
    (path / "config.json").write_text(json.dumps(config))
    return model, tokenizer, mlp


def write_hf_export(path: Path) -> tuple[torch.nn.Module, object, dict[str, torch.Tensor]]:
    """A simcse_to_huggingface.py output: plain BertModel whose pooler holds the trained MLP."""
    model, tokenizer = _tiny_backbone("bert", path)
    model.eval()
    d = model.config.hidden_size
    torch.manual_seed(5)
    mlp = {"weight": torch.randn(d, d) * 0.1, "bias": torch.randn(d) * 0.1}
    with torch.no_grad():
        model.pooler.dense.weight.copy_(mlp["weight"])
        model.pooler.dense.bias.copy_(mlp["bias"])
    (path / "model.safetensors").unlink(missing_ok=True)
    model.save_pretrained(str(path))
    return model, tokenizer, mlp


@torch.no_grad()
def raw_cls(model: torch.nn.Module, tokenizer, sentences: list[str]) -> torch.Tensor:
    """The reference: last-layer first-token vectors computed with transformers directly."""
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    return model(**batch).last_hidden_state[:, 0]


def st_embeddings(path: Path) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")  # plain loading, nothing from hardcse
    return model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=False, batch_size=8).cpu()


@pytest.mark.parametrize(
    ("kind", "fmt"), [("bert", "bin"), ("bert", "safetensors"), ("roberta", "bin"), ("roberta", "safetensors")]
)
def test_training_checkpoint_gives_the_backbones_cls_vectors(tmp_path, kind, fmt):
    model, tokenizer, _ = write_cl_checkpoint(kind, tmp_path / "ckpt", fmt=fmt, mlm=(kind == "roberta"))
    report = convert_checkpoint(tmp_path / "ckpt", tmp_path / "out")

    torch.testing.assert_close(st_embeddings(tmp_path / "out"), raw_cls(model, tokenizer, SENTENCES), atol=1e-6, rtol=0)
    assert report.layout == "training-checkpoint" and report.model_type == kind
    assert not report.kept_mlp and report.mlp_found
    assert report.dropped["MLP head"] == ["mlp.dense.bias", "mlp.dense.weight"]
    assert report.dropped["ClusterNS centroids"] == ["cluster.centroid"]
    if kind == "roberta":
        assert len(report.dropped["MLM head"]) == 2
    # The head is gone from the saved files, and the record and model card say so.
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not any(k.startswith(("mlp", "pooler", "lm_head", "cluster")) for k in saved)
    modules = json.loads((tmp_path / "out" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    pooling = json.loads((tmp_path / "out" / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode") == "cls" or pooling.get("pooling_mode_cls_token") is True
    record = json.loads((tmp_path / "out" / RECORD_FILE).read_text())
    assert record["kept_mlp"] is False and "MLP head" in record["dropped"]
    assert "MLP head was dropped" in (tmp_path / "out" / "README.md").read_text()


def test_weights_file_path_and_huggingface_export(tmp_path):
    model, tokenizer, _ = write_cl_checkpoint("bert", tmp_path / "ckpt", fmt="bin", extras=False)
    convert_checkpoint(tmp_path / "ckpt" / "pytorch_model.bin", tmp_path / "from-file")
    torch.testing.assert_close(
        st_embeddings(tmp_path / "from-file"), raw_cls(model, tokenizer, SENTENCES), atol=1e-6, rtol=0
    )

    model, tokenizer, _ = write_hf_export(tmp_path / "hf")
    report = convert_checkpoint(tmp_path / "hf", tmp_path / "out")
    assert report.layout == "huggingface-export"
    assert report.dropped["MLP head"] == ["mlp.dense.bias", "mlp.dense.weight"]
    torch.testing.assert_close(st_embeddings(tmp_path / "out"), raw_cls(model, tokenizer, SENTENCES), atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["training", "hf"])
def test_keep_mlp_appends_the_trained_head_as_dense_tanh(tmp_path, layout):
    if layout == "training":
        model, tokenizer, mlp = write_cl_checkpoint("bert", tmp_path / "ckpt", fmt="safetensors")
    else:
        model, tokenizer, mlp = write_hf_export(tmp_path / "ckpt")
    report = convert_checkpoint(tmp_path / "ckpt", tmp_path / "out", keep_mlp=True)
    assert report.kept_mlp and "MLP head" not in report.dropped
    expected = torch.tanh(raw_cls(model, tokenizer, SENTENCES) @ mlp["weight"].T + mlp["bias"])
    torch.testing.assert_close(st_embeddings(tmp_path / "out"), expected, atol=1e-6, rtol=0)
    modules = json.loads((tmp_path / "out" / "modules.json").read_text())
    assert modules[-1]["type"].rsplit(".", 1)[-1] == "Dense"


def test_mean_pooling_option(tmp_path):
    model, tokenizer, _ = write_cl_checkpoint("bert", tmp_path / "ckpt")
    convert_checkpoint(tmp_path / "ckpt", tmp_path / "out", pooling="avg")
    with torch.no_grad():
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(st_embeddings(tmp_path / "out"), expected, atol=1e-6, rtol=0)


def test_errors_are_one_clear_sentence(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        convert_checkpoint(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no weights in"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out")

    write_cl_checkpoint("bert", tmp_path / "ckpt", extras=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "exists")
    convert_checkpoint(tmp_path / "ckpt", tmp_path / "exists", overwrite=True)
    assert (tmp_path / "exists" / "modules.json").is_file()

    with pytest.raises(ConfigError, match="cannot express"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "o2", pooling="avg_first_last")
    with pytest.raises(ConfigError, match="unknown pooling"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "o2", pooling="cls_with_mlp")

    # A layout that is neither BertForCL nor a plain BERT.
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(DataError, match="unknown checkpoint layout"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "o3")
    # A pickle that is not plain tensors is refused, not unpickled.
    torch.save({"weight": torch.zeros(2), "args": Path("x")}, tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(DataError, match="holds Python objects other than tensors"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "o4")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()


def test_keep_mlp_without_head_and_missing_tokenizer(tmp_path):
    model, tokenizer = _tiny_backbone("bert", tmp_path / "plain")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "plain" / "model.safetensors"))
    with pytest.raises(ConfigError, match="has no MLP head"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out", keep_mlp=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "plain" / name).unlink(missing_ok=True)
    with pytest.raises(DataError, match="pass --tokenizer"):
        convert_checkpoint(tmp_path / "plain", tmp_path / "out")


def test_cli_convert(tmp_path, monkeypatch, capsys):
    model, tokenizer, _ = write_cl_checkpoint("bert", tmp_path / "ckpt", fmt="safetensors")
    code, out, err = run_cli(["convert", str(tmp_path / "ckpt"), str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0, err
    assert "Pooling(cls)" in out and "dropped MLP head" in out
    torch.testing.assert_close(st_embeddings(tmp_path / "out"), raw_cls(model, tokenizer, SENTENCES), atol=1e-6, rtol=0)

    code, _, err = run_cli(["convert", str(tmp_path / "ckpt"), str(tmp_path / "out")], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "already exists")
    code, _, err = run_cli(["convert", str(tmp_path / "missing"), str(tmp_path / "o")], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "does not exist")
