"""One error boundary for every command: a bad value, a path the OS cannot hold, a broken model
directory, a YAML bomb or an exception nobody anticipated is one ``error: ...`` sentence with a
non-zero exit status, never a traceback (``--debug`` or ``HARDCSE_DEBUG=1`` shows it)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, run_cli, write_all, write_corpus
from helpers import make_tiny_bert as make_bert


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("boundary")
    write_all(root / "data", pairs=6)
    write_corpus(root / "corpus.txt")
    return {"root": root, "bert": make_bert(root / "bert"), "corpus": root / "corpus.txt", "data": root / "data"}


def _train(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "train", "--quiet", "--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"]),
        "--data-dir", str(inputs["data"]), "--steps", "2", "--eval-steps", "2", "--batch-size", "8",
        "--tasks", "STS-B", "--output", str(out), *extra,
    ]  # fmt: skip


def _evaluate(inputs: dict[str, Path], model: Path, *extra: str) -> list[str]:
    return ["evaluate", str(model), "--tasks", "STS-B", "--data-dir", str(inputs["data"]), *extra]


# -- values and paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hsimcse", "clusterns"])
def test_nested_method_seeds_are_checked_like_the_run_seed(inputs, tmp_path, monkeypatch, capsys, method):
    recipe = ["--recipe", method, "--set", f"{method}.seed=-1"]
    code, _, err = run_cli(_train(inputs, tmp_path / "run", *recipe), monkeypatch, capsys)
    assert_one_sentence_error(code, err, f"{method}.seed must be between 0 and 2**32 - 1")
    assert not (tmp_path / "run").exists()


def test_an_output_name_too_long_for_the_file_system(inputs, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(_train(inputs, tmp_path / ("x" * 300)), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "longer than the file system")
    assert "x" * 100 not in err  # the path is shortened in the message


def test_a_corpus_name_too_long_for_the_file_system(inputs, tmp_path, monkeypatch, capsys):
    args = _train(inputs, tmp_path / "run")
    args[args.index(str(inputs["corpus"]))] = str(tmp_path / ("c" * 300 + ".txt"))
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err)
    assert not (tmp_path / "run").exists()


def test_download_into_a_file_is_refused(monkeypatch, capsys):
    code, _, err = run_cli(["download", "--data-dir", "/dev/null", "--no-corpus"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "--data-dir '/dev/null' is a file")


def test_a_data_dir_environment_variable_naming_a_file(tmp_path, monkeypatch, capsys):
    file = tmp_path / "afile"
    file.write_text("x")
    monkeypatch.setenv("HARDCSE_DATA", str(file))
    code, _, err = run_cli(["evaluate", "default", "--tasks", "STS-B"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "$HARDCSE_DATA", "is a file")


# -- model directories ---------------------------------------------------------------------------


def _model_copy(inputs: dict[str, Path], tmp: Path, keep: tuple[str, ...]) -> Path:
    copy = tmp / "model"
    copy.mkdir()
    for name in keep:
        shutil.copy2(inputs["bert"] / name, copy / name)
    return copy


def test_a_model_without_tokenizer_files_is_refused(inputs, tmp_path, monkeypatch, capsys):
    model = _model_copy(inputs, tmp_path, ("config.json", "model.safetensors"))
    code, _, err = run_cli(_evaluate(inputs, model), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "has no tokenizer files", "unknown token")
    code, _, err = run_cli(_train(inputs, tmp_path / "run", "--model", str(model)), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "has no tokenizer files")
    code, _, err = run_cli(["mlm", "--model", str(model), "--corpus", str(inputs["corpus"]), "--output",
                            str(tmp_path / "mlm"), "--steps", "1"], monkeypatch, capsys)  # fmt: skip
    assert_one_sentence_error(code, err, "has no tokenizer files")
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlm").exists()


def test_a_model_directory_with_only_a_config(inputs, tmp_path, monkeypatch, capsys):
    model = _model_copy(inputs, tmp_path, ("config.json",))
    code, _, err = run_cli(_evaluate(inputs, model), monkeypatch, capsys)
    assert_one_sentence_error(code, err)
    # With a tokenizer but no weights: the loader's own complaint, as one sentence.
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(inputs["bert"] / name, model / name)
    code, _, err = run_cli(_evaluate(inputs, model), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "could not be loaded")


def test_a_modules_json_that_is_not_json(inputs, tmp_path, monkeypatch, capsys):
    model = tmp_path / "st"
    shutil.copytree(inputs["bert"], model)
    (model / "modules.json").write_text("{not json")
    code, _, err = run_cli(_evaluate(inputs, model), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "modules.json", "not a valid")


# -- YAML ------------------------------------------------------------------------------------------


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"corpus: *a{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 9])
def test_a_yaml_alias_bomb_is_refused_quickly_in_one_short_sentence(inputs, tmp_path, monkeypatch, capsys, levels):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb(levels))
    started = time.perf_counter()
    code, _, err = run_cli(_train(inputs, tmp_path / "run", "--config", str(config)), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "expands to more than")
    assert time.perf_counter() - started < 10 and len(err) < 500


def test_a_long_value_is_shortened_in_the_message(inputs, tmp_path, monkeypatch, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("lr: [" + ", ".join(["1"] * 5000) + "]\n")
    code, _, err = run_cli(_train(inputs, tmp_path / "run", "--config", str(config)), monkeypatch, capsys)
    assert_one_sentence_error(code, err, "'lr'", "must be a number")
    assert len(err) < 400


# -- exceptions nobody anticipated -----------------------------------------------------------------


def _boom(*args, **kwargs):
    raise KeyError("an internal mistake")


def test_an_unexpected_exception_is_one_sentence_naming_the_command(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hardcse.evaluation.sts.evaluate_model", _boom)
    code, _, err = run_cli(_evaluate(inputs, inputs["bert"]), monkeypatch, capsys)
    assert code == 1
    assert_one_sentence_error(code, err, "hardcse evaluate failed unexpectedly", "KeyError", "--debug")


def test_debug_shows_the_traceback(inputs, monkeypatch, capsys):
    monkeypatch.setattr("hardcse.evaluation.sts.evaluate_model", _boom)
    monkeypatch.delenv("HARDCSE_DEBUG", raising=False)
    with pytest.raises(KeyError):
        run_cli(["--debug", *_evaluate(inputs, inputs["bert"])], monkeypatch, capsys)
    monkeypatch.setenv("HARDCSE_DEBUG", "1")
    with pytest.raises(KeyError):
        run_cli(_evaluate(inputs, inputs["bert"]), monkeypatch, capsys)


def test_a_full_disk_while_writing_a_result_is_exit_3(inputs, tmp_path, monkeypatch, capsys):
    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("hardcse.cli.evaluate.atomic_write_json", full)
    code, _, err = run_cli(_evaluate(inputs, inputs["bert"], "--output", str(tmp_path / "o.json")), monkeypatch, capsys)
    assert code == 3
    assert_one_sentence_error(code, err, "no space left on the device", "o.json")


def test_a_full_disk_while_converting_is_exit_3(inputs, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hardcse.models.convert.atomic_directory", full)
    code, _, err = run_cli(["convert", str(inputs["bert"]), str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 3
    assert_one_sentence_error(code, err, "no space left on", "hardcse convert")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_while_writing_a_comparison_report_is_exit_3(inputs, tmp_path, monkeypatch, capsys):
    from hardcse.comparison import report, runner

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # The runs are done; writing the report finds the disk full.
    monkeypatch.setattr("hardcse.comparison.run_all", lambda *a, **k: {})
    monkeypatch.setattr(runner, "ensure_predictions", lambda *a, **k: {})
    monkeypatch.setattr(report, "summarize", lambda *a, **k: {})
    monkeypatch.setattr(report, "atomic_write_json", full)
    args = ["compare", "--recipes", "simcse", "--seeds", "42,", "--output", str(tmp_path / "cmp")]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 3
    assert_one_sentence_error(code, err, "no space left on the device", "report.json")


# -- signals outside training ----------------------------------------------------------------------


def _signal_self(signum):
    def send(*args, **kwargs):
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal did not stop the command")

    return send


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_evaluate_with_its_exit_status(inputs, monkeypatch, capsys, signum):
    monkeypatch.setattr("hardcse.evaluation.sts.evaluate_model", _signal_self(signum))
    code, _, err = run_cli(_evaluate(inputs, inputs["bert"]), monkeypatch, capsys)
    assert code == 128 + signum
    assert_one_sentence_error(code, err, f"stopped by {signal.Signals(signum).name}")


def test_a_signal_during_convert_leaves_no_half_written_model(inputs, tmp_path, monkeypatch, capsys):
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(SentenceTransformer, "save", _signal_self(signal.SIGTERM))
    code, _, err = run_cli(["convert", str(inputs["bert"]), str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 143
    assert_one_sentence_error(code, err, "stopped by SIGTERM")
    assert list(tmp_path.iterdir()) == []
