"""What a scheduler does to a run: SIGTERM (SLURM preemption, Kubernetes, systemd), SIGHUP (a
closed terminal) and a disk that fills up during a checkpoint save.

* A signal during training: the step in progress finishes, a checkpoint of it is saved and named
  in one sentence with the ``--resume`` command, the process exits 128 + the signal (143, 129),
  and ``--resume`` ends exactly as the uninterrupted run (same best step, scores and per-step
  losses). The signals are real: sent to a ``hardcse train`` process from outside.
* A full disk while checkpoint 8 is saved: exit 3, one sentence naming the device, the last
  complete checkpoint (4) intact, and ``--resume`` (once space is freed) ends as the
  uninterrupted run. Tested on a small tmpfs where this process may mount one, and by injecting
  ENOSPC everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, write_all, write_corpus
from helpers import make_tiny_bert as make_bert

pytestmark = pytest.mark.slow  # real training runs, resumed

STEPS = 8
EVAL = 4

DRIVER = """
import os, sys, time
from pathlib import Path
from transformers import TrainerCallback
import hardcse.training.run as run
from hardcse.cli import main
from hardcse.training import signals

ready, at = Path(sys.argv[1]), int(sys.argv[2])

class WaitForSignal(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == at:
            ready.write_text(str(os.getpid()))
            deadline = time.monotonic() + 300
            while signals.received() is None and time.monotonic() < deadline:
                time.sleep(0.02)

original = run.train
run.train = lambda config, **kw: original(config, callbacks=[WaitForSignal()], **kw)
sys.argv = ["hardcse", *sys.argv[3:]]
main()
"""


def train_args(root: Path, out: Path) -> list[str]:
    return [
        "train", "--quiet", "--model", str(root / "bert"), "--corpus", str(root / "corpus.txt"),
        "--data-dir", str(root / "data"), "--output", str(out), "--steps", str(STEPS), "--eval-steps", str(EVAL),
        "--batch-size", "16", "--lr", "5e-4", "--tasks", "STS-B,SICK-R",
    ]  # fmt: skip


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


def _rounded(results: dict) -> dict:
    return {
        "best_step": results["best_step"],
        "dev": round(results["stsb_dev_best"], 4),
        "tasks": {t: round(v["spearman"], 4) for t, v in results["test"]["tasks"].items()},
        "steps": results["steps"],
    }


def assert_same_run(resumed: dict, full: dict) -> None:
    assert _rounded(resumed) == _rounded(full)
    losses = [(e["step"], e["loss"]) for e in resumed["history"] if "loss" in e]
    reference = [(e["step"], e["loss"]) for e in full["history"] if "loss" in e]
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    for (step, a), (_, b) in zip(losses, reference, strict=True):
        assert abs(a - b) < 1e-5, (step, a, b)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preempt")
    make_bert(root / "bert")
    write_corpus(root / "corpus.txt", lines=240)
    write_all(root / "data", pairs=16)
    return root


@pytest.fixture(scope="module")
def signalled(root) -> dict[int, tuple[int, str, Path]]:
    """SIGTERM at step 3 and SIGHUP at step 5 sent to two ``hardcse train`` processes:
    signal -> (exit status, stderr, run directory); started first so their start-up overlaps the
    uninterrupted run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cases = {signal.SIGTERM: 3, signal.SIGHUP: 5}
    procs = {}
    for signum, step in cases.items():
        out = root / f"stopped-{signum}"
        procs[signum] = (
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(root / f"{signum}.ready"), str(step), *train_args(root, out)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            ),
            out,
        )
    results = {}
    try:
        for signum, (proc, out) in procs.items():
            ready = root / f"{signum}.ready"
            deadline = time.monotonic() + 600
            while not ready.exists():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended before its signal: {proc.stderr.read()[-3000:]}")
                assert time.monotonic() < deadline, "the run did not reach its step"
                time.sleep(0.05)
            proc.send_signal(signum)
            code = proc.wait(timeout=300)
            results[signum] = (code, proc.stderr.read(), out)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.fixture(scope="module")
def full(root, signalled) -> dict:
    code, err = cli(train_args(root, root / "full"))
    assert code == 0, err
    return json.loads((root / "full" / "results.json").read_text())


@pytest.mark.parametrize(("signum", "step"), [(signal.SIGTERM, 3), (signal.SIGHUP, 5)])
def test_a_signal_saves_the_step_in_progress_and_resume_is_exact(signalled, full, signum, step):
    code, err, out = signalled[signum]
    assert code == 128 + signum, err
    checkpoint = out / "checkpoints" / f"checkpoint-{step}"
    name = signal.Signals(signum).name
    assert_one_sentence_error(
        code,
        err,
        f"stopped by {name}",
        f"the last checkpoint is {checkpoint}",
        f"hardcse train --resume --output {out}",
    )
    assert (checkpoint / "hardcse_state.safetensors").is_file() and not (out / "results.json").exists()

    code, err = cli(["train", "--quiet", "--resume", "--output", str(out)])
    assert code == 0, err
    assert_same_run(json.loads((out / "results.json").read_text()), full)


# -- a full disk -----------------------------------------------------------------------------------


def _full_disk_then_resume(root: Path, out: Path, full: dict, fill, free) -> None:
    """Train into ``out`` with ``fill()`` run once checkpoint 4 is saved; expect exit 3 and one
    sentence, checkpoint 4 complete; ``free()``, resume, and compare with ``full``."""
    from transformers import TrainerCallback

    import hardcse.training.run as run

    class FillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == EVAL:
                fill()

    original = run.train
    run.train = lambda config, **kw: original(config, callbacks=[FillAfterFirstSave()], **kw)
    try:
        code, err = cli(train_args(root, out))
    finally:
        run.train = original
    assert code == 3, err
    assert_one_sentence_error(code, err, "no space left on the device", "saving checkpoint 8", "--resume")
    assert f"checkpoint-{EVAL}" in err
    kept = out / "checkpoints" / f"checkpoint-{EVAL}"
    assert (kept / "hardcse_state.safetensors").is_file()

    free()
    code, err = cli(["train", "--quiet", "--resume", "--output", str(out)])
    assert code == 0, err
    assert_same_run(json.loads((out / "results.json").read_text()), full)


def test_a_full_disk_during_a_checkpoint_save_injected(root, full):
    import torch

    state = {"full": False}
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    def fill() -> None:
        state["full"] = True
        torch.save = save

    def free() -> None:
        state["full"] = False
        torch.save = real_save

    try:
        _full_disk_then_resume(root, root / "enospc", full, fill, free)
    finally:
        torch.save = real_save


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_during_a_checkpoint_save_on_a_small_tmpfs(root, full, tmp_path):
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux); the injected test covers the behaviour")
    filler = mount / "filler"
    try:

        def fill() -> None:
            # Leave a few KB: the next checkpoint (model, optimizer: hundreds of KB) cannot fit.
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            with open(filler, "wb") as handle:
                handle.write(b"\0" * max(0, free - 16 * 1024))

        _full_disk_then_resume(root, mount / "run", full, fill, lambda: filler.unlink())
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
