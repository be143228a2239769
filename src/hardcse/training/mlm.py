"""Continued masked-language-model training of an encoder (domain-adaptive pre-training).

Before contrastive training on a new domain, users commonly continue the encoder's original
pre-training objective on the new corpus first (Gururangan et al., ACL 2020, "Don't Stop
Pretraining"). This module does that with the ecosystem's own parts and no hand-written loop:

* ``transformers.AutoModelForMaskedLM`` loads the encoder with its masked-LM head. A checkpoint
  saved without a head (a sentence-transformers model such as all-MiniLM-L6-v2 stores only the
  bare encoder) gets a freshly initialised head (``_init_weights`` of the model class, seeded);
  the missing tensors are reported (:attr:`MLMResult.fresh_head`), and the decoder stays tied
  to the word embeddings where the model ties them.
* ``transformers.DataCollatorForLanguageModeling`` masks ``mlm_probability`` (15%) of the
  non-special tokens of each batch, BERT's 80/10/10 rule (80% ``[MASK]``, 10% a random token,
  10% unchanged); the loss is the cross-entropy of the original tokens at the chosen positions,

  .. math:: \\mathcal L = -\\frac1{|M|} \\sum_{(i, t) \\in M} \\log p_\\theta(x_{i,t} \\mid \\tilde x_i),

  with ``M`` the masked positions of the batch and ``x~`` the corrupted sentences. The masks of
  the ``b``-th batch are drawn from a generator seeded by ``(seed, b)``
  (:class:`BatchSeededMaskCollator`), so a resumed run masks as the uninterrupted one.
* ``transformers.Trainer`` runs AdamW (weight decay 0.01, linear decay after ``warmup_steps``,
  by default 6% of the steps as RoBERTa's pre-training), seeds everything, checkpoints every
  ``save_steps`` steps (the newest kept) and resumes from the newest *complete* checkpoint
  (:mod:`hardcse.training.checkpoints`), restoring the optimiser, schedule and random states, so
  a resumed run ends with the weights of an uninterrupted one.

``reinit_top_layers`` re-initialises the top K transformer layers (the model's own
``_init_weights``, seeded) before training, so the upper layers are learnt by masked-LM from
scratch while the lower ones keep their lexical knowledge.

Output (``DIR`` = ``output``): ``DIR/model/`` is a plain Hugging Face model directory (the
masked-LM model and its tokenizer: ``AutoModel``/``AutoModelForMaskedLM`` load it, and so does
``hardcse train --model DIR/model``); ``DIR/mlm.json`` holds the configuration, the first and
last loss, the loss history, steps, seconds and seed; ``DIR/config.yaml`` the configuration a
``--resume`` continues. The checkpoints are deleted once the model is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import DataCollatorForLanguageModeling, TrainerCallback

from hardcse.errors import ConfigError, DataError, TrainingError
from hardcse.io import atomic_directory, atomic_write_json
from hardcse.models.defaults import display_name, resolve_model_name
from hardcse.numeric import is_finite_number
from hardcse.safety import brief, load_yaml_text
from hardcse.training.callbacks import HistoryCallback, NaNGuardCallback, ProgressCallback
from hardcse.training.checkpoints import CheckpointCompletionCallback, checkpoint_step, last_complete_checkpoint
from hardcse.training.config import LR_SCHEDULES
from hardcse.training.lifecycle import RunLifecycle
from hardcse.training.tracking import report_targets, training_report_to

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = "corpus/wikipedia_vital_articles_en.sentences.txt"
RESULT_FILE = "mlm.json"
CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
#: The kind of run directory (:mod:`hardcse.rundir`): --overwrite replaces only an mlm run.
RUN_KIND = "mlm"
#: Losses averaged for the reported first and last loss (single steps are noisy).
LOSS_WINDOW = 10


@dataclass
class MLMConfig:
    """Every setting of a masked-LM run.

    Attributes:
        model: Hugging Face name or path, or ``default`` (all-MiniLM-L6-v2); a sentence-transformers
            directory is read from its Transformer module's folder.
        corpus: text files (one sentence per line) or ``datasets`` names, read as ``hardcse train``
            reads them; relative paths are also looked up in the data directory.
        steps: optimisation steps (at least 1); the corpus is repeated as often as needed.
        batch_size: sentences per batch.
        lr: peak learning rate.
        lr_schedule: after the warm-up, ``linear`` decay to 0 at ``steps`` or ``constant``. With
            ``constant`` and a fixed ``warmup_steps``, the checkpoint at step N of a longer run
            has the weights of an N-step run, so one run measures several lengths.
        warmup_steps: linear warm-up steps; ``None``: 6% of ``steps``.
        max_seq_length: sentences are cut to this many tokens (batches are padded to their longest).
        mlm_probability: share of the tokens masked (BERT: 0.15).
        reinit_top_layers: re-initialise this many of the top transformer layers first.
        save_steps: checkpoint every N steps (for ``--resume``).
        seed: seeds the fresh head, the re-initialised layers, the data order, masking and dropout.
        report_to: where the run is watched live (``tensorboard``, ``wandb``, ``mlflow``, ``trackio``;
            ``none``), as in ``hardcse train`` (:mod:`hardcse.training.tracking`).
    """

    model: str = "default"
    corpus: list[str] = field(default_factory=lambda: [DEFAULT_CORPUS])
    corpus_column: str = "text"
    max_sentences: int | None = None
    data_dir: str | None = None
    output: str = "runs/mlm"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-5
    lr_schedule: str = "linear"
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    max_seq_length: int = 128
    mlm_probability: float = 0.15
    reinit_top_layers: int = 0
    save_steps: int = 200
    seed: int = 42
    trust_remote_code: bool = False
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one sentence) for an impossible value."""
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}.")
        if self.max_seq_length < 3:
            raise ConfigError(f"--max-seq-length must be at least 3 tokens, got {self.max_seq_length}.")
        if self.reinit_top_layers < 0:
            raise ConfigError(f"--reinit-top-layers must be 0 or more, got {self.reinit_top_layers}.")
        if self.save_steps < 1:
            raise ConfigError(f"--save-steps must be at least 1, got {self.save_steps}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be 0 or more, got {self.warmup_steps}.")
        # The same value checks as `hardcse train`.
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ConfigError(f"--max-sentences must be at least 1, got {self.max_sentences}.")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be between 0 and 2**32 - 1, got {brief(self.seed)}.")
        if not self.corpus:
            raise ConfigError("no corpus given; pass --corpus FILE (one sentence per line).")
        report_targets(self.report_to)  # known names, each integration's package installed

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(round(0.06 * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: Path) -> MLMConfig:
        """The configuration saved in a run directory (for ``--resume``)."""
        try:
            values = load_yaml_text(path.read_text(encoding="utf-8"), f"the saved configuration '{path}'") or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"cannot read the saved configuration '{path}' ({err}); start again with --overwrite."
            ) from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            raise ConfigError(
                f"'{path}' is not a hardcse mlm configuration; resume a run made by `hardcse mlm`, "
                "or start again with --overwrite."
            )
        return cls(**values)


# -- the model ------------------------------------------------------------------------------
def hf_model_path(name: str) -> str:
    """The Hugging Face model behind ``name``: a hub name as it is; a local directory holding
    ``config.json`` itself; a sentence-transformers directory whose Transformer module lives in a
    subfolder (``modules.json`` gives its ``path``), that subfolder."""
    resolved = resolve_model_name(name)
    root = Path(resolved).expanduser()
    if not root.exists():
        return resolved
    if not root.is_dir():
        raise DataError(f"model path '{root}' is a file, not a model directory; point to the directory.")
    modules = root / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
            paths = [str(e.get("path", "")) for e in entries if str(e.get("type", "")).endswith("Transformer")]
        except (ValueError, AttributeError, TypeError):
            raise DataError(f"'{modules}' is not a valid sentence-transformers module list.") from None
        for sub in paths:
            if (root / sub / "config.json").is_file():
                return str(root / sub)
    if (root / "config.json").is_file():
        return str(root)
    raise DataError(
        f"model directory '{root}' holds no Hugging Face model (no config.json in it or in its Transformer "
        "module's folder); point to a saved model directory."
    )


@contextmanager
def _transformers_quiet():
    """Silence transformers' own load report; what matters of it is reported here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_tokenizer(name: str, path: str, trust_remote_code: bool = False) -> Any:
    """The model's own tokenizer; :class:`ConfigError` when it has none or it has no mask token."""
    from transformers import AutoTokenizer

    from hardcse.models.loading import check_tokenizer_files

    check_tokenizer_files(path)  # else transformers builds a vocabulary of special tokens alone
    try:
        with _transformers_quiet():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            f"model '{name}' has no loadable tokenizer ({str(err).strip().splitlines()[0][:160]}); "
            "point --model to a directory with the tokenizer files."
        ) from None
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise ConfigError(
            f"the tokenizer of model '{name}' has no mask token, so masked-language-model training cannot hide "
            "words from it; choose an encoder whose tokenizer has one (BERT's [MASK], RoBERTa's <mask>)."
        )
    return tokenizer


def load_mlm_model(name: str, path: str, trust_remote_code: bool = False) -> tuple[torch.nn.Module, list[str]]:
    """The masked-LM model of ``path`` and the names of the head tensors initialised fresh.

    The fresh tensors are drawn from torch's global generator: seed it first.
    """
    from transformers import AutoModelForMaskedLM

    try:
        with _transformers_quiet():
            model, info = AutoModelForMaskedLM.from_pretrained(
                path, output_loading_info=True, trust_remote_code=trust_remote_code
            )
    except ValueError as err:  # "Unrecognized configuration class ... for AutoModelForMaskedLM"
        raise ConfigError(
            f"model '{name}' has no masked-language-model class in transformers "
            f"({str(err).strip().splitlines()[0][:160]}); choose an encoder such as BERT, RoBERTa or MiniLM."
        ) from None
    except OSError as err:
        raise ConfigError(
            f"model '{name}' could not be loaded ({str(err).strip().splitlines()[0][:160]}); check the path or name."
        ) from None
    return model, sorted(info.get("missing_keys", []))


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer layers: the module list with ``num_hidden_layers`` entries
    (BERT/RoBERTa/MiniLM ``encoder.layer``, DistilBERT ``transformer.layer``, ...)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    count = getattr(config, "num_hidden_layers", None)
    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(
        f"cannot find the {count} transformer layers of this {type(model).__name__}; "
        "--reinit-top-layers supports encoders with one stack of layers."
    )


def reinit_top_layers(model: torch.nn.Module, count: int) -> list[int]:
    """Re-initialise the top ``count`` layers with the model's own ``_init_weights``; returns
    their indices. Draws from torch's global generator: seed it first.

    transformers 5's ``init`` functions skip tensors flagged ``_is_hf_initialized`` (every
    loaded weight), so the flag is cleared on the layers being reset.
    """
    if count == 0:
        return []
    layers = encoder_layers(model)
    if count > len(layers):
        raise ConfigError(f"--reinit-top-layers {count} exceeds the model's {len(layers)} transformer layers.")
    chosen = list(range(len(layers) - count, len(layers)))
    for index in chosen:
        for tensor in [*layers[index].parameters(), *layers[index].buffers()]:
            tensor._is_hf_initialized = False
        layers[index].apply(model._init_weights)
    return chosen


# -- masking --------------------------------------------------------------------------------
def batch_seed(seed: int, batch: int) -> int:
    """A well-mixed 63-bit seed for batch number ``batch`` of a run seeded ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(batch) & 0xFFFFFFFF]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


class BatchSeededMaskCollator(DataCollatorForLanguageModeling):
    """transformers' masked-LM collator (15% of the non-special tokens, 80/10/10) whose draws
    for the ``b``-th batch of the run come from a generator seeded by ``(seed, b)``.

    Masking from the global generator would not resume exactly: the trainer fetches (and so
    masks) the first batch after a resume before it restores the checkpoint's random state, and
    accelerate's loader collates one batch ahead. With a counter, batch ``b`` is masked the same
    way in an uninterrupted and a resumed run (``first_batch`` = the checkpoint's step; skipped
    batches are never collated). The counter lives in this process: keep
    ``dataloader_num_workers`` at 0.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float, seed: int, first_batch: int = 0) -> None:
        super().__init__(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)
        self.batches = first_batch

    def torch_call(self, examples: list[Any]) -> dict[str, Any]:
        # The parent keeps a torch.Generator made in this process and draws every mask from it.
        self.generator = torch.Generator().manual_seed(batch_seed(self.seed, self.batches))
        self._generator_pid = os.getpid()
        self.batches += 1
        return super().torch_call(examples)


# -- the run --------------------------------------------------------------------------------
def _token_dataset(sentences: list[str], tokenizer: Any, max_length: int) -> Any:
    """Token ids of every sentence (cut at ``max_length``), with the special-token mask the
    collator uses to leave [CLS]/[SEP] unmasked; batches are padded by the collator."""
    from datasets import Dataset

    encoded = tokenizer(sentences, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    return Dataset.from_dict(dict(encoded))


def _max_length(config: MLMConfig, tokenizer: Any, model: torch.nn.Module) -> int:
    """``max_seq_length``, capped at what the tokenizer and the position embeddings allow."""
    limits = [config.max_seq_length]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        pad = getattr(model.config, "pad_token_id", None)
        # RoBERTa-style positions start after the padding index (514 -> 512).
        offset = pad + 1 if model.config.model_type in ("roberta", "xlm-roberta", "camembert") and pad else 0
        limits.append(positions - offset)
    return min(limits)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if is_finite_number(v)]
    return sum(finite) / len(finite) if finite else None


@contextmanager
def _hf_progress_bars(enabled: bool):
    """transformers' own bars (loading and writing weights) only when progress is shown."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def train_mlm(
    config: MLMConfig,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Continue masked-LM training of ``config.model`` on ``config.corpus``; returns ``mlm.json``.

    Every input is checked (output directory, model, tokenizer and its mask token, corpus) before
    the output directory is created or cleared, so a bad input loses nothing. ``callbacks`` are
    extra ``TrainerCallback`` objects; ``echo`` receives one-line notes for the user (a fresh
    head, re-initialised layers).
    """
    with _hf_progress_bars(show_progress):
        return _train_mlm(config, overwrite, resume, show_progress, callbacks, echo)


def _train_mlm(
    config: MLMConfig,
    overwrite: bool,
    resume: bool,
    show_progress: bool,
    callbacks: list[TrainerCallback] | None,
    echo: Callable[[str], None] | None,
) -> dict[str, Any]:
    from hardcse.data.corpus import read_corpus
    from hardcse.data.paths import resolve_data_dir

    def note(message: str) -> None:
        logger.info(message)
        if echo is not None:
            echo(message)

    config.validate()
    started = time.perf_counter()
    data_dir = resolve_data_dir(config.data_dir)
    # The same run lifecycle as `hardcse train` (marker, lock, --overwrite only of an mlm run, resume).
    lifecycle = RunLifecycle.check(config, RUN_KIND, overwrite=overwrite, resume=resume, finished=RESULT_FILE)
    lifecycle.find_resume_point()

    # Everything a user can get wrong is checked before the output directory is touched.
    name = display_name(config.model)
    path = hf_model_path(config.model)
    tokenizer = load_tokenizer(name, path, config.trust_remote_code)
    sentences = read_corpus(config.corpus, data_dir, column=config.corpus_column, max_sentences=config.max_sentences)
    torch.manual_seed(config.seed)  # the fresh head and the re-initialised layers
    model, fresh = load_mlm_model(name, path, config.trust_remote_code)
    reset = reinit_top_layers(model, config.reinit_top_layers)
    max_length = _max_length(config, tokenizer, model)
    dataset = _token_dataset(sentences, tokenizer, max_length)
    if fresh:
        note(f"{name} has no masked-LM head: {len(fresh)} head tensors initialised fresh ({', '.join(fresh[:3])}, ...)")
    if reset:
        note(f"re-initialised transformer layers {', '.join(map(str, reset))} of {name} before training")

    run = _MLMRun(
        config=config,
        lifecycle=lifecycle,
        name=name,
        tokenizer=tokenizer,
        model=model,
        dataset=dataset,
        sentences=len(sentences),
        fresh=fresh,
        reset=reset,
        max_length=max_length,
        callbacks=list(callbacks or []),
        show_progress=show_progress,
        started=started,
    )
    lifecycle.open()
    return lifecycle.run(run.fit)


@dataclass
class _MLMRun:
    """What :func:`train_mlm` checked and loaded before the output directory was touched, and the
    named steps of its ``fit`` (:meth:`fit`)."""

    config: MLMConfig
    lifecycle: RunLifecycle
    name: str
    tokenizer: Any
    model: torch.nn.Module
    dataset: Any
    sentences: int
    fresh: list[str]
    reset: list[int]
    max_length: int
    callbacks: list[TrainerCallback]
    show_progress: bool
    started: float

    @property
    def out(self) -> Path:
        return self.lifecycle.out

    def fit(self) -> dict[str, Any]:
        """Train inside the open run directory, save the model, write ``mlm.json``, drop the checkpoints."""
        self.lifecycle.begin(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        trainer, history, nan_guard = self._make_trainer()
        self.lifecycle.train(trainer, ProgressCallback(disable=not self.show_progress))
        self._check_stopped(trainer.state.global_step, nan_guard)
        self._save_model()
        result = self._result(int(trainer.state.global_step), history)
        atomic_write_json(self.out / RESULT_FILE, result, strict=True)
        # The model is written: the checkpoints (weights and optimiser state) are no longer needed.
        shutil.rmtree(self.lifecycle.checkpoints, ignore_errors=True)
        return result

    def _training_args(self) -> Any:
        from transformers import TrainingArguments

        config = self.config
        cuda = torch.cuda.is_available()
        return TrainingArguments(
            output_dir=str(self.lifecycle.checkpoints),
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr,
            weight_decay=config.weight_decay,
            lr_scheduler_type=LR_SCHEDULES[config.lr_schedule],
            warmup_steps=config.warmup,
            max_grad_norm=1.0,
            seed=config.seed,
            data_seed=config.seed,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=1,
            save_only_model=False,
            logging_steps=1,
            logging_nan_inf_filter=False,
            report_to=training_report_to(config.report_to),
            run_name=self.out.name,
            disable_tqdm=True,
            remove_unused_columns=False,  # the collator needs special_tokens_mask
            dataloader_pin_memory=cuda,
        )

    def _make_trainer(self) -> tuple[Any, HistoryCallback, NaNGuardCallback]:
        """The trainer with the masking collator and hardcse's callbacks; the history of a resumed
        checkpoint restored."""
        from transformers import Trainer

        args = self._training_args()
        last_ckpt = self.lifecycle.last_checkpoint
        first_batch = (checkpoint_step(last_ckpt) or 0) if last_ckpt is not None else 0  # one batch per step
        collator = BatchSeededMaskCollator(
            self.tokenizer, self.config.mlm_probability, self.config.seed, first_batch=first_batch
        )
        history = HistoryCallback()  # the loss of every step (a masked-LM run has no dev evaluation)
        # The masked-LM run has no objective state of its own: the state file is the completion mark alone.
        completion = CheckpointCompletionCallback()
        nan_guard = NaNGuardCallback()
        if last_ckpt is not None:
            history.restore(last_ckpt)
        trainer = Trainer(
            model=self.model,
            args=args,
            train_dataset=self.dataset,
            data_collator=collator,
            callbacks=[history, completion, nan_guard, *self.lifecycle.started_callbacks(), *self.callbacks],
        )
        return trainer, history, nan_guard

    def _check_stopped(self, step: int, nan_guard: NaNGuardCallback) -> None:
        """:class:`TrainingError` when training stopped at a NaN loss or before ``steps``."""
        config = self.config
        if nan_guard.bad_step is not None:
            kept = last_complete_checkpoint(self.lifecycle.checkpoints)
            where = f"; the last good checkpoint is kept in {kept}" if kept else ""
            raise TrainingError(
                f"the masked-LM loss became NaN at step {nan_guard.bad_step} "
                f"(learning rate {config.lr:g} too high?){where}."
            )
        if step < config.steps:
            # Stopped early by a callback (an interruption): the checkpoints stay for --resume.
            raise TrainingError(
                f"masked-LM training stopped at step {step} of {config.steps}; "
                f"continue it with `hardcse mlm --output {self.out} --resume`."
            )

    def _save_model(self) -> None:
        """``model/``: the masked-LM model and its tokenizer, a plain Hugging Face directory."""

        def save(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))

        atomic_directory(self.out / MODEL_DIR, save)

    def _result(self, steps: int, history: HistoryCallback) -> dict[str, Any]:
        """``mlm.json``: the first and last loss, the loss history, the settings."""
        losses = [entry["loss"] for entry in history.history if "loss" in entry]
        window = max(1, min(LOSS_WINDOW, len(losses) // 2))
        return {
            "model": self.name,
            "output_model": str(self.out / MODEL_DIR),
            "steps": steps,
            "seed": self.config.seed,
            "loss_first": _mean(losses[:window]),
            "loss_last": _mean(losses[-window:]),
            "loss_window": window,
            "fresh_head": self.fresh,
            "reinitialised_layers": self.reset,
            "max_seq_length": self.max_length,
            "sentences": self.sentences,
            "seconds": round(time.perf_counter() - self.started, 2),
            "config": self.config.to_dict(),
            "history": history.history,
        }
