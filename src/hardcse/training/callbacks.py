"""Trainer callbacks: training history (saved into every checkpoint), the objective's diagnostics in
the trainer's logs, NaN guard, progress bar, and the one generic callback that runs the methods' step
hooks. The callbacks that frame a checkpoint save are in :mod:`hardcse.training.checkpoints`; the
one that tells the run directory that training started is in :mod:`hardcse.training.lifecycle`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hardcse.io import atomic_write_json
from hardcse.numeric import is_nonfinite
from hardcse.objectives.registry import StepHook, StepInfo
from hardcse.process_group import barrier, is_main_process
from hardcse.training.checkpoints import HISTORY_FILE

#: Namespace of the method diagnostics among the values the trainer logs (tracking integrations).
DIAGNOSTICS_PREFIX = "diagnostics/"

__all__ = [
    "DiagnosticsLogCallback",
    "HistoryCallback",
    "MethodHooksCallback",
    "NaNGuardCallback",
    "ProgressCallback",
]


def _scalar(value: Any) -> Any:
    if torch.is_tensor(value):
        return float(value.detach().float().item()) if value.numel() == 1 else None
    if isinstance(value, (int, float, bool)):
        return float(value)
    return None


class HistoryCallback(TrainerCallback):
    """Collects ``{"step", "loss", components..., "diagnostics/<name>"..., "stsb_dev"}`` per step.

    The loss and its components come from the trainer's logs (``logging_steps=1``; ``loss`` is
    the sum of the components); the diagnostics of ``objective`` (a contrastive run's loss module)
    from its ``last_diagnostics``, under ``diagnostics/``; ``stsb_dev`` from the evaluations'
    ``metric``. A run without either (``hardcse mlm``) records the trainer's logs alone.
    The history is saved into every checkpoint so a resumed run reports all of it.
    """

    def __init__(self, objective: torch.nn.Module | None = None, metric: str | None = None) -> None:
        self.objective = objective
        self.metric = metric
        self.history: list[dict[str, float]] = []

    def _entry(self, step: int) -> dict[str, float]:
        if not self.history or self.history[-1]["step"] != step:
            self.history.append({"step": step})
        return self.history[-1]

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        entry = self._entry(state.global_step)
        for key, value in logs.items():
            if key in ("epoch", "total_flos", "grad_norm") or key.startswith(("eval_", "train_", DIAGNOSTICS_PREFIX)):
                continue
            scalar = _scalar(value)
            if scalar is not None:
                entry[key] = scalar
        if "grad_norm" in logs and _scalar(logs["grad_norm"]) is not None:
            entry["grad_norm"] = _scalar(logs["grad_norm"])
        # Diagnostics in their own namespace: never over a loss component of the same name (bml, quad).
        for key, value in getattr(self.objective, "last_diagnostics", {}).items():
            scalar = _scalar(value)
            if scalar is not None:
                entry[f"{DIAGNOSTICS_PREFIX}{key}"] = scalar

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if metrics and self.metric is not None and self.metric in metrics:
            self._entry(state.global_step)["stsb_dev"] = float(metrics[self.metric])

    def record_start(self, stsb_dev: float) -> None:
        self.history.insert(0, {"step": 0, "stsb_dev": stsb_dev})

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # Every process has written its part of the checkpoint (its RNG state) before the main
        # one completes it; the trainer's own files are all written before on_save is called.
        barrier()
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and is_main_process():
            atomic_write_json(ckpt / HISTORY_FILE, self.history)

    def restore(self, checkpoint: Path) -> None:
        path = checkpoint / HISTORY_FILE
        if path.is_file():
            self.history = json.loads(path.read_text(encoding="utf-8"))


class DiagnosticsLogCallback(TrainerCallback):
    """Adds the objective's diagnostics of the step to the trainer's logs as ``diagnostics/<name>``.

    It must see the logs before the tracking integrations do, so
    :func:`hardcse.training.tracking.attach_tracking` puts it first among the trainer's callbacks;
    the integrations then record the diagnostics with the loss and its components.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        self.loss = loss

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        for name, value in dict(getattr(self.loss, "last_diagnostics", None) or {}).items():
            scalar = _scalar(value)
            if scalar is not None:
                logs[f"{DIAGNOSTICS_PREFIX}{name}"] = scalar


class NaNGuardCallback(TrainerCallback):
    """Stops training at the first non-finite loss, before anything is saved at that step."""

    def __init__(self) -> None:
        self.bad_step: int | None = None

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        value = logs["loss"]
        if is_nonfinite(value):
            self.bad_step = state.global_step
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False


class ProgressCallback(TrainerCallback):
    """One progress bar with the running loss and the last STS-B dev score.

    When standard error is not a terminal (a log file, CI), a bar's carriage returns would fill
    the log, so a plain line is printed at each evaluation instead.
    """

    def __init__(self, disable: bool = False, metric: str = "eval_stsb_spearman") -> None:
        self.bar: tqdm | None = None
        self.disable = disable
        self.metric = metric
        self.postfix: dict[str, str] = {}
        self.plain = not disable and not sys.stderr.isatty()

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero and not self.plain:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="training",
                unit="step",
                dynamic_ncols=True,
                disable=self.disable,
            )

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.4f}"
            if self.bar is not None:
                self.bar.set_postfix(self.postfix, refresh=False)

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if metrics and self.metric in metrics:
            self.postfix["stsb_dev"] = f"{metrics[self.metric]:.2f}"
            if self.bar is not None:
                self.bar.set_postfix(self.postfix)
            elif self.plain and state.is_world_process_zero:
                values = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
                print(f"training: step {state.global_step}/{state.max_steps}, {values}", file=sys.stderr, flush=True)

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MethodHooksCallback(TrainerCallback):
    """The one callback that runs the methods' step hooks (:class:`~hardcse.objectives.registry.StepHook`).

    Training never names a method: whatever a method must do between steps (HSimCSE's index
    refresh, say) is a hook its ``build`` returned, called here with the step, the planned number
    of steps and the model the trainer trains, on every process at the same steps.
    """

    def __init__(self, hooks: Sequence[StepHook]) -> None:
        self.hooks = list(hooks)

    @staticmethod
    def _info(state: TrainerState, model: Any) -> StepInfo:
        last = state.max_steps if state.max_steps and state.max_steps > 0 else None
        return StepInfo(step=int(state.global_step), max_steps=last, model=model, main=state.is_world_process_zero)

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs):
        info = self._info(state, model)
        for hook in self.hooks:
            hook.on_train_begin(info)

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs):
        info = self._info(state, model)
        for hook in self.hooks:
            hook.on_step_end(info)
