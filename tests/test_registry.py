"""The method registry: recipes and their errors, composition (``clusterns+hsimcse``), and a method
registered from outside hardcse (this file), trained end to end, composed and compared.

The outside method is the proof of the extension path (``docs/extending.md`` explains the same code):
a config dataclass, one :class:`Part` and a step hook, registered without editing any hardcse file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import WORDS, make_tiny_bert, run_cli, write_all

import hardcse
from hardcse.errors import ConfigError
from hardcse.index import CorpusIndex
from hardcse.objectives import (
    STAGES,
    BuildContext,
    Built,
    ContrastiveBatch,
    HardCSELoss,
    Method,
    Part,
    StepHook,
    StepInfo,
    compose,
    get_method,
    method_names,
    parse_recipe,
    register,
    unregister,
)
from hardcse.objectives.base import info_nce, pairwise_cosine
from hardcse.objectives.clusterns import ClusterNSConfig, clusterns_parts
from hardcse.objectives.hsimcse import HSimCSEConfig, hsimcse_parts
from hardcse.objectives.parts.corpus_index import CorpusIndexNegative
from hardcse.training.config import TrainConfig, dump_yaml
from hardcse.training.presets import preset_names, published_averages, resolve_preset

# ---------------------------------------------------------------------------------------------
# A method from outside: the uniformity term of Wang & Isola (ICML 2020) as an auxiliary loss.


@dataclass
class UniformityConfig:
    """``weight``: lambda of the term; ``t``: its temperature (2 in the paper)."""

    weight: float = 0.1
    t: float = 2.0

    def validate(self) -> None:
        if self.weight < 0 or self.t <= 0:
            raise ConfigError(f"uniformity needs weight >= 0 and t > 0, got {self.weight} and {self.t}.")


class UniformityPart(Part):
    """Adds ``uniformity = weight * log mean_{i != j} exp(-t ||u_i - u_j||^2)``, ``u`` the unit view-1 vectors."""

    name = "uniformity"

    def __init__(self, config: UniformityConfig) -> None:
        super().__init__()
        self.config = config

    def contribute(self, batch: ContrastiveBatch) -> None:
        u = F.normalize(batch.z1.float(), dim=-1)
        sq = torch.cdist(u, u).pow(2)
        off = ~torch.eye(batch.size, dtype=torch.bool, device=u.device)
        value = torch.logsumexp(-self.config.t * sq[off], dim=0) - math.log(int(off.sum()))
        batch.add_loss("uniformity", self.config.weight * value)
        batch.diagnostics["uniformity_raw"] = float(value.detach())


@dataclass
class StepRecorder(StepHook):
    """A hook that records the steps it was called at (hooks from outside run too)."""

    begun: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)

    def on_train_begin(self, info: StepInfo) -> None:
        self.begun.append(info.step)

    def on_step_end(self, info: StepInfo) -> None:
        assert info.model is not None and info.max_steps is not None
        self.ended.append(info.step)


RECORDERS: list[StepRecorder] = []


def build_uniformity(config: UniformityConfig, context) -> Built:
    recorder = StepRecorder()
    RECORDERS.append(recorder)
    return Built(parts=[UniformityPart(config)], hooks=[recorder])


UNIFORMITY = Method(
    name="uniformity",
    config_class=UniformityConfig,
    build=build_uniformity,
    cpu_settings={"weight": 0.1},
    summary="SimCSE plus the uniformity term of Wang & Isola (2020)",
)


@pytest.fixture(scope="module")
def uniformity():
    register(UNIFORMITY)
    yield UNIFORMITY
    unregister("uniformity")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("registry")
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(300):
        idx = torch.randint(0, 60, (int(torch.randint(4, 10, (1,), generator=rng)),), generator=rng).tolist()
        lines.append(" ".join(WORDS[i] for i in idx))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = {
        "model": str(make_tiny_bert(root / "bert")),
        "corpus": [str(corpus)],
        "data_dir": str(write_all(root / "data", pairs=6)),
        "steps": 4,
        "eval_steps": 2,
        "batch_size": 32,  # ClusterNS' cpu settings use K = 32
        "lr": 5e-4,
        "eval_batch_size": 256,
        "test_tasks": ["STSBenchmark", "SICKRelatedness"],
        "hsimcse": {"bank_size": 128},
    }
    return {"root": root, "overrides": overrides}


# ---------------------------------------------------------------------------------------------
# Recipes


def test_builtin_methods_are_registered_objects():
    assert method_names()[:3] == ["simcse", "clusterns", "hsimcse"]
    clusterns = get_method("clusterns")
    assert clusterns.config_class is ClusterNSConfig and clusterns.cpu_settings["k"] == 32
    assert set(clusterns.presets) == {
        f"clusterns-{b}" for b in ("bert-base", "bert-large", "roberta-base", "roberta-large")
    } | {f"clusterns-prompt-{b}" for b in ("bert-base", "bert-large", "roberta-base")}
    assert all(p.get("prompt", False) == ("-prompt-" in n) for n, p in clusterns.presets.items())
    assert all(p["recipe"] == "clusterns" for p in clusterns.presets.values())
    assert get_method("hsimcse").config_class is HSimCSEConfig and "IJCNN" in get_method("hsimcse").citation
    assert "simcse-bert-base" in preset_names() and "hsimcse-roberta-base" in preset_names()
    assert published_averages()["clusterns-bert-base"] == 77.55
    with pytest.raises(ConfigError, match="unknown method 'nope'; registered methods are simcse, clusterns, hsimcse"):
        get_method("nope")


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("clusterns+nope", "unknown recipe 'nope' in 'clusterns+nope'"),
        ("clusterns+clusterns", "names clusterns twice"),
        ("simcse+hsimcse", "write 'hsimcse'"),
        ("clusterns++hsimcse", "empty method name"),
        ("+", "the recipe is empty"),
    ],
)
def test_bad_recipes_are_one_sentence(recipe, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")) as err:
        hardcse.make_config(recipe=recipe)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_a_composition_is_one_recipe_string_also_from_a_yaml_list(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: [clusterns, hsimcse]\nclusterns:\n  k: 16\n", encoding="utf-8")
    config = hardcse.make_config(config_file=path)
    assert config.recipe == "clusterns+hsimcse" and config.output == "runs/clusterns+hsimcse-cpu"
    assert [m.name for m in parse_recipe(config.recipe)] == ["clusterns", "hsimcse"]
    # The cpu preset merges each method's cpu settings; the file's settings win.
    assert config.clusterns["k"] == 16 and config.hsimcse["bank_size"] == 4096
    typed = config.method_configs()
    assert isinstance(typed["clusterns"], ClusterNSConfig) and isinstance(typed["hsimcse"], HSimCSEConfig)
    saved = yaml.safe_load(dump_yaml(config))
    assert saved["recipe"] == "clusterns+hsimcse" and saved["clusterns"]["k"] == 16 and "methods" not in saved
    assert TrainConfig.from_dict(saved) == config
    assert resolve_preset("cpu", " clusterns + hsimcse ")["hsimcse"]["bank_size"] == 4096


def test_earlier_config_yaml_still_loads():
    # config.yaml before the registry: both method mappings always written, empty for other recipes.
    earlier = {"recipe": "simcse", "steps": 10, "clusterns": {}, "hsimcse": {}}
    config = TrainConfig.from_dict(earlier)
    assert config.recipe == "simcse" and config.clusterns == {} and "clusterns" not in config.to_dict()
    config = TrainConfig.from_dict({"recipe": "clusterns", "clusterns": {"k": 8}, "hsimcse": {}})
    assert config.clusterns == {"k": 8} and config.method_configs()["clusterns"].k == 8


def test_clusterns_batch_check_has_one_home():
    with pytest.raises(ConfigError, match="K=32 sentences in a .global. batch, got N=16"):
        hardcse.make_config(recipe="clusterns+hsimcse", batch_size=16)
    hardcse.make_config(recipe="hsimcse", batch_size=16)  # ClusterNS' settings only count in its recipes


def _views(n: int = 8, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g)
    return z1, z1 + 0.3 * torch.randn(n, d, generator=g)


def _hsimcse_parts(d: int) -> list[Part]:
    index = CorpusIndex(kind="flat")
    bank = F.normalize(torch.randn(40, d, generator=torch.Generator().manual_seed(5)), dim=-1).numpy()
    index.build(np.ascontiguousarray(bank, dtype=np.float32), step=0)
    config = HSimCSEConfig(k=3, seed=1, exclude_self=False, margin=1.0)  # margin 1: an active hinge
    return hsimcse_parts(config, CorpusIndexNegative(config.corpus_index(), index, owner="hsimcse"))


def test_composed_loss_is_infonce_with_centroid_columns_plus_bml_plus_quad():
    """``clusterns+hsimcse`` = InfoNCE over [S | centroid columns] + lambda BML + lambda' L_quad, on one batch."""
    cfg = ClusterNSConfig(k=4, theta=1.0, seed=3)
    composed = HardCSELoss(torch.nn.Identity(), [*clusterns_parts(cfg, dim=6, batch_size=8), *_hsimcse_parts(6)])
    alone = clusterns_parts(cfg, dim=6, batch_size=8)  # the same state machine, run by hand
    hsim = _hsimcse_parts(6)
    for step in range(3):  # step 0 starts the clustering, later steps use the centroids
        z1, z2 = _views(seed=step)
        out = composed.compute_loss_from_embeddings(z1, z2)
        batch = ContrastiveBatch(z1=z1, z2=z2, sim=pairwise_cosine(z1, z2), ids=None, step=step, temperature=0.05)
        for part in [*alone, *hsim]:  # already in stage order
            part(batch)
        assert set(out) == {"infonce", "bml", "quad"}
        assert torch.allclose(out["infonce"], info_nce(batch), atol=1e-6)
        assert len(batch.extra_columns) == (1 if step > 0 else 0)  # centroid columns from step 1 on
        plain = info_nce(ContrastiveBatch(z1=z1, z2=z2, sim=batch.sim, ids=None, step=step, temperature=0.05))
        assert (float(out["infonce"]) != float(plain)) == (step > 0)  # the columns change the denominator
        assert torch.allclose(out["bml"], batch.losses["bml"], atol=1e-7)
        assert torch.allclose(out["quad"], batch.losses["quad"], atol=1e-6) and float(out["quad"]) > 0
        assert set(batch.positives) == {"adversarial"} and set(batch.hard_negatives) == {"in_batch_hardest", "corpus"}
        assert (batch.false_negatives is not None) == (step > 0)
    assert {"cluster_started", "p_mean", "quad"} <= set(composed.last_diagnostics)


def test_a_recipe_gives_the_same_loss_gradients_and_diagnostics_in_either_order():
    """clusterns+hsimcse and hsimcse+clusterns: the parts run by stage (``STAGES``), so the order of the
    methods in a recipe changes only the order of the parts in the loss (and in its saved state)."""
    cfg = ClusterNSConfig(k=4, theta=1.0, seed=3, false_negatives="both", bml_weight=0.1)
    losses = {
        "clusterns+hsimcse": HardCSELoss(
            torch.nn.Identity(), [*clusterns_parts(cfg, dim=6, batch_size=8), *_hsimcse_parts(6)]
        ),
        "hsimcse+clusterns": HardCSELoss(
            torch.nn.Identity(), [*_hsimcse_parts(6), *clusterns_parts(cfg, dim=6, batch_size=8)]
        ),
    }
    stages = [p.stage for p in losses["hsimcse+clusterns"].ordered_parts()]
    assert stages == sorted(stages, key=STAGES.index)
    results = {}
    for recipe, loss in losses.items():
        steps = []
        for step in range(3):
            z1, z2 = (v.clone().requires_grad_(True) for v in _views(seed=step))
            out = loss.compute_loss_from_embeddings(z1, z2)
            sum(out.values()).backward()
            steps.append((out, dict(loss.last_diagnostics), z1.grad, z2.grad))
        results[recipe] = steps
    for a, b in zip(results["clusterns+hsimcse"], results["hsimcse+clusterns"], strict=True):
        assert set(a[0]) == set(b[0]) == {"infonce", "bml", "quad"}
        for key in a[0]:
            assert torch.allclose(a[0][key], b[0][key], atol=1e-6), key
        timings = ("retrieval_ms", "index_build_s")
        assert {k: v for k, v in a[1].items() if k not in timings} == pytest.approx(
            {k: v for k, v in b[1].items() if k not in timings}, abs=1e-6
        )
        assert torch.allclose(a[2], b[2], atol=1e-6) and torch.allclose(a[3], b[3], atol=1e-6)
    # Both cite every method (in recipe order), each once.
    assert set(losses["clusterns+hsimcse"].citations) == set(losses["hsimcse+clusterns"].citations)
    assert [t for t, _ in losses["hsimcse+clusterns"].citations] == ["SimCSE", "HSimCSE", "ClusterNS"]
    assert all(
        key in losses["hsimcse+clusterns"].citation for key in ("gao2021simcse", "deng2023clusterns", "hsimcse2023")
    )


def test_compose_refuses_two_parts_of_one_name():
    class Twice(Part):
        name = "twice"

        def contribute(self, batch: ContrastiveBatch) -> None:
            pass

    @dataclass
    class NoSettings:
        pass

    register(Method(name="twice_a", config_class=NoSettings, build=lambda c, ctx: [Twice()]))
    register(Method(name="twice_b", config_class=NoSettings, build=lambda c, ctx: [Twice(), Twice()]))
    try:
        context = BuildContext(model=None, sentences=[], global_batch=8)
        configs = {"twice_a": NoSettings(), "twice_b": NoSettings()}
        with pytest.raises(ConfigError, match="methods 'twice_a' and 'twice_b' both add a part named 'twice'"):
            compose("twice_a+twice_b", configs, context)
        with pytest.raises(ConfigError, match="method 'twice_b' adds two parts named 'twice'"):
            compose("twice_b", configs, context)
    finally:
        unregister("twice_a")
        unregister("twice_b")


# ---------------------------------------------------------------------------------------------
# End to end on the tiny BERT


@pytest.mark.slow  # trains on the tiny BERT (> 10 s on 2 cores)
def test_cli_trains_the_composition(inputs, tmp_path, monkeypatch, capsys):
    o = inputs["overrides"]
    out = tmp_path / "run"
    args = ["train", "--recipe", "clusterns+hsimcse", "--model", o["model"], "--corpus", o["corpus"][0]]
    args += ["--steps", "4", "--eval-steps", "2", "--batch-size", "32", "--lr", "5e-4", "--output", str(out)]
    args += ["--data-dir", o["data_dir"], "--set", "hsimcse.bank_size=128", "--set", "clusterns.k=8"]
    args += ["--tasks", "STSBenchmark", "--set", "eval_batch_size=256"]
    code, stdout, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 0, stderr
    results = hardcse_results(out)
    assert results["recipe"] == "clusterns+hsimcse"
    steps = [e for e in results["history"] if "loss" in e]
    assert len(steps) == 4
    assert all({"infonce", "bml", "quad", "diagnostics/cluster_started", "diagnostics/p_mean"} <= set(e) for e in steps)
    # The logged components sum to the logged loss (diagnostics such as the unweighted BML apart).
    not_components = {"step", "loss", "learning_rate", "grad_norm", "stsb_dev", "epoch"}
    for e in steps:
        components = [v for k, v in e.items() if k not in not_components and not k.startswith("diagnostics/")]
        assert len(components) == 3 and e["loss"] == pytest.approx(sum(components), abs=2.5e-4)  # 4 digits each
        assert e["diagnostics/bml"] == 0.0 or e["bml"] != e["diagnostics/bml"]  # weighted vs unweighted
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["recipe"] == "clusterns+hsimcse" and saved["clusterns"]["k"] == 8
    assert saved["hsimcse"]["bank_size"] == 128


def hardcse_results(out: Path) -> dict:
    import json

    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_outside_method_bad_settings_are_refused_before_anything_loads(uniformity):
    with pytest.raises(ConfigError, match="'uniformity.weight' in the options must be a number"):
        hardcse.make_config(recipe="uniformity", uniformity={"weight": "abc"})
    with pytest.raises(ConfigError, match="unknown key 'uniformity.w' in the options; valid keys are"):
        hardcse.make_config(recipe="uniformity", uniformity={"w": 1})
    with pytest.raises(ConfigError, match="uniformity needs weight >= 0"):
        hardcse.make_config(recipe="uniformity", uniformity={"weight": -1})
    config = hardcse.make_config(recipe="uniformity")
    assert config.uniformity == {"weight": 0.1} and config.method_configs()["uniformity"] == UniformityConfig()
    with pytest.raises(ConfigError, match="already registered"):
        register(UNIFORMITY)
    with pytest.raises(ConfigError, match="built-in method"):
        register(Method(name="clusterns", config_class=UniformityConfig, build=build_uniformity))


@pytest.mark.slow  # trains on the tiny BERT (> 10 s on 2 cores)
def test_outside_method_trains_end_to_end_alone_and_composed(uniformity, inputs, tmp_path):
    RECORDERS.clear()
    results = hardcse.train(
        {**inputs["overrides"], "recipe": "uniformity", "output": str(tmp_path / "u")},
        uniformity={"weight": 0.5},
        show_progress=False,
    )
    steps = [e for e in results["history"] if "loss" in e]
    assert len(steps) == 4 and all("uniformity" in e and "diagnostics/uniformity_raw" in e for e in steps)
    assert all(e["uniformity"] == pytest.approx(0.5 * e["diagnostics/uniformity_raw"], abs=1e-3) for e in steps)
    assert RECORDERS[-1].begun == [0] and RECORDERS[-1].ended == [1, 2, 3, 4]
    saved = yaml.safe_load((tmp_path / "u" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["recipe"] == "uniformity" and saved["uniformity"] == {"weight": 0.5}

    composed = hardcse.train(
        {**inputs["overrides"], "recipe": "clusterns+uniformity", "output": str(tmp_path / "cu")},
        clusterns={"k": 8, "theta": 1.0},
        show_progress=False,
    )
    steps = [e for e in composed["history"] if "loss" in e]
    assert all({"infonce", "bml", "uniformity", "diagnostics/cluster_started"} <= set(e) for e in steps)
    assert steps[-1]["diagnostics/cluster_started"] == 1.0


@pytest.mark.slow  # trains on the tiny BERT (> 10 s on 2 cores)
def test_outside_method_is_compared(uniformity, inputs, tmp_path):
    report = hardcse.compare(
        "simcse,uniformity", seeds=1, output=tmp_path / "cmp", show_progress=False, **inputs["overrides"]
    )
    assert list(report["recipes"]) == ["simcse", "uniformity"]
    assert (tmp_path / "cmp" / "uniformity-s42" / "results.json").is_file()
    entry = report["recipes"]["uniformity"]
    assert entry["recipe"] == "uniformity" and entry["vs_baseline"]["baseline"] == "simcse"
    assert (tmp_path / "cmp" / "report.md").is_file()
