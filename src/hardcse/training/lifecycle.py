"""The life of one run directory, the same for ``hardcse train`` and ``hardcse mlm``.

:class:`RunLifecycle` takes a run through these stages, in this order:

1. :meth:`~RunLifecycle.check`, before anything loads: ``--overwrite`` and ``--resume`` exclude
   each other; a non-empty directory needs one of them; ``--overwrite`` replaces only a hardcse
   run of the same kind that no process is writing to (:mod:`hardcse.rundir`) and holding none of
   the run's inputs; a finished run (its result file) is not resumed. Nothing is touched.
2. :meth:`~RunLifecycle.find_resume_point`, on ``--resume``: a checkpoint that is not
   recognisably hardcse's is refused; the newest complete checkpoint is chosen and its pickled
   files verified (:mod:`hardcse.training.checkpoints`).
3. The command checks and loads its inputs (corpus, model, data); still nothing is touched.
4. :meth:`~RunLifecycle.open` (main process): the run directory is created, marked and locked;
   an old run replaced by ``--overwrite`` waits aside until training made its first step
   (:class:`RunStartedCallback`).
5. :meth:`~RunLifecycle.run` calls the command's ``fit``, which starts with
   :meth:`~RunLifecycle.begin` (incomplete checkpoints of a resumed run removed, ``config.yaml``
   written) and trains with :meth:`~RunLifecycle.train` (hardcse's progress display, tracking,
   SIGTERM/SIGHUP saving a checkpoint, a save cut short recognisable). Every checkpoint is
   completed by :class:`~hardcse.training.callbacks.HistoryCallback` and, last,
   :class:`~hardcse.training.checkpoints.CheckpointCompletionCallback`. Afterwards the lock is
   released; a failure before the first step undoes the directory (the old run comes back),
   Ctrl-C or a signal becomes :class:`~hardcse.errors.Interrupted` and a full disk
   :class:`~hardcse.safety.DiskFull`, each one sentence saying what was kept and how to go on.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_callback import ProgressCallback as HFProgressCallback

from hardcse.errors import ConfigError, HardcseError, Interrupted
from hardcse.io import atomic_write_text
from hardcse.rundir import RunDirectory, check_output_dir
from hardcse.safety import DiskFull, check_inputs_outside, disk_full_message, input_paths, is_disk_full
from hardcse.training.checkpoints import SaveGuard, check_resumable, last_complete_checkpoint, verify_checkpoint
from hardcse.training.signals import raise_if_stopped, signal_name, stop_on_signal, training_loop
from hardcse.training.tracking import attach_tracking

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.yaml"

Result = TypeVar("Result")


class OutputSettings(Protocol):
    """What the lifecycle reads of a run's configuration (``TrainConfig``, ``MLMConfig``): where
    the run goes and what it reads (never deleted by ``--overwrite``)."""

    @property
    def output(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def corpus(self) -> list[str]: ...

    @property
    def data_dir(self) -> str | None: ...


class RunLifecycle:
    """One run's output directory from the first check to the released lock (module docstring).

    ``kind`` is the command (``train``, ``mlm``): the run directory's kind and the command its
    messages name. Build it with :meth:`check`.
    """

    def __init__(self, out: Path, kind: str, *, overwrite: bool, resume: bool) -> None:
        self.out = out
        self.kind = kind
        self.overwrite = overwrite
        self.resume = resume
        self.checkpoints = out / CHECKPOINTS
        #: The checkpoint a resumed run continues from (:meth:`find_resume_point`).
        self.last_checkpoint: Path | None = None
        #: The open run directory (:meth:`open`; None in the other processes of a launcher).
        self.directory: RunDirectory | None = None

    @classmethod
    def check(
        cls, settings: OutputSettings, kind: str, *, overwrite: bool, resume: bool, finished: str
    ) -> RunLifecycle:
        """Refuse to touch an earlier run without --overwrite/--resume, to replace anything that is
        not a hardcse ``kind`` run, or to write where another process writes (nothing is touched).

        A finished run (its ``finished`` file, ``results.json`` or ``mlm.json``) is not resumed
        either: that would rewrite its results.
        """
        if overwrite and resume:
            raise ConfigError("--overwrite and --resume exclude each other: replace the run or continue it, not both.")
        out = check_output_dir(Path(settings.output), kind, overwrite=overwrite, resume=resume)
        if overwrite and out.is_dir():
            # --overwrite never deletes a file the new run reads (its corpus, model or data).
            from hardcse.data.paths import resolve_data_dir

            inputs = [*(settings.corpus or []), settings.model, settings.data_dir]
            check_inputs_outside(out, input_paths(inputs, resolve_data_dir(settings.data_dir)), "--output", "run")
        if resume and (out / finished).is_file():
            raise ConfigError(
                f"the run in '{out}' is already complete (it has {finished}); pass --overwrite to train it again "
                "or choose another --output."
            )
        return cls(out, kind, overwrite=overwrite, resume=resume)

    def find_resume_point(self) -> Path | None:
        """On --resume: the newest complete checkpoint, verified (None: start from the beginning)."""
        if not self.resume:
            return None
        check_resumable(self.checkpoints, self.kind)
        self.last_checkpoint = last_complete_checkpoint(self.checkpoints)
        if self.last_checkpoint is None:
            logger.warning("no complete checkpoint in %s; starting from the beginning", self.checkpoints)
        else:
            verify_checkpoint(self.last_checkpoint)
        return self.last_checkpoint

    def open(self) -> None:
        """Create, mark and lock the run directory (main process), once the inputs are known to be
        good; on --overwrite the old run is moved aside until :meth:`RunDirectory.started`."""
        self.directory = RunDirectory(self.out, self.kind, overwrite=self.overwrite, resume=self.resume).open()

    def begin(self, config_text: str) -> None:
        """The first writes of ``fit`` (main process): a resumed run's interrupted saves are removed,
        and the configuration a ``--resume`` continues is written as ``config.yaml``."""
        if self.resume:
            last_complete_checkpoint(self.checkpoints, remove_incomplete=True)
        atomic_write_text(self.out / CONFIG_FILE, config_text)

    def started_callbacks(self) -> list[TrainerCallback]:
        """The callback telling the run directory that training made its first step (none in the
        processes that did not open it)."""
        return [RunStartedCallback(self.directory)] if self.directory is not None else []

    def train(self, trainer: Any, progress: TrainerCallback) -> None:
        """Run ``trainer`` with hardcse's progress display instead of the trainer's own, resuming
        from :attr:`last_checkpoint`; a checkpoint file that is not plain tensor data is one
        sentence, a full disk while saving is :class:`DiskFull`, a SIGTERM/SIGHUP that stopped
        training is :class:`~hardcse.training.signals.Stopped`. The tracking integrations of
        ``report_to`` also see the method diagnostics (:func:`attach_tracking`)."""
        last_ckpt = self.last_checkpoint
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
            raise DiskFull(
                disk_full_message(ckpt_root, f"saving checkpoint {trainer.state.global_step}", then)
            ) from None
        raise_if_stopped(trainer)

    def run(self, fit: Callable[[], Result]) -> Result:
        """``fit()`` inside the run directory: closed (lock released) afterwards, undone on a failure
        before the first step, and Ctrl-C turned into :class:`Interrupted` saying how to go on."""
        rundir = self.directory
        try:
            result = fit()
        except KeyboardInterrupt as err:
            # Ctrl-C, or SIGTERM/SIGHUP (hardcse.training.signals): exit 130, or 128 + the signal.
            kept_old = rundir is not None and rundir.replaced
            began = rundir is None or rundir.has_started or self.resume
            if rundir is not None:
                rundir.close(failed=True)
            signum = getattr(err, "signum", None)
            interrupted = Interrupted(self._interrupted_message(began, kept_old, signum))
            interrupted.exit_code = getattr(err, "exit_code", Interrupted.exit_code)
            raise interrupted from None
        except BaseException as err:
            began = rundir is None or rundir.has_started or self.resume
            if rundir is not None:
                rundir.close(failed=True)
            if isinstance(err, Exception) and not isinstance(err, HardcseError) and is_disk_full(err, self.out):
                then = self._disk_full_then(began)
                raise DiskFull(disk_full_message(self.out, f"writing the run in '{self.out}'", then)) from None
            raise
        if rundir is not None:
            rundir.close()
        return result

    def _interrupted_message(self, began: bool, kept_old: bool, signum: int | None = None) -> str:
        """The one sentence after Ctrl-C (or SIGTERM/SIGHUP, ``signum``): what was kept and how to go on."""
        what = "interrupted" if signum is None else f"stopped by {signal_name(signum)}"
        if not began:
            if kept_old:
                return f"{what} before training started; the earlier run in '{self.out}' is kept as it was."
            return f"{what} before training started; nothing was kept (run the same command again)."
        last = last_complete_checkpoint(self.checkpoints) if self.checkpoints.is_dir() else None
        where = f"the last checkpoint is {last}" if last is not None else "no checkpoint was saved yet"
        return f"{what}; {where}; continue with: hardcse {self.kind} --resume --output {self.out}"

    def _disk_full_then(self, began: bool) -> str:
        """What is left after a full disk stopped a run, and the command that goes on."""
        if not began:
            return "nothing was changed (run the same command again once space is freed)"
        last = last_complete_checkpoint(self.checkpoints) if self.checkpoints.is_dir() else None
        where = f"the last complete checkpoint is {last}" if last is not None else "no checkpoint was saved yet"
        return f"{where}; once space is freed, continue with: hardcse {self.kind} --resume --output {self.out}"


class RunStartedCallback(TrainerCallback):
    """Tells the run directory that training made its first step (an old run it replaces goes)."""

    def __init__(self, rundir: RunDirectory) -> None:
        self.rundir = rundir

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the trainer's signature
        if not self.rundir.has_started:
            self.rundir.started()
