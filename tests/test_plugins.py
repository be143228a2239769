"""Methods from outside hardcse, as plugins: the worked example of ``docs/extending.md`` (Decoupled
Contrastive Learning, a replacement head) is taken from that page and installed here as an outside
package, found through its entry point (group ``hardcse.methods``) or through the ``plugins``
setting, trained from the command line, resumed, compared and composed with ClusterNS in either
order with the same loss."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
import torch
import yaml
from helpers import make_tiny_bert, run_cli, write_all, write_corpus

import hardcse
from hardcse.errors import ConfigError
from hardcse.objectives import (
    BuildContext,
    HardCSELoss,
    compose,
    get_method,
    method_names,
    unregister,
)
from hardcse.objectives.registry import ENTRY_POINT_GROUP, is_method
from hardcse.training.config import TrainConfig, dump_yaml, make_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
MODULE = "hardcse_dcl"


def doc_file(name: str) -> str:
    """The code block that follows ``<!-- file: NAME -->`` in docs/extending.md, dedented."""
    text = DOC.read_text(encoding="utf-8")
    marker = text.index(f"<!-- file: {name} -->")
    match = re.compile(r"^[ \t]*```[a-z]*\n(.*?)^[ \t]*```", re.S | re.M).search(text, marker)
    assert match is not None, name
    return textwrap.dedent(match.group(1))


def _forget_plugin() -> None:
    """As in a new process: the method unregistered, its module not imported."""
    unregister("dcl")
    sys.modules.pop(MODULE, None)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on ``sys.path`` holding the documented module (not installed: no metadata)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / f"{MODULE}.py").write_text(doc_file(f"{MODULE}.py"), encoding="utf-8")
    _forget_plugin()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    yield root
    _forget_plugin()


def install(root: Path) -> None:
    """Install the documented package's metadata next to its module, as pip would: a dist-info
    directory with the entry points of the documented pyproject.toml."""
    project = tomllib.loads(doc_file("pyproject.toml"))["project"]
    points = project["entry-points"][ENTRY_POINT_GROUP]
    dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in points.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


class _Model:
    """What a method's build step needs of the model here: the embedding dimension."""

    def get_embedding_dimension(self) -> int:
        return 6


def _loss(recipe: str, **settings) -> HardCSELoss:
    config = TrainConfig.from_dict({"recipe": recipe, "batch_size": 8, **settings})
    built = compose(config.recipe, config.method_configs(), BuildContext(model=_Model(), sentences=[], global_batch=8))
    return HardCSELoss(torch.nn.Identity(), parts=built.parts, head=built.head)


def _views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    z1 = torch.randn(8, 6, generator=g)
    z2 = z1 + 0.5 * torch.randn(8, 6, generator=g)
    return z1.requires_grad_(True), z2.requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# Finding the method


def test_the_entry_point_finds_the_method_when_first_named(plugin_dir):
    assert not is_method("dcl")
    with pytest.raises(ConfigError, match="unknown recipe 'dcl'"):
        make_config(recipe="dcl")
    install(plugin_dir)
    assert "dcl" in method_names() and MODULE not in sys.modules  # listed, not imported yet
    method = get_method("dcl")
    assert MODULE in sys.modules and method.title == "DCL" and "Decoupled Contrastive Learning" in method.citation
    config = make_config(recipe="clusterns+dcl", dcl={"weighted": True})
    assert config.recipe == "clusterns+dcl" and config.dcl == {"weighted": True}
    assert config.method_configs()["dcl"].sigma == 0.5


def test_the_plugins_setting_imports_the_module_and_is_saved(plugin_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'dcl'"):
        make_config(recipe="dcl")
    config = make_config(recipe="dcl", plugins=[MODULE], dcl={"sigma": 0.25})
    assert config.plugins == [MODULE]
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(config), encoding="utf-8")
    assert yaml.safe_load(saved.read_text(encoding="utf-8"))["plugins"] == [MODULE]
    # What --resume and compare do with the saved file, in a process that never imported the module.
    _forget_plugin()
    again = make_config(config_file=saved)
    assert again.recipe == "dcl" and again.method_configs()["dcl"].sigma == 0.25
    _forget_plugin()
    assert TrainConfig.from_dict(yaml.safe_load(saved.read_text(encoding="utf-8"))).dcl["sigma"] == 0.25
    with pytest.raises(ConfigError, match="plugin module 'no_such_plugin' cannot be imported") as err:
        make_config(recipe="simcse", plugins=["no_such_plugin"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="dcl.sigma must be positive"):
        make_config(recipe="dcl", plugins=[MODULE], dcl={"sigma": 0})


# ---------------------------------------------------------------------------------------------
# The loss


def test_dcl_leaves_the_positive_out_of_the_denominator(plugin_dir):
    install(plugin_dir)
    z1, z2 = _views(0)
    cos = torch.nn.functional.cosine_similarity(z1[:, None], z2[None], dim=-1).detach() / 0.05
    eye = torch.eye(8, dtype=torch.bool)
    hand = (torch.logsumexp(cos.masked_fill(eye, float("-inf")), dim=1) - cos.diagonal()).mean()
    out = _loss("dcl").compute_loss_from_embeddings(z1, z2)
    assert set(out) == {"dcl"} and float(out["dcl"].detach()) == pytest.approx(float(hand), abs=1e-5)
    # DCLW: the positive weighted by 2 - N softmax_k(s_kk / sigma).
    weight = 2 - 8 * torch.softmax(cos.diagonal() * 0.05 / 0.5, dim=0)
    hand_w = (torch.logsumexp(cos.masked_fill(eye, float("-inf")), dim=1) - weight * cos.diagonal()).mean()
    out_w = _loss("dcl", dcl={"weighted": True}).compute_loss_from_embeddings(z1, z2)
    assert float(out_w["dcl"].detach()) == pytest.approx(float(hand_w), abs=1e-5)


def test_clusterns_and_dcl_compose_in_either_order_with_the_same_loss(plugin_dir):
    install(plugin_dir)
    clusterns = {"k": 4, "theta": 1.0, "bml_weight": 0.1, "seed": 3}
    losses = {recipe: _loss(recipe, clusterns=clusterns) for recipe in ("clusterns+dcl", "dcl+clusterns")}
    for step in range(3):  # step 0 starts the clustering; steps 1 and 2 add the centroid columns
        results = []
        for loss in losses.values():
            z1, z2 = _views(step)
            out = loss.compute_loss_from_embeddings(z1, z2)
            sum(out.values()).backward()
            results.append(({k: float(v.detach()) for k, v in out.items()}, z1.grad, z2.grad))
        (a, a1, a2), (b, b1, b2) = results
        assert a == b and set(a) == {"dcl", "bml"}
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert all(loss.last_diagnostics["cluster_started"] == 1.0 for loss in losses.values())
    # The composition cites every method, whatever the order.
    for loss in losses.values():
        assert [title for title, _ in loss.citations] == ["SimCSE", "DCL", "ClusterNS"]
        assert loss.citation.count("@inproceedings") == 3
        assert loss.get_config_dict()["head"] == {"name": "dcl", "weighted": False, "sigma": 0.5}


def test_a_user_method_injects_the_corpus_index_miner_next_to_hsimcse(tmp_path, monkeypatch):
    """The documented corpus-margin method: a built-in part (the corpus index miner, built from its
    own settings) in a method from outside, composed with HSimCSE, which has its own miner."""
    import importlib

    import torch.nn.functional as F
    from helpers import WORDS, make_tiny_training_model

    root = tmp_path / "site"
    root.mkdir()
    (root / "hardcse_corpus_margin.py").write_text(doc_file("hardcse_corpus_margin.py"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    try:
        importlib.import_module("hardcse_corpus_margin")
        model = make_tiny_training_model(tmp_path / "bert")
        sentences = [" ".join(WORDS[(7 * i + j) % 60] for j in range(3 + i % 5)) for i in range(24)]
        config = TrainConfig.from_dict(
            {"recipe": "hsimcse+corpus_margin", "batch_size": 8, "hsimcse": {"k": 3}, "corpus_margin": {"k": 2}}
        )
        context = BuildContext(model=model, sentences=sentences, global_batch=8)
        built = compose(config.recipe, config.method_configs(), context)
        assert [p.name for p in built.parts][-2:] == ["corpus_margin_index", "corpus_margin"]
        loss = HardCSELoss(torch.nn.Identity(), parts=built.parts)
        g = torch.Generator().manual_seed(0)
        z1 = torch.randn(8, 32, generator=g).requires_grad_(True)
        z2 = (z1.detach() + 0.3 * torch.randn(8, 32, generator=g)).requires_grad_(True)
        ids = torch.arange(8)
        out = loss.compute_loss_from_embeddings(z1, z2, ids)
        assert set(out) == {"infonce", "quad", "corpus_margin"}
        miner = next(p for p in loss.parts if p.name == "corpus_margin_index")
        near = miner.search(z1, ids)  # the same search, by hand
        assert not set(miner.last_ids[0].tolist()) & {0}  # the sentence itself is excluded
        q = F.cosine_similarity(z1.detach(), near, dim=-1)
        s = F.cosine_similarity(z1.detach(), z2.detach(), dim=-1)
        expected = 0.1 * torch.relu(q - s + 0.1).mean()
        assert float(out["corpus_margin"].detach()) == pytest.approx(float(expected), abs=1e-6)
        sum(out.values()).backward()
        assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    finally:
        unregister("corpus_margin")
        sys.modules.pop("hardcse_corpus_margin", None)


# ---------------------------------------------------------------------------------------------
# End to end: the command line, a resume, a comparison


@pytest.fixture
def tiny(tmp_path) -> dict[str, str]:
    return {
        "model": str(make_tiny_bert(tmp_path / "bert")),
        "corpus": str(write_corpus(tmp_path / "corpus.txt", lines=96)),
        "data": str(write_all(tmp_path / "data", pairs=6)),
    }


def _train_args(tiny: dict[str, str], out: Path, steps: int) -> list[str]:
    args = ["train", "--quiet", "--model", tiny["model"], "--corpus", tiny["corpus"], "--data-dir", tiny["data"]]
    args += ["--steps", str(steps), "--eval-steps", "2", "--batch-size", "16", "--lr", "5e-4", "--output", str(out)]
    return [*args, "--tasks", "STSBenchmark", "--set", "eval_batch_size=256"]


@pytest.mark.slow  # trains the tiny BERT three times
def test_dcl_trains_from_the_command_line_resumes_and_compares(plugin_dir, tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = _train_args(tiny, out, steps=2)
    args += ["--recipe", "clusterns+dcl", "--plugin", MODULE, "--set", "clusterns.k=8", "--set", "clusterns.theta=1"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    steps = [e for e in results["history"] if "loss" in e]
    assert steps and all({"dcl", "bml"} <= set(e) and "infonce" not in e for e in steps)
    for e in steps:  # the logged components (each rounded to 4 digits) sum to the logged loss
        assert e["loss"] == pytest.approx(e["dcl"] + e["bml"], abs=1.5e-4)
        assert e["diagnostics/cluster_started"] == 1.0 and "diagnostics/bml" in e
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["recipe"] == "clusterns+dcl" and saved["plugins"] == [MODULE]
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "yeh2022dcl" in card and "deng2023clusterns" in card and "gao2021simcse" in card

    # Resume a run of 4 steps from its checkpoint at step 2, in a "new process" (the module not imported).
    out4 = tmp_path / "run4"
    args4 = [*_train_args(tiny, out4, steps=4), "--recipe", "dcl", "--plugin", MODULE]
    code, _, err = run_cli(args4, monkeypatch, capsys)
    assert code == 0, err
    # The run's last kept checkpoint is at step 2 (the best; one is kept): without results.json it
    # looks like a run stopped after step 2.
    assert sorted(p.name for p in (out4 / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    (out4 / "results.json").unlink()
    _forget_plugin()
    code, _, err = run_cli(["train", "--quiet", "--output", str(out4), "--resume"], monkeypatch, capsys)
    assert code == 0, err
    resumed = json.loads((out4 / "results.json").read_text(encoding="utf-8"))
    assert resumed["recipe"] == "dcl" and resumed["steps"] == 4

    # A comparison finds the installed package's method by its entry point (no --plugin).
    _forget_plugin()
    install(plugin_dir)
    cmp = tmp_path / "cmp"
    args = ["compare", "--quiet", "--recipes", "simcse,dcl", "--seeds", "42,", "--output", str(cmp)]
    args += ["--data-dir", tiny["data"], "--set", f"model={tiny['model']}", "--set", f"corpus={tiny['corpus']}"]
    args += ["--set", "steps=2", "--set", "eval_steps=2", "--set", "batch_size=16", "--set", "eval_batch_size=256"]
    args += ["--set", "test_tasks=[STSBenchmark]"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert (cmp / "dcl-s42" / "results.json").is_file() and (cmp / "report.md").is_file()
    hardcse.make_config(recipe="dcl")  # still known in this process
