"""Rebuilding the HSimCSE corpus index from the model being trained (``index_mode: refresh``).

The official HSimCSE bank is encoded once by the untrained backbone and never refreshed, so its
keys drift away from the queries' space (METHODS.md §4.7-2). :class:`IndexRefreshCallback`
re-encodes the corpus with the current model (eval mode: no dropout; the train-only head
applied, i.e. the queries' space) and rebuilds the faiss index:

* when training begins: at step 0 the bank of the untrained model, on resume
  (``state.global_step > 0``) the bank of the restored model — deterministic (eval mode, a
  fixed encoding order, no random numbers drawn), so two resumes from one checkpoint give the
  same bank. It is the model *at the checkpoint*, not at the last refresh before it: exact
  equality with an uninterrupted run would require saving the whole bank (n x d floats) in
  every checkpoint, which the bank's size rules out;
* every ``refresh_steps`` optimisation steps (``on_step_end``), except at the last step (the
  new bank would never be used).

Afterwards every module's train/eval flag is restored. Under ``torch.distributed`` each process
encodes its shard and the shards are all-gathered (:func:`hardcse.index.encode_corpus`), so
every process calls the callback at the same steps and holds the same index. Refreshes do not
draw random numbers, so they leave the training's random streams untouched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hardcse.errors import ConfigError

if TYPE_CHECKING:
    from hardcse.objectives.hsimcse import HSimCSEPart

logger = logging.getLogger(__name__)


class IndexRefreshCallback(TrainerCallback):
    """Rebuild the corpus index of an HSimCSE part (refresh mode) every ``refresh_steps`` steps.

    Args:
        part: the :class:`~hardcse.objectives.hsimcse.HSimCSEPart` whose index is rebuilt.
        corpus: the training sentences (row ``i`` = dataset label ``i``).
        refresh_steps: R, the number of optimisation steps between rebuilds.
        batch_size: corpus encoding batch size.
        show_progress: show the encoding progress bar (main process only).

    ``refreshes`` lists ``{"step", "seconds"}`` for every (re)build done by this process.
    """

    def __init__(
        self,
        part: HSimCSEPart,
        corpus: list[str],
        refresh_steps: int,
        batch_size: int = 128,
        show_progress: bool = True,
    ) -> None:
        if part.config.index_mode != "refresh":
            raise ConfigError("the index refresh callback is for hsimcse index_mode 'refresh' only.")
        if refresh_steps < 1:
            raise ConfigError(f"hsimcse refresh_steps must be at least 1, got {refresh_steps}.")
        self.part = part
        self.corpus = corpus
        self.refresh_steps = int(refresh_steps)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.refreshes: list[dict[str, float]] = []

    def _rebuild(self, model: Any, step: int, refresh: bool, main: bool) -> None:
        if model is None:
            raise RuntimeError("the trainer passed no model to the index refresh callback.")
        seconds = self.part.rebuild_index(
            model,
            self.corpus,
            step=step,
            batch_size=self.batch_size,
            show_progress=self.show_progress and main,
            refresh=refresh,
        )
        self.refreshes.append({"step": step, "seconds": round(seconds, 3)})
        logger.info("HSimCSE corpus index rebuilt at step %d in %.1f s", step, seconds)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs,
    ) -> None:
        index = self.part.index
        step = int(state.global_step)
        if index.index is None or (step > 0 and index.built_at_step != step):
            self._rebuild(model, step, refresh=step > 0, main=state.is_world_process_zero)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs,
    ) -> None:
        step = int(state.global_step)
        last = state.max_steps if state.max_steps and state.max_steps > 0 else None
        if step > 0 and step % self.refresh_steps == 0 and (last is None or step < last):
            self._rebuild(model, step, refresh=True, main=state.is_world_process_zero)
