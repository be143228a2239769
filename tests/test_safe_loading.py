"""Safe loading: a checkpoint never runs code on ``--resume``, and remote model code needs a flag.

A run is trained on the tiny BERT and cut back to its step-4 checkpoint (as if killed). Into a
copy of it a malicious pickle is planted (``__reduce__`` runs ``exec``, which would write a marker
file); ``hardcse train --resume`` must refuse it in one sentence, exit non-zero and never create
the marker, for every pickled file the trainer loads on resume. The payload is first shown to
work when unpickled without ``weights_only``, so the test cannot pass vacuously.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import assert_one_sentence_error, run_cli, write_all, write_corpus
from helpers import make_tiny_bert as make_bert

import hardcse
from hardcse.training.checkpoints import verify_checkpoint
from hardcse.training.run import train


class Payload:
    """Unpickling this runs ``exec`` of a line that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def plant(path: Path, marker: Path) -> None:
    """Replace ``path`` by a torch.save'd file whose unpickling would write ``marker``."""
    torch.save({"state": Payload(marker), "param_groups": []}, path)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A tiny run cut back to its step-4 checkpoint, as a killed run leaves it."""
    root = tmp_path_factory.mktemp("safe")
    make_bert(root / "bert")
    write_corpus(root / "corpus.txt")
    write_all(root / "data", pairs=6)
    out = root / "run"
    cfg = hardcse.make_config(
        model=str(root / "bert"),
        corpus=[str(root / "corpus.txt")],
        data_dir=str(root / "data"),
        output=str(out),
        steps=8,
        eval_steps=4,
        batch_size=8,
        lr=5e-4,
        eval_batch_size=256,
        test_tasks=["STSBenchmark"],
        save_total_limit=5,
    )
    train(cfg, show_progress=False)
    shutil.rmtree(out / "checkpoints" / "checkpoint-8")
    shutil.rmtree(out / "model")
    (out / "results.json").unlink()
    return out


def test_the_payload_really_runs_code(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_clean_checkpoint_passes_the_check(interrupted_run):
    verify_checkpoint(interrupted_run / "checkpoints" / "checkpoint-4")


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "pytorch_model.bin"])
def test_resume_refuses_a_malicious_pickle(interrupted_run, tmp_path, monkeypatch, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    marker = tmp_path / "pwned"
    plant(run / "checkpoints" / "checkpoint-4" / name, marker)
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to resume", name, "would run code")
    assert not marker.exists()
    assert not (run / "results.json").exists()


def test_trainer_itself_loads_with_weights_only(interrupted_run, tmp_path, monkeypatch, capsys):
    """Without hardcse's own check, the installed trainer still refuses (and we say so in one sentence)."""
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    marker = tmp_path / "pwned"
    plant(run / "checkpoints" / "checkpoint-4" / "optimizer.pt", marker)
    monkeypatch.setattr("hardcse.training.lifecycle.verify_checkpoint", lambda path: None)
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to resume", "not plain tensor data")
    assert not marker.exists()


def test_a_truncated_pickle_is_refused_too(interrupted_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    optimizer = run / "checkpoints" / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:200])
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to resume", "optimizer.pt", "cannot be read")


def test_modules_json_may_not_name_foreign_code(interrupted_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    modules = run / "checkpoints" / "checkpoint-4" / "modules.json"
    modules.write_text('[{"idx": 0, "name": "0", "path": "", "type": "os.system"}]')
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to resume", "modules.json", "os.system")


def test_objective_state_is_safetensors_and_weights_too(interrupted_run):
    ckpt = interrupted_run / "checkpoints" / "checkpoint-4"
    assert (ckpt / "hardcse_state.safetensors").is_file() and (ckpt / "model.safetensors").is_file()
    assert not list(ckpt.glob("*.bin")) or [p.name for p in ckpt.glob("*.bin")] == ["training_args.bin"]
    # Not a pickle: a safetensors file is a little-endian header length, a JSON header, raw bytes.
    raw = (ckpt / "hardcse_state.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert "step" in header


def test_no_torch_load_without_weights_only_in_our_code():
    src = Path(__file__).resolve().parents[1] / "src"
    found = subprocess.run(
        ["grep", "-rn", "torch.load(\\|pickle.load", str(src)], capture_output=True, text=True
    ).stdout.splitlines()
    unsafe = [line for line in found if "weights_only=True" not in line]
    assert not unsafe, unsafe


def test_remote_code_needs_the_flag(interrupted_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("trust_remote_code: false", "trust_remote_code: true"))
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "--trust-remote-code")
    code, _, err = run_cli(
        ["train", "--quiet", "--config", str(config), "--output", str(tmp_path / "o")], monkeypatch, capsys
    )
    assert_one_sentence_error(code, err, "--trust-remote-code")
    assert not (tmp_path / "o").exists()
