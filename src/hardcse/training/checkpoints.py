"""Choosing and checking the checkpoint a ``--resume`` continues from.

A checkpoint directory (``checkpoints/checkpoint-STEP``) is written by the Hugging Face trainer
(model weights as safetensors, ``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``,
``trainer_state.json``) and then completed by hardcse's callbacks (``hardcse_history.json`` from
:class:`~hardcse.training.callbacks.HistoryCallback` and, last, ``hardcse_state.safetensors`` from
:class:`CheckpointCompletionCallback`: the objective's cluster/index state and step
(:class:`ObjectiveState`), empty for a run without an objective such as ``hardcse mlm``). The trainer
writes its files in place, so a run killed while saving leaves a directory that looks like a
checkpoint but is truncated. Only a checkpoint holding all of the files above is *complete*;
:func:`last_complete_checkpoint` picks the newest complete one, so a run killed at any moment
resumes from a consistent state (training is deterministic given the checkpoint, so resuming
from an older complete checkpoint still reproduces the uninterrupted run).

Safe loading: the trainer loads the pickled files with ``torch.load(weights_only=True)``
(transformers >= 4.5x); :func:`verify_checkpoint` checks every pickled file of the chosen
checkpoint the same way before training starts, whatever the installed transformers does, and
turns a refusal into one sentence. ``weights_only`` unpickling only rebuilds tensors and a short
allow-list of plain types (numpy arrays for the RNG states), so a file whose unpickling would run
code is refused without running it. ``training_args.bin`` is a pickled Python object the trainer
writes for reference and never loads; it is not read here either.

What a resume may delete: hardcse writes :data:`SAVING` into a checkpoint directory before the
trainer saves into it (:class:`SaveGuard`), so a save cut short is recognisable. An incomplete
checkpoint is deleted on ``--resume`` only when it is recognisably such a save (the marker, or no
``trainer_state.json``: nothing could resume from it); one with the trainer's state but without
hardcse's files (written by an older hardcse or another tool) is never deleted:
:func:`check_resumable` refuses in one sentence and says what to do.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hardcse.errors import ConfigError
from hardcse.io import atomic_write_bytes
from hardcse.process_group import barrier, is_main_process

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_FILE = "hardcse_state.safetensors"
HISTORY_FILE = "hardcse_history.json"
TRAINER_STATE = "trainer_state.json"
#: Written last into every checkpoint: their presence marks it complete.
REQUIRED = (TRAINER_STATE, HISTORY_FILE, STATE_FILE)
#: Written first into every checkpoint hardcse saves: an incomplete one holding it is a save cut short.
SAVING = "hardcse_saving.json"
#: Pickled files the trainer loads on resume (``torch.load``); checked before it does.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
NEVER_LOADED = ("training_args.bin",)
#: Module packages a checkpoint's ``modules.json`` may name (the model being trained).
MODULE_PACKAGES = ("sentence_transformers.", "hardcse.")


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-STEP`` directory, or None for any other name."""
    if not path.name.startswith(PREFIX):
        return None
    tail = path.name[len(PREFIX) :]
    return int(tail) if tail.isdigit() else None


def is_complete(path: Path) -> bool:
    """True if every file of a finished save is in the checkpoint directory ``path``."""
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def is_interrupted_save(path: Path) -> bool:
    """True for an incomplete checkpoint that is recognisably a save cut short: hardcse's
    :data:`SAVING` mark, or no trainer state (nothing can resume from it)."""
    return not is_complete(path) and ((path / SAVING).is_file() or not (path / TRAINER_STATE).is_file())


def unrecognised_checkpoints(root: Path) -> list[Path]:
    """Checkpoints under ``root`` newer than the newest complete one that hold the trainer's state
    but not hardcse's files, without hardcse's save mark (an older hardcse or another tool wrote
    them): a resume neither uses nor deletes them."""
    if not root.is_dir():
        return []
    found = sorted(
        ((step, p) for p in root.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None),
        reverse=True,
    )
    foreign = []
    for _step, path in found:
        if is_complete(path):
            break
        if not is_interrupted_save(path):
            foreign.append(path)
    return foreign


def check_resumable(root: Path, command: str = "train") -> None:
    """Refuse ``--resume`` (one sentence) when a checkpoint newer than the last complete one is not
    recognisably hardcse's: resuming would skip it and the trainer's rotation could delete it."""
    foreign = unrecognised_checkpoints(root)
    if not foreign:
        return
    newest = foreign[0]
    earlier = last_complete_checkpoint(root)
    then = f"to resume from {earlier.name}" if earlier is not None else "to start the run from the beginning"
    raise ConfigError(
        f"refusing to resume: {newest} has no hardcse state ({HISTORY_FILE}, {STATE_FILE}), so it was written by "
        f"another version or tool and cannot be continued exactly; move it out of {root} {then}, or start a new "
        f"run with another --output (hardcse {command} deletes nothing it does not recognise)."
    )


def last_complete_checkpoint(root: Path, remove_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint under ``root`` (None if there is none).

    Newer incomplete checkpoints (a save cut short) are skipped with a warning and, with
    ``remove_incomplete`` (the main process of a resumed run), deleted when they are recognisably
    an interrupted save (:func:`is_interrupted_save`), so the trainer's own checkpoint rotation never
    mistakes them for real ones; any other incomplete checkpoint is left as it is.
    """
    if not root.is_dir():
        return None
    found = sorted(
        ((step, p) for p in root.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None),
        reverse=True,
    )
    for _step, path in found:
        if is_complete(path):
            return path
        logger.warning("checkpoint %s is incomplete (its save was interrupted); it is skipped", path)
        if remove_incomplete and is_interrupted_save(path):
            shutil.rmtree(path, ignore_errors=True)
    return None


def _refuse(path: Path, checkpoint: Path, why: str) -> ConfigError:
    return ConfigError(
        f"refusing to resume from {checkpoint}: {path.name} {why}; delete that checkpoint directory "
        "to resume from an earlier one, or start again with --overwrite."
    )


def verify_checkpoint(checkpoint: Path) -> None:
    """Refuse (one sentence) a checkpoint whose pickled files are not plain tensor data.

    Every ``*.pt``/``*.pth``/``*.bin`` file the trainer would load is unpickled with
    ``weights_only=True`` under the trainer's own allow-list (numpy arrays of the RNG states);
    zip-format files are memory-mapped, so the tensors themselves are not read. ``modules.json``
    may only name sentence-transformers or hardcse modules.
    """
    from transformers.trainer_pt_utils import safe_globals

    for path in sorted(checkpoint.iterdir()):
        if not path.is_file() or path.suffix not in PICKLE_SUFFIXES or path.name in NEVER_LOADED:
            continue
        mmap = zipfile.is_zipfile(path)
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as err:  # UnpicklingError for code, RuntimeError/EOFError for a truncated file
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "weights_only" in str(err) or "Unsupported global" in str(err):
                why = "is not plain tensor data (unpickling it would run code)"
            else:
                why = f"cannot be read ({detail[:120]})"
            raise _refuse(path, checkpoint, why) from None
    modules = checkpoint / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
            types = [str(entry.get("type", "")) for entry in entries]
        except (ValueError, AttributeError, TypeError):
            raise _refuse(modules, checkpoint, "is not a valid module list") from None
        foreign = [t for t in types if not t.startswith(MODULE_PACKAGES)]
        if foreign:
            raise _refuse(modules, checkpoint, f"names foreign module code ({', '.join(foreign)})")


class SaveGuard(TrainerCallback):
    """Marks each checkpoint directory with :data:`SAVING` before the trainer saves into it.

    The trainer decides to save in ``on_step_end`` (its flow callback comes first) and saves right
    after the callbacks ran; this callback, added last, creates ``checkpoint-STEP`` with the mark
    in between, so a save cut short (a kill, a full disk) is recognisably hardcse's own.
    """

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the trainer's signature
        if control.should_save and state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
            if not is_complete(folder):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / SAVING).write_text(json.dumps({"step": int(state.global_step)}) + "\n", encoding="utf-8")


class ObjectiveState:
    """The objective's own state (step, cluster centroids, index refresh step, ...): every tensor
    of the loss module's ``state_dict`` but the encoder's, which the trainer saves itself.

    Stored as safetensors (:data:`STATE_FILE`), so restoring never unpickles anything; every
    process restores the same file, so the state is identical on all of them.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        self.loss = loss

    def tensors(self) -> dict[str, torch.Tensor]:
        """The objective's tensors, detached copies on the CPU."""
        # A loss may hold the encoder under another name (sentence-transformers' TSDAE: ``encoder``,
        # with a decoder tied to it), so tensors sharing the encoder's storage are left out too.
        model = getattr(self.loss, "model", None)
        if not isinstance(model, torch.nn.Module):
            model = next((m for m in self.loss.children() if hasattr(m, "tokenize")), None)
        shared = {t.data_ptr() for t in model.state_dict().values()} if model is not None else set()
        state = {}
        for key, value in self.loss.state_dict().items():
            if key.startswith("model.") or value.data_ptr() in shared:
                continue
            state[key] = value.detach().cpu().contiguous().clone()
        return state

    def restore(self, checkpoint: Path) -> bool:
        """Load the objective state saved in ``checkpoint``; False if it holds none.

        A state of another shape (the configuration was changed between the runs, e.g. K or
        the recipe) is refused in one sentence rather than half-restored.
        """
        path = checkpoint / STATE_FILE
        if not path.is_file():
            return False
        saved = load_file(str(path))
        current = self.tensors()
        mismatched = sorted(
            set(saved) ^ set(current) | {k for k in set(saved) & set(current) if saved[k].shape != current[k].shape}
        )
        if mismatched:
            raise ConfigError(
                f"checkpoint {checkpoint} holds objective state for another configuration "
                f"({', '.join(mismatched[:4])} differ); resume with the run's own config.yaml or start again."
            )
        live = self.loss.state_dict()
        for key, value in saved.items():
            live[key].copy_(value.to(live[key].dtype))
        return True


class CheckpointCompletionCallback(TrainerCallback):
    """Completes every checkpoint with :data:`STATE_FILE`, whose presence marks it complete.

    The file is written last (atomically, by the main process, after every process has finished
    its part of the checkpoint) and holds the objective's state when the run has one
    (:class:`ObjectiveState`); a run without an objective (``hardcse mlm``) writes it empty, as
    the mark alone.
    """

    def __init__(self, objective: ObjectiveState | None = None) -> None:
        self.objective = objective

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        barrier()
        ckpt = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if ckpt.is_dir() and is_main_process():
            tensors = self.objective.tensors() if self.objective is not None else {}
            atomic_write_bytes(ckpt / STATE_FILE, save_safetensors(tensors))
