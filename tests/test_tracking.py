"""Live experiment tracking (``--report-to``): names checked before anything loads, and a few steps
trained with TensorBoard whose event files are read back (loss components, STS-B dev, the method
diagnostics under their own namespace)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, run_cli, write_all, write_corpus
from helpers import make_tiny_bert as make_bert

from hardcse.errors import ConfigError
from hardcse.training.config import make_config
from hardcse.training.mlm import MLMConfig
from hardcse.training.tracking import TENSORBOARD_DIR, report_targets, training_report_to

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed (pip install tensorboard)"
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tracking")
    write_all(root / "data", pairs=6)
    return {"bert": make_bert(root / "bert"), "corpus": write_corpus(root / "corpus.txt"), "data": root / "data"}


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard event files under ``run``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def test_report_targets_accepts_names_lists_and_commas():
    assert report_targets(None) == [] and report_targets([]) == [] and report_targets("none") == []
    assert report_targets(["None"]) == []
    assert training_report_to(["none"]) == "none"


@needs_tensorboard
def test_report_targets_checks_installed_integrations():
    assert report_targets("tensorboard") == ["tensorboard"]
    assert report_targets(["tensorboard,TensorBoard"]) == ["tensorboard"]
    assert training_report_to(["tensorboard"]) == ["tensorboard"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("neptune-ish", "unknown --report-to target 'neptune-ish'; choose one or more of tensorboard, wandb"),
        (["none", "wandb"], "cannot be combined with wandb"),
    ],
)
def test_bad_report_to_is_one_sentence(value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        report_targets(value)


def test_a_missing_integration_names_its_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the 'wandb' package, which is not installed; install it \(pip"):
        report_targets("wandb")
    with pytest.raises(ConfigError, match="'wandb' package"):
        make_config(report_to="wandb")
    with pytest.raises(ConfigError, match="'wandb' package"):
        MLMConfig(report_to=["wandb"]).validate()


def test_train_refuses_an_unknown_target_before_creating_anything(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--quiet", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"])]
    args += ["--data-dir", str(inputs["data"]), "--output", str(out), "--report-to", "tensorbored"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, "unknown --report-to target 'tensorbored'")
    assert not out.exists()


@needs_tensorboard
def test_train_with_tensorboard_logs_components_dev_score_and_diagnostics(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--quiet",
        "--recipe",
        "hsimcse",
        "--model",
        str(inputs["bert"]),
        "--corpus",
        str(inputs["corpus"]),
    ]
    args += ["--data-dir", str(inputs["data"]), "--output", str(out), "--steps", "4", "--eval-steps", "2"]
    args += ["--batch-size", "16", "--tasks", "STS-B", "--report-to", "tensorboard"]
    args += ["--set", "hsimcse.refresh_steps=2", "--set", "eval_batch_size=64"]
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert (out / TENSORBOARD_DIR).is_dir()
    scalars = _scalars(out / TENSORBOARD_DIR)
    # The loss and each component, every step.
    for tag in ("train/loss", "train/infonce", "train/quad"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4], tag
    # The STS-B dev score at every evaluation.
    assert [step for step, _ in scalars["eval/stsb_spearman"]] == [2, 4]
    # HSimCSE's diagnostics under their own namespace: its diagnostic named like a component
    # ("quad", the unweighted hinge) does not replace the component (the weighted one).
    for name in ("hinge_active", "p_mean", "quad"):
        assert len(scalars[f"train/diagnostics/{name}"]) == 4, name
    component = dict(scalars["train/quad"])
    diagnostic = dict(scalars["train/diagnostics/quad"])
    assert component[4] == pytest.approx(0.22 * diagnostic[4], rel=1e-3, abs=1e-4)  # logs keep 4 digits
    # The run's own history holds the same diagnostics, each once, under the same namespace.
    import json

    history = json.loads((out / "results.json").read_text())["history"]
    last = next(entry for entry in history if entry["step"] == 4)
    assert last["diagnostics/hinge_active"] == pytest.approx(
        dict(scalars["train/diagnostics/hinge_active"])[4], abs=1e-6
    )
    assert not any(key.startswith("diagnostics/diagnostics/") for entry in history for key in entry)
    assert (out / "config.yaml").read_text().count("- tensorboard") == 1


@needs_tensorboard
def test_mlm_with_tensorboard_logs_the_loss(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "mlm"
    args = ["mlm", "--quiet", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"])]
    args += [
        "--output",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--save-steps",
        "3",
        "--report-to",
        "tensorboard",
    ]
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    scalars = _scalars(out / TENSORBOARD_DIR)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
