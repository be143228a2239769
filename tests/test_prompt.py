"""The prompt representation (PromptBERT templates, prompt ClusterNS): template layouts and
position ids for a BERT and a RoBERTa tokenizer, the template denoising term against a hand-worked
example, the exported model against the training-time evaluation, and bad input in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_sentence_error, byte_level_vocab, make_tiny_bert, run_cli, write_corpus

import hardcse
from hardcse.errors import ConfigError
from hardcse.models.encoder import export_model
from hardcse.models.loading import describe_pooling, load_sentence_model
from hardcse.models.prompt import (
    LENGTH_KEY,
    MASK_POSITION_KEY,
    VIEW_KEY,
    PromptTransformer,
    add_final_period,
)
from hardcse.models.representation import Prompted
from hardcse.objectives.base import HardCSELoss
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.encoding import TwoViewEncoder

SENTENCES = ["the dog plays", "a man sits on the red house.", "she reads?", "two old men walk by the river"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    # No dropout: every forward is deterministic, so states can be compared exactly.
    return make_tiny_bert(tmp_path_factory.mktemp("prompt") / "bert", dropout=0.0)


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    path = tmp_path_factory.mktemp("prompt") / "roberta"
    path.mkdir(parents=True, exist_ok=True)
    vocab = byte_level_vocab()
    # transformers 5 ignores vocab_file=/merges_file= here (every character would be dropped): pass the dict.
    tokenizer = RobertaTokenizerFast(vocab=vocab, merges=[])
    assert len(tokenizer("The dog", add_special_tokens=False)["input_ids"]) == 7  # one token per byte, "Ġ" included
    tokenizer.save_pretrained(str(path))
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=200,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(str(path))
    return path


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# -- layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_training_rows_wrap_each_view_in_its_template(kind, tiny_bert, tiny_roberta):
    enc = PromptTransformer(str(tiny_bert if kind == "bert" else tiny_roberta), max_seq_length=32)
    tok = enc.tokenizer
    cls, sep = tok("", add_special_tokens=True)["input_ids"]
    rows = enc.two_views(enc.preprocess_sentences(SENTENCES[:2]))
    mask = tok.mask_token
    for i, sentence in enumerate(SENTENCES[:2]):
        words = _ids(tok, sentence)  # tokenised alone, as train_prompt.py
        for view, (prefix, suffix) in enumerate(
            [("This sentence : '", " ' means" + mask + "."), ("The sentence : '", " ' means" + mask + ".")]
        ):
            expected = [cls, *_ids(tok, prefix), *words, *_ids(tok, suffix), sep]
            r = view * 2 + i
            got = rows["input_ids"][r][rows["attention_mask"][r].bool()].tolist()
            assert got == expected, (kind, view, tok.convert_ids_to_tokens(got))
            assert rows[LENGTH_KEY][r] == len(words)
            assert rows[VIEW_KEY][r] == view
            assert got[int(rows[MASK_POSITION_KEY][r])] == tok.mask_token_id


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_encoding_uses_the_official_evaluation_text(kind, tiny_bert, tiny_roberta):
    enc = PromptTransformer(str(tiny_bert if kind == "bert" else tiny_roberta), max_seq_length=32)
    tok = enc.tokenizer
    features = enc.preprocess(SENTENCES)
    for row, mask, sentence in zip(features["input_ids"], features["attention_mask"], SENTENCES, strict=True):
        # A "." where the sentence has no final punctuation, the template text tokenised as a whole.
        text = f"This sentence : ' {add_final_period(sentence)} ' means{tok.mask_token}."
        assert row[mask.bool()].tolist() == tok(text)["input_ids"]
    assert [add_final_period(s)[-1] for s in SENTENCES] == [".", ".", "?", "."]


def test_long_sentences_are_cut_before_wrapping(tiny_bert):
    enc = PromptTransformer(str(tiny_bert), max_seq_length=8)
    long = " ".join(["dog"] * 40)
    rows = enc.two_views(enc.preprocess_sentences([long]))
    assert rows[LENGTH_KEY].tolist() == [8, 8]  # the sentence at 8 tokens, the template whole
    evaluated = enc.preprocess([long])["input_ids"][0].tolist()
    assert evaluated.count(enc.tokenizer.mask_token_id) == 1 and evaluated[-3] == enc.tokenizer.mask_token_id


# -- template denoising -----------------------------------------------------------------------


def test_denoising_term_matches_a_hand_worked_example(tiny_bert):
    # Template "a {sentence} b{mask}.": rows [CLS] a <sentence> b [MASK] . [SEP].
    enc = PromptTransformer(
        str(tiny_bert),
        max_seq_length=32,
        prompt_template="a {sentence} b{mask}.",
        prompt_template2="the {sentence} b{mask}.",
    )
    tok, bert = enc.tokenizer, enc.model
    cls, sep, mask = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    a, b, the, dot, dog = (tok.convert_tokens_to_ids(t) for t in ("a", "b", "the", ".", "dog"))
    enc.train()
    rows = enc.two_views(enc.preprocess_sentences(["dog dog dog"]))  # L = 3
    out = enc(rows)["sentence_embedding"]

    def state(ids: list[int], positions: list[int] | None, at: int) -> torch.Tensor:
        # An explicit attention mask: without one, transformers (5.25 on) reads a jump in the
        # position ids as the start of another packed sequence and attends within each part only.
        pos = None if positions is None else torch.tensor([positions])
        ids_t = torch.tensor([ids])
        return bert(input_ids=ids_t, position_ids=pos, attention_mask=torch.ones_like(ids_t)).last_hidden_state[0, at]

    # Empty template [CLS] a b [MASK] . [SEP]: the suffix (b [MASK] . [SEP]) moved by L = 3,
    # to the positions it has around three sentence tokens: 0, 1, 5, 6, 7, 8.
    delta_1 = state([cls, a, b, mask, dot, sep], [0, 1, 5, 6, 7, 8], 3)
    delta_2 = state([cls, the, b, mask, dot, sep], [0, 1, 5, 6, 7, 8], 3)
    filled_1 = state([cls, a, dog, dog, dog, b, mask, dot, sep], None, 6)
    filled_2 = state([cls, the, dog, dog, dog, b, mask, dot, sep], None, 6)
    torch.testing.assert_close(out[0], filled_1 - delta_1)
    torch.testing.assert_close(out[1], filled_2 - delta_2)
    # The term is subtracted with gradient: the template tokens' gradient differs from the one
    # of the [MASK] state alone (a random projection: a LayerNorm output's plain sum is constant).
    emb = bert.get_input_embeddings().weight
    w = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(0))
    (with_delta,) = torch.autograd.grad((out @ w).sum(), emb)

    # Without denoising, and at evaluation, the [MASK] state alone.
    enc.prompt_denoise = False
    plain = enc(rows)["sentence_embedding"]
    torch.testing.assert_close(plain[0], filled_1)
    (without,) = torch.autograd.grad((plain @ w).sum(), emb)
    assert without[b].abs().sum() > 0 and not torch.allclose(with_delta[b], without[b])
    torch.testing.assert_close(with_delta[dog], without[dog])  # the sentence token is not in the empty template
    enc.prompt_denoise = True
    enc.eval()
    with torch.no_grad():
        evaluated = enc(enc.preprocess(["dog dog dog"]))["sentence_embedding"][0]
    torch.testing.assert_close(evaluated, state([cls, a, dog, dog, dog, dot, b, mask, dot, sep], None, 7))


def test_roberta_empty_template_positions_start_at_zero(tiny_roberta):
    # get_delta passes position ids 0.. explicitly, also for RoBERTa (whose rows count from 2).
    enc = PromptTransformer(str(tiny_roberta), max_seq_length=32)
    tok = enc.tokenizer
    enc.train()
    prefix, suffix = _ids(tok, "This sentence : '"), _ids(tok, f" ' means{tok.mask_token}.")
    empty = [tok.bos_token_id, *prefix, *suffix, tok.eos_token_id]
    length = 4
    positions = list(range(len(empty)))
    positions[1 + len(prefix) :] = [p + length for p in positions[1 + len(prefix) :]]
    ids = torch.tensor([empty])  # with a mask: see test_denoising_term_matches_a_hand_worked_example
    expected = enc.model(
        input_ids=ids, position_ids=torch.tensor([positions]), attention_mask=torch.ones_like(ids)
    ).last_hidden_state
    got = enc.template_states(torch.tensor([1, 0]), torch.tensor([length, length]))
    at = 1 + len(prefix) + suffix.index(tok.mask_token_id)
    torch.testing.assert_close(got[1], expected[0, at])
    assert not torch.allclose(got[0], got[1])  # view 1's template is another text


def test_loss_sees_two_template_views(tiny_bert):
    torch.manual_seed(0)
    model = Prompted().build(str(tiny_bert), max_seq_length=32)
    model.train()
    loss = HardCSELoss(model)
    features = model[0].preprocess_sentences(SENTENCES)
    z1, z2 = loss.encoder.encode_two_views(model, features)
    assert z1.shape == z2.shape == (len(SENTENCES), 32)
    assert not torch.allclose(z1, z2)  # different templates, even without dropout
    value = loss([features])["infonce"]
    value.backward()
    assert model[0].model.get_input_embeddings().weight.grad is not None


# -- export -----------------------------------------------------------------------------------


def test_exported_model_encodes_as_the_training_evaluation(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = Prompted().build(str(tiny_bert), max_seq_length=32)
    model.eval()
    during_training = model.encode(SENTENCES, convert_to_tensor=True)
    export_model(model, tmp_path / "model", eval_max_seq_length=128)
    modules = json.loads((tmp_path / "model" / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["hardcse.models.prompt.PromptTransformer"]

    loaded = load_sentence_model(str(tmp_path / "model"))
    assert describe_pooling(loaded) == "prompt-mask"
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True), during_training)
    # Plain sentence-transformers: with hardcse installed and its flag for outside classes.
    plain = SentenceTransformer(str(tmp_path / "model"), trust_remote_code=True)
    torch.testing.assert_close(plain.encode(SENTENCES, convert_to_tensor=True), during_training)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "model"))
    with pytest.raises(ConfigError, match="without --pooling"):
        load_sentence_model(str(tmp_path / "model"), pooling="cls")


@pytest.mark.slow
def test_evaluate_on_the_export_gives_the_run_s_numbers(tiny_bert, tmp_path, data_dir, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", 120)
    config = hardcse.make_config(
        recipe="clusterns",
        model=str(tiny_bert),
        corpus=[str(corpus)],
        steps=4,
        eval_steps=2,
        batch_size=16,
        lr=5e-4,
        output=str(tmp_path / "run"),
        data_dir=str(data_dir),
        eval_batch_size=256,
        test_tasks=["STSBenchmark", "SICKRelatedness"],
        prompt=True,
        clusterns={"k": 4, "theta": 0.99},
    )
    from hardcse.training.run import train

    # A comparison hands over the untrained scores of plain runs; a prompt run must score its own.
    plain_start = {"pooling": "cls", "tasks": {}, "avg": 99.0, "stsb_dev": 99.0}
    results = train(config, show_progress=False, start=plain_start)
    assert results["test"]["pooling"] == "prompt-mask"
    own_start = json.loads((tmp_path / "run" / "start.json").read_text())
    assert own_start["pooling"] == "prompt-mask" and own_start["stsb_dev"] != 99.0
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "hardcse must be installed" in card
    code, _, err = run_cli(
        ["evaluate", str(tmp_path / "run" / "model"), "--tasks", "STSBenchmark,SICKRelatedness",
         "--batch-size", "256", "--data-dir", str(data_dir), "--output", str(tmp_path / "scores.json")],
        monkeypatch,
        capsys,
    )  # fmt: skip
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())
    for task in ("STSBenchmark", "SICKRelatedness"):
        assert abs(scores["tasks"][task]["spearman"] - results["test"]["tasks"][task]["spearman"]) < 1e-6


# -- bad input --------------------------------------------------------------------------------


def test_template_without_mask_is_one_sentence(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="has no {mask}"):
        hardcse.make_config(prompt=True, prompt_template="This sentence : ' {sentence} ' means.")
    with pytest.raises(ConfigError, match="has no {sentence}"):
        hardcse.make_config(prompt=True, prompt_template2="means{mask}.")
    code, _, err = run_cli(
        ["train", "--quiet", "--set", "prompt=true", "--set", "prompt_template=This {sentence} means.",
         "--output", str(tmp_path / "run")],
        monkeypatch,
        capsys,
    )  # fmt: skip
    assert_one_sentence_error(code, err, "prompt_template", "{mask}")
    assert not (tmp_path / "run").exists()


def test_model_without_mask_token_is_one_sentence(tmp_path, monkeypatch, capsys, data_dir):
    from transformers import BertTokenizerFast

    monkeypatch.setenv("HARDCSE_DATA", str(data_dir))  # the data check comes first; let it pass
    path = make_tiny_bert(tmp_path / "nomask")
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").split()
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, mask_token=None).save_pretrained(str(path))
    with pytest.raises(ConfigError, match="no mask token"):
        Prompted().build(str(path))
    corpus = write_corpus(tmp_path / "corpus.txt", 20)
    code, _, err = run_cli(
        ["train", "--quiet", "--model", str(path), "--corpus", str(corpus), "--set", "prompt=true",
         "--output", str(tmp_path / "run")],
        monkeypatch,
        capsys,
    )  # fmt: skip
    assert_one_sentence_error(code, err, "no mask token")
    assert not (tmp_path / "run").exists()


def test_cached_and_chunked_steps_match_the_plain_step(tiny_bert):
    # The denoising pass runs inside each (re-)encoded mini-batch; the step's loss and gradient stay
    # those of the plain step (to float summation order, as without the prompt).
    grads, losses = {}, {}
    for mini, chunks in ((None, 1), (2, 1), (None, 2)):
        torch.manual_seed(0)
        model = Prompted().build(str(tiny_bert))
        model.train()
        step = None if mini is None else CachedStep(mini)
        loss = HardCSELoss(model, encoder=TwoViewEncoder(length_chunks=chunks), cached_step=step)
        out = loss([model[0].preprocess_sentences(SENTENCES)])
        sum(out.values()).backward()
        losses[mini, chunks] = float(out["infonce"].detach())
        grads[mini, chunks] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    base = grads[None, 1]
    for key, grad in grads.items():
        assert losses[key] == pytest.approx(losses[None, 1], rel=1e-5), key
        assert float((grad - base).abs().max() / base.abs().max()) < 1e-3, key
