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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import EarlyStoppingCallback, TrainerCallback, TrainerState
from transformers.trainer_utils import get_last_checkpoint

from hardcse import process_group as dist
from hardcse.data.corpus import corpus_dataset, read_corpus, resolve_corpus_paths
from hardcse.errors import ConfigError, DataError, TrainingError
from hardcse.io import atomic_directory, atomic_write_json, atomic_write_text
from hardcse.models.defaults import display_name
from hardcse.models.dropout import disable_fast_dropout, enable_fast_dropout
from hardcse.models.encoder import position_limit
from hardcse.models.precision import bf16_support
from hardcse.models.representation import Representation
from hardcse.numeric import is_nan
from hardcse.objectives.base import HardCSELoss
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.encoding import TwoViewEncoder
from hardcse.objectives.registry import BuildContext, compose
from hardcse.training.callbacks import HistoryCallback, MethodHooksCallback, NaNGuardCallback, ProgressCallback
from hardcse.training.card import render_model_card
from hardcse.training.checkpoints import CheckpointCompletionCallback, ObjectiveState
from hardcse.training.config import LR_SCHEDULES, TrainConfig, dump_yaml
from hardcse.training.lifecycle import RunLifecycle
from hardcse.training.report import write_report
from hardcse.training.scoring import score_tests
from hardcse.training.start import run_start, score_start, start_summary
from hardcse.training.tracking import training_report_to

logger = logging.getLogger(__name__)

METRIC = "eval_stsb_spearman"
#: The kind of run directory (:mod:`hardcse.rundir`) and the command its messages name.
RUN_KIND = "train"
#: Written last: a run with it is finished (and is not resumed).
RESULTS = "results.json"
PREDICTIONS = "test_predictions.npz"  # per-pair test cosines and gold scores, {task}/{subset}/{gold,cosine}


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
    ``stsb_dev``) when the caller already has it, e.g. ``hardcse compare`` sharing it between runs
    (:func:`hardcse.training.start.run_start` decides whether it is used).
    The per-pair test cosines are saved as ``test_predictions.npz`` (for paired bootstraps).
    The run directory goes through :class:`~hardcse.training.lifecycle.RunLifecycle`, as a
    masked-LM run's does.
    """
    from hardcse.data.paths import resolve_data_dir
    from hardcse.data.sts import load_tasks
    from hardcse.evaluation.evaluator import STSEvaluator
    from hardcse.evaluation.scoring import resolve_tasks

    config.validate()
    started = time.perf_counter()
    # Bars only on a terminal: in a log file their carriage returns pile up (the training
    # progress then prints one plain line per evaluation instead).
    bars = show_progress and sys.stderr.isatty()
    data_dir = resolve_data_dir(config.data_dir)
    lifecycle = RunLifecycle.check(config, RUN_KIND, overwrite=overwrite, resume=resume, finished=RESULTS)
    # Setting up the device creates the process group when a launcher (torchrun, accelerate
    # launch) started this process: gloo on CPUs, nccl on GPUs. From here on every process knows
    # its rank, and the HSimCSE corpus bank below is encoded in shards.
    try:
        args = _training_args(config, lifecycle.out)
        _ = args.device
    except ValueError as err:  # e.g. fp16 without a GPU: the trainer's own message, as one sentence
        raise ConfigError(f"invalid training settings: {str(err).strip().splitlines()[0]}") from None
    lifecycle.find_resume_point()

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
    run = _TrainingRun(
        config=config,
        lifecycle=lifecycle,
        args=args,
        sentences=sentences,
        dev_set=dev_set,
        test_sets=test_sets,
        test_data=test_data,
        evaluator=evaluator,
        representation=representation,
        model=model,
        pooling_name=pooling_name,
        model_name=model_name,
        eval_len=eval_len,
        loss=loss,
        dataset=dataset,
        method_callbacks=extra_callbacks,
        callbacks=list(callbacks or []),
        show_progress=show_progress,
        bars=bars,
        started=started,
        main=dist.is_main_process(),
    )
    # Every process has checked the inputs before the main one creates or clears anything.
    dist.barrier()
    if run.main:
        lifecycle.open()
    return lifecycle.run(lambda: run.fit(start))


@dataclass
class _TrainingRun:
    """What :func:`train` checked and built before the run directory was touched, and the named
    steps of its ``fit`` (:meth:`fit`)."""

    config: TrainConfig
    lifecycle: RunLifecycle
    args: SentenceTransformerTrainingArguments
    sentences: list[str]
    dev_set: Any
    test_sets: list[Any]
    test_data: dict
    evaluator: Any
    representation: Representation
    model: SentenceTransformer
    pooling_name: str
    model_name: str
    eval_len: int
    loss: torch.nn.Module
    dataset: Any
    method_callbacks: list[TrainerCallback]
    callbacks: list[TrainerCallback]
    show_progress: bool
    bars: bool
    started: float
    main: bool

    @property
    def out(self) -> Path:
        return self.lifecycle.out

    def fit(self, given_start: dict | None) -> dict:
        """Train inside the open run directory; the main process exports, scores and reports."""
        if self.main:
            self.lifecycle.begin(dump_yaml(self.config))
        start = self._prepare_start(given_start)
        trainer, history, nan_guard = self._make_trainer(start)
        self.lifecycle.train(trainer, ProgressCallback(disable=not self.show_progress, metric=METRIC))
        best_step = self._check_stopped(trainer.state, nan_guard)
        if not self.main:
            # The main process exports, scores and reports; the others return its results.
            dist.barrier()
            return json.loads((self.out / RESULTS).read_text(encoding="utf-8"))
        self._export()
        test = self._score_export()
        return self._report(trainer.state, best_step, start, test, history)

    def _prepare_start(self, given: dict | None) -> dict:
        """The untrained encoder's scores (kept across a resume), computed and written by the main process."""
        return run_start(
            self.out,
            given,
            pooling=self.pooling_name,
            resume=self.lifecycle.resume,
            main=self.main,
            score=lambda: score_start(
                self.model,
                self.evaluator,
                self.config,
                self.test_data,
                self.test_sets,
                bars=self.bars,
                model_name=self.model_name,
                pooling=self.pooling_name,
            ),
        )

    def _make_trainer(self, start: dict) -> tuple[SentenceTransformerTrainer, HistoryCallback, NaNGuardCallback]:
        """The trainer with hardcse's callbacks, the history and objective state of a resumed
        checkpoint restored."""
        history = HistoryCallback(self.loss, metric=METRIC)
        history.record_start(start["stsb_dev"])
        objective_state = ObjectiveState(self.loss)
        nan_guard = NaNGuardCallback()
        all_callbacks: list[TrainerCallback] = [
            history,
            CheckpointCompletionCallback(objective_state),
            nan_guard,
            *self.method_callbacks,
            *self.callbacks,
            *self.lifecycle.started_callbacks(),
        ]
        if self.config.early_stopping:
            all_callbacks.append(EarlyStoppingCallback(early_stopping_patience=self.config.early_stopping))
        last_ckpt = self.lifecycle.last_checkpoint
        if last_ckpt is not None:
            objective_state.restore(last_ckpt)
            history.restore(last_ckpt)

        trainer = SentenceTransformerTrainer(
            model=self.model,
            args=self.args,
            train_dataset=self.dataset,
            loss=self.loss,
            evaluator=self.evaluator,
            # The prompt encoder tokenises training sentences alone; its loss wraps them per view.
            data_collator=self.representation.collator(self.model),
            callbacks=all_callbacks,
        )
        return trainer, history, nan_guard

    def _check_stopped(self, state: TrainerState, nan_guard: NaNGuardCallback) -> int:
        """The best step, or :class:`TrainingError` when training stopped at a NaN loss or before
        its first evaluation."""
        ckpt_root = self.lifecycle.checkpoints
        if nan_guard.bad_step is not None:
            kept = state.best_model_checkpoint or (get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None)
            where = f"; the last good checkpoint is kept in {kept}" if kept else ""
            raise TrainingError(
                f"the loss became NaN at step {nan_guard.bad_step} (learning rate {self.config.lr:g} too high?){where}."
            )
        if state.best_model_checkpoint is None:
            raise TrainingError("training ended before the first evaluation; raise --steps or lower --eval-steps.")
        return int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])

    def _export(self) -> None:
        """The clean model (no train-only head) as ``model/``."""
        model, eval_len, representation, out = self.model, self.eval_len, self.representation, self.out
        disable_fast_dropout(model)  # the export carries stock modules (saved files are the same either way)
        atomic_directory(out / "model", lambda tmp: representation.export(model, tmp, eval_max_seq_length=eval_len))

    def _score_export(self) -> dict:
        """The export's scores on the test tasks and pair sets; its per-pair predictions saved."""
        from hardcse.evaluation.predictions import save_predictions

        model, representation, out = self.model, self.representation, self.out
        # Score the export as a user would load it: plain SentenceTransformer(path).
        # (A prompt model's encoder is hardcse's own module: hardcse's loader, as `hardcse evaluate`.)
        exported = representation.load_export(out / "model", device=str(model.device))
        test, pair_predictions = score_tests(
            exported,
            self.config,
            self.test_data,
            self.test_sets,
            self.bars,
            str(out / "model"),
            self.pooling_name,
            predictions=True,
        )
        save_predictions(out / PREDICTIONS, {**test.pop("predictions"), **pair_predictions})
        return test

    def _report(self, state: TrainerState, best_step: int, start: dict, test: dict, history: HistoryCallback) -> dict:
        """``results.json`` (written last), ``results.md``, ``curves.png`` and the model card."""
        config, out = self.config, self.out
        results: dict[str, Any] = {
            "recipe": config.recipe,
            "model": self.model_name,
            "preset": config.preset,
            "seed": config.seed,
            "steps": int(state.global_step),
            "best_step": best_step,
            "stsb_dev_best": float(state.best_metric),
            "dev_set": self.dev_set.name if self.dev_set is not None else "STS-B dev",
            "start": start_summary(start),
            "test": test,
            "history": history.history,
            "seconds": round(time.perf_counter() - self.started, 2),
        }
        _check_finite(results)
        write_report(out, results, config)
        # The exported model's card: base model, recipe and settings, corpus, scores, citations.
        card = render_model_card(
            config.to_dict(),
            results,
            citations=getattr(self.loss, "citations", None),  # every method of the objective (None: from the recipe)
            corpus_sentences=len(self.sentences),
            model_path=str(out / "model"),
        )
        atomic_write_text(out / "model" / "README.md", card)
        atomic_write_json(out / RESULTS, results)
        dist.barrier()
        return results


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
