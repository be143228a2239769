"""The MTEB bridge (``hardcse evaluate --mteb``): missing package, offline data, reading MTEB's numbers.

mteb is an optional extra and its data lives on the Hugging Face hub, which tests never reach, so
most tests stand in a small fake ``mteb`` module. When mteb is installed, one test runs the real
``mteb.evaluate`` on hand-made pairs and checks the bridge reports its cosine Spearman.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_sentence_error, make_tiny_bert, run_cli

from hardcse.errors import ConfigError, DataError
from hardcse.evaluation import mteb_bridge
from hardcse.evaluation.mteb_bridge import SICKR_NOTE, evaluate_mteb

PAIRS = {
    "sentence1": ["a dog runs", "the cat sits", "a man sings", "two red cars", "she reads", "the old king"],
    "sentence2": ["a dog walks", "a cat eats", "a woman reads", "one blue car", "he writes", "a new king"],
    "score": [4.5, 3.0, 1.0, 2.0, 1.5, 3.5],
}


class FakeTask:
    """Just what the bridge uses of an MTEB task."""

    def __init__(self, name: str, fail: Exception | None = None) -> None:
        self.name = name
        self.metadata = types.SimpleNamespace(name=name, dataset={"path": f"mteb/{name.lower()}-sts"})
        self.dataset = None
        self.data_loaded = False
        self.fail = fail

    def load_data(self, **_: object) -> None:
        if self.fail is not None:
            raise self.fail
        self.dataset = {"test": [0] * 10}
        self.data_loaded = True


def fake_mteb(monkeypatch, fail: Exception | None = None) -> types.SimpleNamespace:
    """Install a fake ``mteb`` module; returns it (``calls`` records ``evaluate``'s task names)."""
    calls: list[list[str]] = []

    def evaluate(model, tasks, **kwargs):
        calls.append([t.name for t in tasks])
        results = [
            types.SimpleNamespace(task_name=t.name, scores={"test": [{"cosine_spearman": 0.5 + i / 100}]})
            for i, t in enumerate(tasks)
        ]
        return types.SimpleNamespace(task_results=results)

    module = types.SimpleNamespace(
        __version__="2.0-fake", get_task=lambda name: FakeTask(name, fail), evaluate=evaluate, calls=calls
    )
    monkeypatch.setitem(sys.modules, "mteb", module)
    return module


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", dropout=0.0)


def _model(path: Path, pooling: str = "mean"):
    from hardcse.models.loading import load_sentence_model

    return load_sentence_model(str(path), pooling=pooling, device="cpu")


def test_missing_package_is_one_sentence(monkeypatch, tmp_path, capsys, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "mteb", None)  # import mteb -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'hardcse\[mteb\]'"):
        mteb_bridge.require_mteb()
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--mteb"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "optional package mteb", "hardcse[mteb]")


def test_offline_data_is_one_sentence_before_any_encoding(monkeypatch, tiny_model_dir):
    fake = fake_mteb(
        monkeypatch, fail=ConnectionError("Couldn't reach 'mteb/sts12-sts' on the Hub (OfflineModeIsEnabled)")
    )
    with pytest.raises(
        DataError, match=r"MTEB could not load the data of STS12 \(mteb/sts12-sts\).*OfflineModeIsEnabled"
    ):
        evaluate_mteb(_model(tiny_model_dir), ["STS12", "SICK-R"])
    assert fake.calls == []  # nothing was encoded


def test_unreachable_hub_switches_to_cache_only(monkeypatch):
    """With no name resolution, the load runs with the hub client's and datasets' offline flags set."""
    import datasets.config
    from huggingface_hub import constants

    seen = {}

    class Probe(FakeTask):
        def load_data(self, **_: object) -> None:
            seen["flags"] = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
            super().load_data()

    monkeypatch.setattr("hardcse.models.loading._hub_resolvable", lambda: False)
    before = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    mteb_bridge._load(Probe("STS12"), "STS12")
    assert seen["flags"] == (True, True)
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_results_are_read_in_hardcse_shape(monkeypatch, tiny_model_dir):
    fake = fake_mteb(monkeypatch)
    result = evaluate_mteb(_model(tiny_model_dir), ["sickr", "STS-B", "sts12"], model_name="tiny")
    assert fake.calls == [["SICK-R", "STSBenchmark", "STS12"]]
    assert list(result["tasks"]) == ["STS12", "STSBenchmark", "SICKRelatedness"]  # the papers' order
    assert result["tasks"]["SICKRelatedness"]["spearman"] == pytest.approx(50.0)
    assert result["tasks"]["STS12"]["spearman"] == pytest.approx(52.0)
    assert result["tasks"]["STS12"]["pairs"] == 10
    assert result["avg"] == pytest.approx(51.0)
    assert result["source"] == "mteb" and result["aggregation"] == "all" and result["model"] == "tiny"


def test_cli_mteb_prints_the_table_and_the_sick_r_note(monkeypatch, capsys, tmp_path, tiny_model_dir):
    fake_mteb(monkeypatch)
    out_file = tmp_path / "mteb.json"
    code, out, err = run_cli(
        ["evaluate", str(tiny_model_dir), "--mteb", "--tasks", "STS-B,SICK-R", "--output", str(out_file)],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert "source=mteb" in out and "STS-B" in out and SICKR_NOTE in out
    assert json.loads(out_file.read_text())["source"] == "mteb"

    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--mteb", "--split", "dev"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "test sets only")
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--mteb", "--aggregation", "wmean"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "does not apply to --mteb")


def test_real_mteb_on_given_data_matches_a_direct_cosine_spearman(tiny_model_dir):
    pytest.importorskip("mteb")
    import datasets
    from scipy.stats import spearmanr

    model = _model(tiny_model_dir)
    data = {"STS12": datasets.DatasetDict({"test": datasets.Dataset.from_dict(PAIRS)})}
    result = evaluate_mteb(model, ["STS12"], batch_size=4, datasets=data)

    a = model.encode(PAIRS["sentence1"], normalize_embeddings=True)
    b = model.encode(PAIRS["sentence2"], normalize_embeddings=True)
    expected = 100 * spearmanr(PAIRS["score"], np.sum(a * b, axis=1)).statistic
    assert result["tasks"]["STS12"]["spearman"] == pytest.approx(expected, abs=1e-4)
    assert result["tasks"]["STS12"]["pairs"] == len(PAIRS["score"])
