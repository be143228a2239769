"""Exact resume after SIGKILL: for each recipe, ``hardcse train`` is killed mid-training (after its
step-4 checkpoint, before the step-8 one) and continued with ``--resume``; it must end exactly
as an uninterrupted run with the same seed: same best step, STS-B dev and seven-task test
scores (two decimals), and the full per-step history.

Dropout is on (the tiny BERT's 0.1), so the RNG states must be restored for this to hold; the
ClusterNS run starts clustering at step 0, so its centroids at the checkpoint must be restored;
the HSimCSE run's bank is rebuilt from the base model and checked against the checkpoint's
fingerprint. A save cut short by the kill is simulated too: a half-written ``checkpoint-8``
(truncated weights, no trainer state) must be skipped and removed, not resumed from.

The killed runs are real ``hardcse train`` processes (started through a small driver that adds
one callback: at step 6 it writes a ready file and waits; the test then sends SIGKILL). All three
start at once so their start-up overlaps the in-process uninterrupted runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_tiny_bert as make_bert
from helpers import write_all

# Every test here kills and resumes real training runs (minutes on 2 cores).
pytestmark = pytest.mark.slow

RECIPES = ("simcse", "clusterns", "hsimcse")
PAUSE_AT = 6

DRIVER = """
import os, sys, time
from pathlib import Path
from transformers import TrainerCallback
import hardcse.training.run as run
from hardcse.cli import main

ready, at = Path(sys.argv[1]), int(sys.argv[2])

class PauseForKill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == at:
            ready.write_text(str(os.getpid()))
            time.sleep(600)

original = run.train
run.train = lambda config, **kw: original(config, callbacks=[PauseForKill()], **kw)
sys.argv = ["hardcse", *sys.argv[3:]]
main()
"""


def train_args(root: Path, recipe: str, out: Path) -> list[str]:
    return [
        "train",
        "--quiet",
        "--recipe",
        recipe,
        "--model",
        str(root / "bert"),
        "--corpus",
        str(root / "corpus.txt"),
        "--data-dir",
        str(root / "data"),
        "--output",
        str(out),
        "--steps",
        "12",
        "--eval-steps",
        "4",
        "--batch-size",
        "16",
        "--lr",
        "5e-4",
        "--set",
        "eval_batch_size=256",
        "--set",
        "clusterns.k=4",
        "--set",
        "clusterns.theta=1.0",
    ]


def write_corpus(path: Path) -> None:
    from helpers import write_corpus as write

    write(path, lines=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict, Path]]:
    """recipe -> (uninterrupted results, killed-then-resumed results, resumed run dir)."""
    root = tmp_path_factory.mktemp("kill")
    make_bert(root / "bert")
    write_corpus(root / "corpus.txt")
    write_all(root / "data", pairs=16)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = {}
    for recipe in RECIPES:
        ready = root / f"{recipe}.ready"
        args = train_args(root, recipe, root / f"killed-{recipe}")
        procs[recipe] = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(ready), str(PAUSE_AT), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    try:
        full = {}
        for recipe in RECIPES:
            code, err = cli(train_args(root, recipe, root / f"full-{recipe}"))
            assert code == 0, err
            full[recipe] = json.loads((root / f"full-{recipe}" / "results.json").read_text())

        resumed = {}
        for recipe, proc in procs.items():
            ready = root / f"{recipe}.ready"
            deadline = time.monotonic() + 600
            while not ready.exists():
                if proc.poll() is not None:
                    pytest.fail(f"{recipe} run ended before step {PAUSE_AT}: {proc.stderr.read()[-3000:]}")
                if time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"{recipe} run did not reach step {PAUSE_AT}")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            proc.stderr.close()
            out = root / f"killed-{recipe}"
            ckpts = out / "checkpoints"
            assert checkpoints(ckpts) == ["checkpoint-4"]
            assert not (out / "results.json").exists() and not (out / "model").exists()
            _half_written_checkpoint(ckpts / "checkpoint-4", ckpts / "checkpoint-8")

            code, err = cli(["train", "--quiet", "--resume", "--output", str(out)])
            assert code == 0, err
            resumed[recipe] = (json.loads((out / "results.json").read_text()), out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {r: (full[r], *resumed[r]) for r in RECIPES}


def cli(args: list[str]) -> tuple[int, str]:
    """Run the ``hardcse`` entry point in this process; return (exit code, stderr)."""
    from hardcse.cli import main

    err = io.StringIO()
    saved = sys.argv
    sys.argv = ["hardcse", *args]
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved
    return code, err.getvalue()


def checkpoints(root: Path) -> list[str]:
    """The checkpoint directories under ``root`` (the evaluator also keeps an ``eval`` folder there)."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith("checkpoint-"))


def _half_written_checkpoint(good: Path, path: Path) -> None:
    """What a kill during the trainer's save of ``path`` leaves: truncated weights, nothing else."""
    path.mkdir()
    weights = (good / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (path / "optimizer.pt").write_bytes((good / "optimizer.pt").read_bytes()[:100])


def _rounded(results: dict) -> dict:
    return {
        "best_step": results["best_step"],
        "dev": round(results["stsb_dev_best"], 2),
        "tasks": {t: round(v["spearman"], 2) for t, v in results["test"]["tasks"].items()},
        "avg": round(results["test"]["avg"], 2),
        "steps": results["steps"],
    }


@pytest.mark.parametrize("recipe", RECIPES)
def test_killed_and_resumed_run_ends_as_the_uninterrupted_one(runs, recipe):
    full, resumed, out = runs[recipe]
    assert len(full["test"]["tasks"]) == 7
    assert _rounded(resumed) == _rounded(full)
    # The whole history survives the kill: every step's loss, the same values.
    loss_steps = [e["step"] for e in resumed["history"] if "loss" in e]
    assert loss_steps == list(range(1, 13))
    for a, b in zip(resumed["history"], full["history"], strict=True):
        assert a["step"] == b["step"]
        if "loss" in a:
            assert abs(a["loss"] - b["loss"]) < 1e-5, (a["step"], a["loss"], b["loss"])
    # The half-written checkpoint-8 was skipped (resuming from it would have failed on its truncated
    # weights) and removed; every checkpoint left is complete.
    names = checkpoints(out / "checkpoints")
    assert all((out / "checkpoints" / n / "hardcse_state.safetensors").is_file() for n in names)


def test_clusterns_state_was_in_play(runs):
    full, _, _ = runs["clusterns"]
    started = [e.get("diagnostics/cluster_started") for e in full["history"] if "loss" in e]
    assert started[0] == 1.0 and all(v == 1.0 for v in started)
