"""What the command line must never do: delete what is not a hardcse run, report
success on failure or after Ctrl-C, show a traceback for a usage error, let two processes write
one run, or hide its outputs from other users.

Everything runs on the tiny BERT and a hand-made STS directory.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, snapshot, tiny_train_args, write_all, write_corpus
from helpers import make_tiny_bert as make_bert
from helpers import run_cli as run_entry_point

from hardcse.errors import ConfigError
from hardcse.rundir import MARKER, RunDirectory, lock_holder

HARDCSE = Path(sys.executable).with_name("hardcse")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-safety")
    write_all(root / "data", pairs=6)
    write_corpus(root / "corpus.txt")
    return {"root": root, "bert": make_bert(root / "bert"), "corpus": root / "corpus.txt", "data": root / "data"}


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trian"], "no such command 'trian'"),
        (["train", "--lr", "abc"], "'--lr'"),
        (["train", "--bogus"], "no such option: --bogus"),
        (["evaluate"], "missing argument 'model'"),
        (["evaluate", "default", "--batch-size", "0"], "'--batch-size'"),
        (["compare", "--seeds"], "'--seeds' requires an argument"),
    ],
)
def test_usage_errors_are_one_sentence_and_exit_2(args, fragment, monkeypatch, capsys):
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    assert code == 2, err
    assert_one_sentence_error(code, err, fragment)


def test_bare_command_prints_help_and_exits_2(monkeypatch, capsys):
    code, out, err = run_entry_point([], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert "train" in out and "evaluate" in out


def test_version(monkeypatch, capsys):
    code, out, _ = run_entry_point(["--version"], monkeypatch, capsys)
    assert code == 0 and out.startswith("hardcse ")


# -- --overwrite ---------------------------------------------------------------------------------


def test_overwrite_refuses_the_working_directory_and_home(inputs, tmp_path, monkeypatch, capsys):
    # Even a directory that looks like a run is refused when it is the working directory or home.
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / MARKER).write_text('{"kind": "train"}')
    (home / "work" / MARKER).write_text('{"kind": "train"}')
    (home / "work" / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    before = snapshot(home)
    for output in (".", str(home), "~"):
        code, _, err = run_entry_point(tiny_train_args(inputs, Path(output), "--overwrite"), monkeypatch, capsys)
        assert_one_sentence_error(code, err, "refusing to overwrite", "working directory")
    assert snapshot(home) == before


@pytest.mark.slow
def test_overwrite_replaces_a_run_only_once_the_new_one_started(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_entry_point(tiny_train_args(inputs, out), monkeypatch, capsys)
    assert code == 0, err
    before = snapshot(out)

    # A new run interrupted before its first step: the earlier run is put back as it was.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("hardcse.evaluation.sts.evaluate_model", interrupted)
        code, _, err = run_entry_point(tiny_train_args(inputs, out, "--overwrite"), monkeypatch, capsys)
    assert code == 130
    assert_one_sentence_error(code, err, "earlier run", "kept as it was")
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".run.replaced-*"))

    # A new run that trains replaces it.
    code, _, err = run_entry_point(tiny_train_args(inputs, out, "--overwrite", "--seed", "7"), monkeypatch, capsys)
    assert code == 0, err
    assert "seed: 7" in (out / "config.yaml").read_text()
    assert not list(tmp_path.glob(".run.replaced-*"))


# -- one process per run directory -------------------------------------------------------------


def test_a_locked_run_directory_is_refused_and_a_dead_lock_taken_over(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "busy"
    holder = RunDirectory(out, "train").open()
    try:
        with pytest.raises(ConfigError, match="in use by process"):
            RunDirectory(out, "train", resume=True).open()
        code, _, err = run_entry_point(tiny_train_args(inputs, out, "--overwrite"), monkeypatch, capsys)
        assert_one_sentence_error(code, err, "is in use by process")
    finally:
        holder.close()
    assert lock_holder(out) is None

    # A process killed while holding the lock: the kernel releases it, the next run takes over.
    script = (
        "import sys, time; from hardcse.rundir import RunDirectory; "
        "d = RunDirectory(sys.argv[1], 'train', resume=True).open(); print('locked', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert lock_holder(out) is not None and str(child.pid) in lock_holder(out)
    finally:
        child.kill()
        child.wait()
    assert lock_holder(out) is None
    RunDirectory(out, "train", resume=True).open().close()


# -- Ctrl-C, resume from elsewhere, file modes, no dependency warnings --------------------------


@pytest.mark.skipif(not HARDCSE.exists(), reason="the hardcse script is not installed next to python")
@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_run_resumes_from_another_directory(inputs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "corpus.txt").write_bytes(inputs["corpus"].read_bytes())
    args = tiny_train_args(inputs, Path("run"), "--steps", "60")
    args[args.index(str(inputs["corpus"]))] = "corpus.txt"  # relative to the directory training starts in
    args.remove("--quiet")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    old_mask = os.umask(0o022)
    try:
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
        # ignored: give the child the default disposition, as a terminal's Ctrl-C would find it.
        proc = subprocess.Popen(
            [str(HARDCSE), *args],
            cwd=work,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        lines = []
        deadline = time.monotonic() + 300
        for line in proc.stderr:  # plain progress lines: stderr is a pipe, not a terminal
            lines.append(line)
            if line.startswith("training: step 4/"):
                proc.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(lines)
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
        err = "".join(lines) + rest
        assert code == 130, err
        assert_one_sentence_error(code, err, "interrupted; the last checkpoint is", "hardcse train --resume")

        resumed = subprocess.run(
            [str(HARDCSE), "train", "--resume", "--output", str(work / "run")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        os.umask(old_mask)
    assert resumed.returncode == 0, resumed.stderr
    run = work / "run"
    assert (run / "results.json").is_file()
    # Outputs follow the umask (022): readable by others, like any other tool's files.
    for path in (run / "results.json", run / "config.yaml", run / "model" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((run / "model").stat().st_mode) == 0o755
    # No warning from a dependency in a normal run (hardcse's own notes on data sizes are fine).
    for text in (err, resumed.stderr):
        assert "Warning:" not in text and "[transformers]" not in text, text


# -- evaluate, convert, compare -----------------------------------------------------------------


def _broken_copy(inputs: dict[str, Path], tmp: Path, size: int | None) -> Path:
    import shutil

    copy = tmp / f"model-{size}"
    shutil.copytree(inputs["bert"], copy)
    if size is None:
        for path in copy.iterdir():
            path.unlink()
    else:
        with open(copy / "model.safetensors", "r+b") as handle:
            handle.truncate(size)
    return copy


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("zero-byte weights", "truncated or corrupt"),
        ("truncated weights", "truncated or corrupt"),
        ("empty model directory", "neither modules.json"),
        ("unwritable output", "not writable"),
        ("empty STS-B test", "0 scored pair(s)"),
    ],
)
def test_evaluate_bad_input(case, fragment, inputs, tmp_path, monkeypatch, capsys):
    import shutil

    model, data, output = inputs["bert"], inputs["data"], tmp_path / "out.json"
    if case == "zero-byte weights":
        model = _broken_copy(inputs, tmp_path, 0)
    elif case == "truncated weights":
        model = _broken_copy(inputs, tmp_path, 100)
    elif case == "empty model directory":
        model = _broken_copy(inputs, tmp_path, None)
    elif case == "unwritable output":
        output = Path("/sys/hardcse-test/out.json") if os.geteuid() == 0 else Path("/proc/hardcse.json")
    else:
        data = tmp_path / "data"
        shutil.copytree(inputs["data"], data)
        (data / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv").write_text("")
    args = ["evaluate", str(model), "--tasks", "STS-B", "--data-dir", str(data), "--output", str(output)]
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, fragment)


def test_convert_random_bytes_are_a_damaged_file_not_code(inputs, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_bytes((inputs["bert"] / "config.json").read_bytes())
    (ckpt / "pytorch_model.bin").write_bytes(bytes(range(256)) * 40)
    args = ["convert", str(ckpt / "pytorch_model.bin"), str(tmp_path / "out")]
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, "not a readable PyTorch weights file")
    assert "could run code" not in err


def test_compare_checks_every_run_before_training_any(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--recipes",
        "simcse,clusterns",
        "--seeds",
        "1",
        "--output",
        str(out),
        "--set",
        f"model={inputs['bert']}",
        "--set",
        f"corpus={inputs['corpus']}",
        "--data-dir",
        str(inputs["data"]),
        "--set",
        "clusterns.kk=3",
    ]
    started = time.perf_counter()
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, "unknown key 'clusterns.kk'")
    assert not out.exists()
    assert time.perf_counter() - started < 30
