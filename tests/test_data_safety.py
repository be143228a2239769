"""Nothing of the user's is deleted or overwritten, by any command.

Each case runs the command line in-process on the tiny BERT and checks the one-sentence error,
the non-zero exit status and that the user's files are byte-for-byte as they were: ``convert
--overwrite`` of a folder of other files, of the checkpoint's own folder, of home and of the
working directory; ``compare`` into a folder holding the user's own report; ``train --overwrite``
of a run holding the corpus or config it reads; ``--resume`` of a run whose checkpoint hardcse
cannot recognise; an ``--overwrite`` stopped by SIGHUP or SIGTERM before its first step; and
``mlm``'s counts.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, run_cli, snapshot, tiny_train_args, write_all, write_corpus
from helpers import make_tiny_bert as make_bert

from hardcse.rundir import MARKER


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data-safety")
    write_all(root / "data", pairs=6)
    write_corpus(root / "corpus.txt")
    return {"root": root, "bert": make_bert(root / "bert"), "corpus": root / "corpus.txt", "data": root / "data"}


def _user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\section{Mine}\n")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return path


def _fake_run(path: Path, kind: str = "train") -> Path:
    """A directory that is recognisably a finished hardcse run (its marker and results)."""
    path.mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"kind": kind}))
    (path / "results.json").write_text("{}\n")
    (path / "notes.md").write_text("the old run\n")
    return path


# -- convert --------------------------------------------------------------------------------------


def test_convert_overwrite_refuses_a_folder_of_other_files(inputs, tmp_path, monkeypatch, capsys):
    user = _user_folder(tmp_path / "u")
    before = snapshot(user)
    code, _, err = run_cli(["convert", str(inputs["bert"]), str(user), "--overwrite"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to replace", "did not write")
    assert snapshot(user) == before


def test_convert_overwrite_refuses_the_checkpoints_own_folder(inputs, tmp_path, monkeypatch, capsys):
    import shutil

    project = tmp_path / "proj"
    shutil.copytree(inputs["bert"], project / "ckpt")
    (project / "notes.txt").write_text("my notes\n")
    before = snapshot(project)
    for output in (project, project / "ckpt"):
        code, _, err = run_cli(["convert", str(project / "ckpt"), str(output), "--overwrite"], monkeypatch, capsys)
        assert_one_sentence_error(code, err, "refusing")
    assert snapshot(project) == before


def test_convert_refuses_home_and_the_working_directory(inputs, tmp_path, monkeypatch, capsys):
    home = _user_folder(tmp_path / "home")
    work = _user_folder(home / "work")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    before = snapshot(home)
    for output in ("~", ".", str(home)):
        for extra in ([], ["--overwrite"]):
            args = ["convert", str(inputs["bert"]), output, *extra]
            code, _, err = run_cli(args, monkeypatch, capsys)
            assert_one_sentence_error(code, err)
            assert "PosixPath" not in err
    assert snapshot(home) == before


def test_convert_overwrite_replaces_its_own_output(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "converted"
    code, _, err = run_cli(["convert", str(inputs["bert"]), str(out)], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["convert", str(inputs["bert"]), str(out), "--overwrite", "--pooling", "mean"], monkeypatch, capsys
    )
    assert code == 0, err
    assert '"pooling": "mean"' in (out / "hardcse_conversion.json").read_text()


def test_convert_refuses_a_prompt_model(inputs, tmp_path, monkeypatch, capsys):
    import shutil

    prompt = tmp_path / "prompt-model"
    shutil.copytree(inputs["bert"], prompt)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "hardcse.models.prompt.PromptTransformer"}]
    (prompt / "modules.json").write_text(json.dumps(modules))
    code, _, err = run_cli(["convert", str(prompt), str(tmp_path / "out")], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "prompt model", "template")
    assert not (tmp_path / "out").exists()


# -- compare --------------------------------------------------------------------------------------


def _compare_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--recipes",
        "simcse",
        "--seeds",
        "42,",
        "--output",
        str(out),
        "--set",
        f"model={inputs['bert']}",
        "--set",
        f"corpus={inputs['corpus']}",
        "--data-dir",
        str(inputs["data"]),
        *extra,
    ]


@pytest.mark.parametrize("overwrite", [False, True])
def test_compare_refuses_a_folder_with_the_users_own_report(inputs, tmp_path, monkeypatch, capsys, overwrite):
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "report.md").write_text("# My report\n")
    (paper / "report.json").write_text('{"mine": true}\n')
    before = snapshot(paper)
    extra = ["--overwrite"] if overwrite else []
    code, _, err = run_cli(_compare_args(inputs, paper, *extra), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to replace", "did not write")
    assert snapshot(paper) == before and sorted(p.name for p in paper.iterdir()) == ["report.json", "report.md"]


def test_compare_recognises_an_older_comparison_directory(tmp_path):
    from hardcse.comparison.runner import check_comparison_dir, is_comparison_dir

    old = tmp_path / "cmp"
    (old / "simcse-s42").mkdir(parents=True)
    (old / "simcse-s42" / MARKER).write_text('{"kind": "train"}')
    (old / "start-abc.json").write_text("{}")
    assert is_comparison_dir(old)
    (old / "report.json").write_text(json.dumps({"seeds": [42], "baseline": "simcse", "recipes": {}, "tasks": []}))
    assert is_comparison_dir(old)
    check_comparison_dir(old)
    (old / "report.json").write_text('{"mine": true}')
    assert not is_comparison_dir(old)


def test_compare_refuses_a_million_seeds_at_once(monkeypatch, capsys, tmp_path):
    import time

    started = time.perf_counter()
    code, _, err = run_cli(["compare", "--seeds", "1000000", "--output", str(tmp_path / "c")], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "at most 1000 seeds")
    assert time.perf_counter() - started < 10 and not (tmp_path / "c").exists()


# -- train --overwrite never deletes what the new run reads ----------------------------------------


def test_overwrite_refuses_a_run_holding_the_corpus_it_reads(inputs, tmp_path, monkeypatch, capsys):
    run = _fake_run(tmp_path / "run")
    corpus = run / "mycorpus.txt"
    corpus.write_bytes(inputs["corpus"].read_bytes())
    before = snapshot(run)
    code, _, err = run_cli(tiny_train_args(inputs, run, "--overwrite", corpus=corpus), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to replace", "mycorpus.txt", "reads")
    assert snapshot(run) == before


def test_overwrite_refuses_a_run_holding_its_config_file(inputs, tmp_path, monkeypatch, capsys):
    run = _fake_run(tmp_path / "run")
    (run / "my.yaml").write_text("lr: 0.0001\n")
    before = snapshot(run)
    code, _, err = run_cli(
        tiny_train_args(inputs, run, "--overwrite", "--config", str(run / "my.yaml")), monkeypatch, capsys
    )
    assert_one_sentence_error(code, err, "refusing to replace", "my.yaml")
    assert snapshot(run) == before


def test_overwrite_refuses_a_run_holding_the_model(inputs, tmp_path, monkeypatch, capsys):
    import shutil

    run = _fake_run(tmp_path / "run")
    shutil.copytree(inputs["bert"], run / "base")
    before = snapshot(run)
    args = tiny_train_args(inputs, run, "--overwrite")
    args[args.index(str(inputs["bert"]))] = str(run / "base")
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to replace", "base")
    assert snapshot(run) == before


# -- --resume never deletes a checkpoint it cannot recognise ---------------------------------------


def test_resume_refuses_a_checkpoint_without_hardcse_state(inputs, tmp_path, monkeypatch, capsys):
    from hardcse.training.config import dump_yaml, make_config

    run = tmp_path / "old"
    config = make_config(
        model=str(inputs["bert"]),
        corpus=[str(inputs["corpus"])],
        data_dir=str(inputs["data"]),
        output=str(run),
        steps=4,
        eval_steps=2,
        batch_size=8,
        test_tasks=["STSBenchmark"],
    )
    ckpt = run / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (run / MARKER).write_text('{"kind": "train"}')
    (run / "config.yaml").write_text(dump_yaml(config))
    (ckpt / "trainer_state.json").write_text('{"global_step": 2}')
    (ckpt / "model.safetensors").write_bytes(os.urandom(4096))
    (ckpt / "optimizer.pt").write_bytes(os.urandom(4096))
    before = snapshot(run)
    code, _, err = run_cli(["train", "--quiet", "--resume", "--output", str(run)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "refusing to resume", "checkpoint-2", "move it out")
    assert snapshot(run) == before


def test_resume_deletes_only_a_save_cut_short(tmp_path):
    from hardcse.training.checkpoints import SAVING, last_complete_checkpoint

    root = tmp_path / "checkpoints"
    complete, cut, marked, foreign = (root / f"checkpoint-{n}" for n in (2, 4, 6, 8))
    for path in (complete, cut, marked, foreign):
        path.mkdir(parents=True)
    for name in ("trainer_state.json", "hardcse_history.json", "hardcse_state.safetensors"):
        (complete / name).write_text("x")
    (cut / "model.safetensors").write_text("half")  # no trainer state: nothing could resume from it
    (marked / SAVING).write_text("{}")
    (marked / "trainer_state.json").write_text("{}")  # hardcse's own save, cut before its files
    (foreign / "trainer_state.json").write_text("{}")  # another version's checkpoint
    from hardcse.errors import ConfigError
    from hardcse.training.checkpoints import check_resumable

    with pytest.raises(ConfigError, match="checkpoint-8 has no hardcse state"):
        check_resumable(root)
    assert last_complete_checkpoint(root, remove_incomplete=True) == complete
    assert foreign.is_dir() and not cut.exists() and not marked.exists()


# -- an --overwrite stopped before its first step puts the old run back ----------------------------


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_overwrite_stopped_by_a_signal_before_training_puts_the_old_run_back(
    inputs, tmp_path, monkeypatch, capsys, signum
):
    run = _fake_run(tmp_path / "run")
    before = snapshot(run)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)  # the real signal, as a closed terminal or a scheduler sends it
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr("hardcse.evaluation.sts.evaluate_model", signalled)
    code, _, err = run_cli(tiny_train_args(inputs, run, "--overwrite"), monkeypatch, capsys)
    assert code == 128 + signum, err
    assert_one_sentence_error(code, err, f"stopped by {signal.Signals(signum).name}", "kept as it was")
    assert snapshot(run) == before
    assert not list(tmp_path.glob(".run.replaced-*"))


# -- mlm checks its counts as train does ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--max-sentences", "-1"], "--max-sentences must be at least 1"),
        (["--max-sentences", "0"], "--max-sentences must be at least 1"),
        (["--seed", "-1"], "--seed must be between 0 and 2**32 - 1"),
        (["--seed", "99999999999999999999"], "--seed must be between 0 and 2**32 - 1"),
    ],
)
def test_mlm_refuses_bad_counts_and_seeds(inputs, tmp_path, monkeypatch, capsys, extra, fragment):
    second = tmp_path / "b.txt"
    second.write_text("one more line\nand another\n")
    args = ["mlm", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"]), "--corpus", str(second)]
    args += ["--output", str(tmp_path / "mlm"), "--steps", "1", *extra]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, fragment)
    assert not (tmp_path / "mlm").exists()
