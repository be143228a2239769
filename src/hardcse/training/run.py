"""Assembling and running one training run on sentence-transformers' trainer.

The way of the data (docs/architecture.md): corpus lines -> dataset (``text`` + row id) -> batches ->
encoder (two dropout views in one pass) -> objective -> loss -> AdamW; every ``eval_steps`` the
STS-B dev evaluator runs and the best checkpoint is kept; at the end the clean model (no
train-only head) is exported, scored on the seven STS tasks, and a report (JSON + Markdown +
plot) is written next to it.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_callback import ProgressCallback as HFProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from hardcse import process_group as dist
from hardcse.data.corpus import corpus_dataset, read_corpus, resolve_corpus_paths
from hardcse.errors import ConfigError, DataError, HardcseError, Interrupted, TrainingError
from hardcse.io import atomic_directory, atomic_write_json, atomic_write_text
from hardcse.models.defaults import display_name
from hardcse.models.dropout import disable_fast_dropout, enable_fast_dropout
from hardcse.models.encoder import position_limit
from hardcse.models.precision import bf16_support
from hardcse.numeric import is_nan
from hardcse.objectives.base import HardCSELoss
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.encoding import TwoViewEncoder
from hardcse.objectives.registry import BuildContext, compose
from hardcse.rundir import RunDirectory, check_output_dir
from hardcse.safety import DiskFull, check_inputs_outside, disk_full_message, input_paths, is_disk_full
from hardcse.training.callbacks import (
    HistoryCallback,
    MethodHooksCallback,
    NaNGuardCallback,
    ObjectiveStateCallback,
    ProgressCallback,
)
from hardcse.training.card import render_model_card
from hardcse.training.checkpoints import SaveGuard, check_resumable, last_complete_checkpoint, verify_checkpoint
from hardcse.training.config import LR_SCHEDULES, TrainConfig, dump_yaml
from hardcse.training.report import write_report
from hardcse.training.signals import raise_if_stopped, signal_name, stop_on_signal, training_loop
from hardcse.training.tracking import attach_tracking, training_report_to

logger = logging.getLogger(__name__)

METRIC = "eval_stsb_spearman"
OUTPUTS = ("model", "config.yaml", "results.json", "results.md", "curves.png")
PREDICTIONS = "test_predictions.npz"  # per-pair test cosines and gold scores, {task}/{subset}/{gold,cosine}


def check_output(config: TrainConfig, overwrite: bool, resume: bool, kind: str = "train") -> Path:
    """Refuse to touch an earlier run without --overwrite/--resume, to replace anything that is not
    a hardcse run, or to write where another process writes (nothing is touched here).

    A finished run (``results.json``) is not resumed either: that would rewrite its results.
    """
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other: replace the run or continue it, not both.")
    out = check_output_dir(Path(config.output), kind, overwrite=overwrite, resume=resume)
    if overwrite and out.is_dir():
        # --overwrite never deletes a file the new run reads (its corpus, model or data).
        from hardcse.data.paths import resolve_data_dir

        inputs = [*(getattr(config, "corpus", None) or []), getattr(config, "model", None), config.data_dir]
        check_inputs_outside(out, input_paths(inputs, resolve_data_dir(config.data_dir)), "--output", "run")
    if resume and (out / "results.json").is_file():
        raise ConfigError(
            f"the run in '{out}' is already complete (it has results.json); pass --overwrite to train it again "
            "or choose another --output."
        )
    return out


def create_output(out: Path, overwrite: bool, resume: bool, kind: str = "train") -> RunDirectory:
    """Create, mark and lock the run directory once the inputs are known to be good; on
    --overwrite the old run is moved aside until :meth:`RunDirectory.started` (see
    :mod:`hardcse.rundir`). The caller closes the returned directory."""
    return RunDirectory(out, kind, overwrite=overwrite, resume=resume).open()


def build_objective(
    config: TrainConfig, model: SentenceTransformer, sentences: list[str], show_progress: bool = True
) -> tuple[HardCSELoss, list[TrainerCallback]]:
    """The recipe's loss (every method's parts, in recipe order, on one contrastive frame) and the
    one callback that runs the methods' step hooks (none when no method has hooks).

    Methods come from the registry (:mod:`hardcse.objectives.registry`); their settings were checked
    by :meth:`TrainConfig.method_configs`. A method seed left unset (``clusterns.seed`` null) is the
    run's ``seed``.
    """
    # Inside a run the process group exists already; a caller building the loss alone under a
    # launcher still gets the global batch from the launcher's environment.
    world = dist.launched_world_size()
    context = BuildContext(
        model=model,
        sentences=sentences,
        global_batch=config.batch_size * world,
        run_seed=config.seed,
        encode_batch_size=config.eval_batch_size,
        show_progress=show_progress,
    )
    built = compose(config.recipe, config.method_configs(), context)
    loss = HardCSELoss(
        model,
        parts=built.parts,
        head=built.head,
        temperature=config.temperature,
        encoder=TwoViewEncoder(length_chunks=config.length_chunks),
        cached_step=CachedStep(config.mini_batch_size) if config.mini_batch_size is not None else None,
    )
    return loss, [MethodHooksCallback(built.hooks)] if built.hooks else []


def _cpu_processes() -> bool:
    """True when a launcher started several processes on a machine without GPUs.

    The trainer only sets up CPU data parallelism (accelerate's MULTI_CPU, gloo) when told to use
    the CPU; left alone it tries a GPU backend and falls back to one process per replica.
    """
    launched = dist.launched_world_size() > 1
    return launched and not _accelerator()


def _accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _use_cpu(config: TrainConfig) -> bool:
    """Tell the trainer to use the CPU: several CPU processes, or bf16 autocast without a GPU
    (the trainer refuses bf16 on a machine without one unless told it is meant for the CPU)."""
    if config.fp16 and not _accelerator():
        raise ConfigError("fp16 needs a GPU; on the CPU use bf16 (--set bf16=true) or neither.")
    use_cpu = _cpu_processes() or (config.bf16 and not _accelerator())
    if config.bf16:
        _check_bf16("cpu" if use_cpu or not _accelerator() else None)
    return use_cpu


def preflight(config: TrainConfig) -> None:
    """The checks of :func:`train` that need nothing loaded (values, precision on this machine),
    for callers that prepare several runs (``hardcse compare``) before creating anything."""
    config.validate()
    _use_cpu(config)


def _check_bf16(device: str | None) -> None:
    """Refuse bf16 where the device only emulates it (an AVX2-only CPU multiplies
    bfloat16 ~50x slower than float32, so a run would crawl without a word)."""
    support = bf16_support(device)
    if support.native:
        return
    if support.device == "cpu":
        raise ConfigError(
            f"bf16 needs native bfloat16 and this CPU has none ({support.detail}), so training would run many "
            "times slower than in float32; leave bf16 off (--set bf16=false)."
        )
    raise ConfigError(
        f"bf16 needs native bfloat16 and this GPU has none ({support.detail}), so training would be slower than "
        "in fp16; use --fp16 instead, or neither."
    )


def _training_args(config: TrainConfig, out: Path) -> SentenceTransformerTrainingArguments:
    return SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        use_cpu=_use_cpu(config),
        max_steps=config.steps if config.steps is not None else -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        lr_scheduler_type=LR_SCHEDULES[config.lr_schedule],
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        fp16=config.fp16,
        bf16=config.bf16,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=METRIC,
        greater_is_better=True,
        logging_steps=1,
        logging_nan_inf_filter=False,
        report_to=training_report_to(config.report_to),
        run_name=out.name,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_drop_last=False,
        # Pinned memory only helps copies to an accelerator (torch warns when there is none).
        dataloader_pin_memory=_accelerator(),
        save_only_model=False,
    )


def train(
    config: TrainConfig,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    start: dict | None = None,
) -> dict:
    """Train, select on STS-B dev, export, evaluate and report; returns the ``results.json`` dict.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (timers, trackers).
    ``start`` is the untrained encoder's evaluation (``start.json``: the test tasks plus
    ``stsb_dev``) when the caller already has it, e.g. ``hardcse compare`` sharing it between runs.
    The per-pair test cosines are saved as ``test_predictions.npz`` (for paired bootstraps).
    """
    from hardcse.data.paths import resolve_data_dir
    from hardcse.data.sts import load_tasks
    from hardcse.evaluation.evaluator import STSEvaluator
    from hardcse.evaluation.predictions import save_predictions
    from hardcse.evaluation.scoring import resolve_tasks

    config.validate()
    started = time.perf_counter()
    # Bars only on a terminal: in a log file their carriage returns pile up (the training
    # progress then prints one plain line per evaluation instead).
    bars = show_progress and sys.stderr.isatty()
    data_dir = resolve_data_dir(config.data_dir)
    out = check_output(config, overwrite=overwrite, resume=resume)
    # Setting up the device creates the process group when a launcher (torchrun, accelerate
    # launch) started this process: gloo on CPUs, nccl on GPUs. From here on every process knows
    # its rank, and the HSimCSE corpus bank below is encoded in shards.
    try:
        args = _training_args(config, out)
        _ = args.device
    except ValueError as err:  # e.g. fp16 without a GPU: the trainer's own message, as one sentence
        raise ConfigError(f"invalid training settings: {str(err).strip().splitlines()[0]}") from None
    main = dist.is_main_process()
    ckpt_root = out / "checkpoints"
    last_ckpt: Path | None = None
    if resume:
        check_resumable(ckpt_root)
        last_ckpt = last_complete_checkpoint(ckpt_root)
        if last_ckpt is None:
            logger.warning("no complete checkpoint in %s; starting from the beginning", ckpt_root)
        else:
            verify_checkpoint(last_ckpt)

    # Everything a user can get wrong is checked before the run directory is touched.
    sentences = read_corpus(config.corpus, data_dir, column=config.corpus_column, max_sentences=config.max_sentences)
    if len(set(sentences)) < 2:
        raise DataError(
            f"the corpus has {len(set(sentences))} distinct sentence(s); contrastive training needs at least 2 "
            "(each batch's other sentences are the negatives)."
        )
    # config.yaml names the corpus by absolute path, so the run resumes from any working directory.
    config.corpus = resolve_corpus_paths(config.corpus, data_dir)
    if config.data_dir is not None:
        config.data_dir = str(Path(config.data_dir).expanduser().resolve())
    dev_set, test_sets = load_run_pairs(config, data_dir, sentences)
    evaluator = STSEvaluator(data_dir=data_dir, batch_size=config.eval_batch_size, pair_set=dev_set, name="stsb")
    test_names = [] if config.test_tasks == [] else resolve_tasks(config.test_tasks, "test")  # []: pair sets only
    test_data = load_tasks(test_names, data_dir, "test") if test_names else {}
    torch.manual_seed(config.seed)  # the head's initialisation
    representation = config.representation
    model = representation.build(
        config.model,
        max_seq_length=config.max_seq_length,
        mlp_head=config.mlp_head and config.st_loss is None,  # a baseline's loss takes the pooled vector
        dropout=config.dropout,
        trust_remote_code=config.trust_remote_code,
    )
    pooling_name = representation.describe()
    if config.fast_dropout:
        enable_fast_dropout(model)
    eval_len = position_limit(model) or config.max_seq_length
    model_name = display_name(config.model)
    if config.st_loss is not None:
        from hardcse.training.st_baselines import build_st_objective

        loss, dataset = build_st_objective(config.st_loss, model, sentences, config.seed)
        extra_callbacks: list[TrainerCallback] = []
    else:
        loss, extra_callbacks = build_objective(config, model, sentences, show_progress=bars)
        dataset = corpus_dataset(sentences)
    # Every process has checked the inputs before the main one creates or clears anything.
    dist.barrier()
    rundir = create_output(out, overwrite=overwrite, resume=resume) if main else None

    def fit() -> dict:
        nonlocal start
        if main:
            if resume:
                last_complete_checkpoint(ckpt_root, remove_incomplete=True)
            atomic_write_text(out / "config.yaml", dump_yaml(config))

        # The untrained encoder's scores (kept across a resume), computed and written by the main process.
        start_path = out / "start.json"
        if start is not None and start.get("pooling") != pooling_name:
            start = None  # scored with another representation (e.g. [CLS] for a prompt run): score this one
        if start is not None:
            if main:
                atomic_write_json(start_path, start)
        elif resume and start_path.is_file():
            start = json.loads(start_path.read_text(encoding="utf-8"))
        elif main:
            start, start_pairs = score_tests(model, config, test_data, test_sets, bars, model_name, pooling_name)
            start["pair_cosines"] = {name: cos.tolist() for name, (_, cos) in start_pairs.items()}
            start["stsb_dev"] = float(evaluator(model)["stsb_spearman"])
            atomic_write_json(start_path, start)
        dist.barrier()
        if start is None:
            start = json.loads(start_path.read_text(encoding="utf-8"))

        history = HistoryCallback(loss, metric=METRIC)
        history.record_start(start["stsb_dev"])
        state_cb = ObjectiveStateCallback(loss)
        nan_guard = NaNGuardCallback()
        all_callbacks: list[TrainerCallback] = [
            history,
            state_cb,
            nan_guard,
            *extra_callbacks,
            *(callbacks or []),
        ]
        if rundir is not None:
            all_callbacks.append(RunStartedCallback(rundir))
        if config.early_stopping:
            all_callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
        if last_ckpt is not None:
            state_cb.restore(last_ckpt)
            history.restore(last_ckpt)

        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=loss,
            evaluator=evaluator,
            # The prompt encoder tokenises training sentences alone; its loss wraps them per view.
            data_collator=representation.collator(model),
            callbacks=all_callbacks,
        )
        train_on(trainer, ProgressCallback(disable=not show_progress, metric=METRIC), last_ckpt)
        state = trainer.state
        if nan_guard.bad_step is not None:
            kept = state.best_model_checkpoint or (get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None)
            where = f"; the last good checkpoint is kept in {kept}" if kept else ""
            raise TrainingError(
                f"the loss became NaN at step {nan_guard.bad_step} (learning rate {config.lr:g} too high?){where}."
            )
        if state.best_model_checkpoint is None:
            raise TrainingError("training ended before the first evaluation; raise --steps or lower --eval-steps.")

        best_step = int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])
        if not main:
            # The main process exports, scores and reports; the others return its results.
            dist.barrier()
            return json.loads((out / "results.json").read_text(encoding="utf-8"))
        disable_fast_dropout(model)  # the export carries stock modules (saved files are the same either way)
        atomic_directory(out / "model", lambda tmp: representation.export(model, tmp, eval_max_seq_length=eval_len))

        # Score the export as a user would load it: plain SentenceTransformer(path).
        # (A prompt model's encoder is hardcse's own module: hardcse's loader, as `hardcse evaluate`.)
        exported = representation.load_export(out / "model", device=str(model.device))
        test, pair_predictions = score_tests(
            exported, config, test_data, test_sets, bars, str(out / "model"), pooling_name, predictions=True
        )
        save_predictions(out / PREDICTIONS, {**test.pop("predictions"), **pair_predictions})

        results: dict[str, Any] = {
            "recipe": config.recipe,
            "model": model_name,
            "preset": config.preset,
            "seed": config.seed,
            "steps": int(state.global_step),
            "best_step": best_step,
            "stsb_dev_best": float(state.best_metric),
            "dev_set": dev_set.name if dev_set is not None else "STS-B dev",
            "start": {k: v for k, v in start.items() if k != "pair_cosines"},
            "test": test,
            "history": history.history,
            "seconds": round(time.perf_counter() - started, 2),
        }
        _check_finite(results)
        write_report(out, results, config)
        # The exported model's card: base model, recipe and settings, corpus, scores, citations.
        card = render_model_card(
            config.to_dict(),
            results,
            citations=getattr(loss, "citations", None),  # every method of the objective (None: from the recipe)
            corpus_sentences=len(sentences),
            model_path=str(out / "model"),
        )
        atomic_write_text(out / "model" / "README.md", card)
        atomic_write_json(out / "results.json", results)
        dist.barrier()
        return results

    return run_in_directory(fit, rundir, out, ckpt_root, resume)


def run_in_directory(
    fit: Any, rundir: RunDirectory | None, out: Path, ckpt_root: Path, resume: bool, command: str = "train"
) -> Any:
    """``fit()`` inside the run directory: closed (lock released) afterwards, undone on a failure
    before the first step, and Ctrl-C turned into :class:`Interrupted` saying how to go on."""
    try:
        result = fit()
    except KeyboardInterrupt as err:
        # Ctrl-C, or SIGTERM/SIGHUP (hardcse.training.signals): exit 130, or 128 + the signal.
        kept_old = rundir is not None and rundir.replaced
        began = rundir is None or rundir.has_started or resume
        if rundir is not None:
            rundir.close(failed=True)
        signum = getattr(err, "signum", None)
        interrupted = Interrupted(interrupted_message(out, ckpt_root, began, kept_old, command, signum))
        interrupted.exit_code = getattr(err, "exit_code", Interrupted.exit_code)
        raise interrupted from None
    except BaseException as err:
        began = rundir is None or rundir.has_started or resume
        if rundir is not None:
            rundir.close(failed=True)
        if isinstance(err, Exception) and not isinstance(err, HardcseError) and is_disk_full(err, out):
            then = _disk_full_then(out, ckpt_root, began, command)
            raise DiskFull(disk_full_message(out, f"writing the run in '{out}'", then)) from None
        raise
    if rundir is not None:
        rundir.close()
    return result


def train_on(trainer: Any, progress: TrainerCallback, last_ckpt: Path | None) -> None:
    """Run ``trainer`` with hardcse's progress display instead of the trainer's own, resuming from
    ``last_ckpt``; a checkpoint file that is not plain tensor data is one sentence. The tracking
    integrations of ``report_to`` also see the method diagnostics (:func:`attach_tracking`)."""
    trainer.remove_callback(HFProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress)
    attach_tracking(trainer)
    # Added last: a SIGTERM/SIGHUP asks for a save of the step in progress, then the save's mark.
    trainer.add_callback(stop_on_signal())
    trainer.add_callback(SaveGuard())
    try:
        with training_loop():
            trainer.train(resume_from_checkpoint=str(last_ckpt) if last_ckpt is not None else None)
    except pickle.UnpicklingError as err:
        # verify_checkpoint refuses these first; this guards any file the trainer adds later.
        raise ConfigError(
            f"refusing to resume from {last_ckpt}: a checkpoint file is not plain tensor data "
            f"({str(err).strip().splitlines()[0][:120]}); delete that checkpoint or start again with --overwrite."
        ) from None
    except Exception as err:  # OSError, torch's RuntimeError, safetensors' SafetensorError: a full disk?
        ckpt_root = Path(trainer.args.output_dir)
        if not is_disk_full(err, ckpt_root):
            raise
        kept = last_complete_checkpoint(ckpt_root)
        then = (
            f"the last complete checkpoint is {kept}" if kept is not None else "no complete checkpoint was saved"
        ) + "; the run can continue with --resume once space is freed"
        raise DiskFull(disk_full_message(ckpt_root, f"saving checkpoint {trainer.state.global_step}", then)) from None
    raise_if_stopped(trainer)


class RunStartedCallback(TrainerCallback):
    """Tells the run directory that training made its first step (an old run it replaces goes)."""

    def __init__(self, rundir: RunDirectory) -> None:
        self.rundir = rundir

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the trainer's signature
        if not self.rundir.has_started:
            self.rundir.started()


def interrupted_message(
    out: Path, ckpt_root: Path, began: bool, kept_old: bool, command: str = "train", signum: int | None = None
) -> str:
    """The one sentence after Ctrl-C (or SIGTERM/SIGHUP, ``signum``) in ``hardcse COMMAND``: what
    was kept and how to go on."""
    what = "interrupted" if signum is None else f"stopped by {signal_name(signum)}"
    if not began:
        if kept_old:
            return f"{what} before training started; the earlier run in '{out}' is kept as it was."
        return f"{what} before training started; nothing was kept (run the same command again)."
    last = last_complete_checkpoint(ckpt_root) if ckpt_root.is_dir() else None
    where = f"the last checkpoint is {last}" if last is not None else "no checkpoint was saved yet"
    return f"{what}; {where}; continue with: hardcse {command} --resume --output {out}"


def _disk_full_then(out: Path, ckpt_root: Path, began: bool, command: str) -> str:
    """What is left after a full disk stopped a run, and the command that goes on."""
    if not began:
        return "nothing was changed (run the same command again once space is freed)"
    last = last_complete_checkpoint(ckpt_root) if ckpt_root.is_dir() else None
    where = f"the last complete checkpoint is {last}" if last is not None else "no checkpoint was saved yet"
    return f"{where}; once space is freed, continue with: hardcse {command} --resume --output {out}"


def _check_finite(results: dict) -> None:
    for entry in results["history"]:
        for key, value in entry.items():
            if is_nan(value):
                entry[key] = None


def load_run_pairs(config: TrainConfig, data_dir: Path, sentences: list[str]) -> tuple[Any, list[Any]]:
    """The run's dev pair set (None: STS-B dev) and test pair sets, read and checked before anything
    slow; a set sharing sentences with the training corpus gets a leakage warning."""
    from hardcse.data.pairs import load_pair_set, overlap_warning, unique_names

    dev_set = load_pair_set(config.dev, "dev", data_dir, config.pair_columns) if config.dev else None
    test_sets = unique_names([load_pair_set(t, "test", data_dir, config.pair_columns) for t in config.test])
    corpus = set(sentences)
    for role, pair_set in [("dev", dev_set), *(("test", t) for t in test_sets)]:
        warning = overlap_warning(pair_set, corpus, role) if pair_set is not None else None
        if warning:
            logger.warning(warning)
    return dev_set, test_sets


def score_tests(
    model: SentenceTransformer,
    config: TrainConfig,
    test_data: dict,
    test_sets: list[Any],
    bars: bool,
    model_name: str,
    pooling: str,
    predictions: bool = False,
) -> tuple[dict, dict]:
    """The STS tasks' evaluation (``evaluate_model``'s dict, ``tasks`` empty when none are scored)
    with ``"pairs"``: each test pair set's score and interval; and the pair sets' predictions."""
    from hardcse.evaluation.pairs import PREDICTION_PREFIX, score_pair_sets
    from hardcse.evaluation.sts import evaluate_model

    if test_data:
        result = evaluate_model(
            model,
            tasks=config.test_tasks,
            data=test_data,
            batch_size=config.eval_batch_size,
            show_progress=bars,
            model_name=model_name,
            pooling=pooling,
            return_predictions=predictions,
        )
    else:
        result = {"model": model_name, "pooling": pooling, "tasks": {}, "avg": None}
        if predictions:
            result["predictions"] = {}
    pairs, pair_predictions = score_pair_sets(model, test_sets, batch_size=config.eval_batch_size)
    result["pairs"] = pairs
    flat = {name.removeprefix(PREDICTION_PREFIX): subsets["pairs"] for name, subsets in pair_predictions.items()}
    return result, (pair_predictions if predictions else flat)
