"""The signals a scheduler or a closed terminal sends: SIGTERM and SIGHUP.

SLURM (preemption, time limit with ``--signal``), Kubernetes and systemd stop a job with SIGTERM
and kill it a grace period later; closing the terminal sends SIGHUP. Python's default for both is
to die on the spot, which skips every ``finally``: an ``--overwrite`` would leave the old run
hidden beside the new one. The command line therefore handles both (:func:`handling`):

* **outside a training loop** a signal raises :class:`Terminated` (a ``KeyboardInterrupt``, so
  every clean-up that Ctrl-C runs runs too: an old run moved aside by ``--overwrite`` is put
  back, a half-written export is removed) and the command exits with ``128 + signal`` (143 for
  SIGTERM, 129 for SIGHUP), the status a shell reports for a process the signal killed;
* **inside a training loop** (between :func:`stop_on_signal`'s ``on_train_begin`` and
  ``on_train_end``) the signal is only recorded. The step in progress finishes, a checkpoint of
  it is saved, training stops and :func:`raise_if_stopped` raises :class:`Stopped`, whose message
  names the checkpoint and the ``--resume`` command, with the same exit status. ``--resume``
  continues exactly from that checkpoint.

SIGINT (Ctrl-C) is left as it is: it interrupts at once (exit 130), keeping the last checkpoint
the run saved by itself.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The signals handled as a request to stop (``signal.SIGHUP`` does not exist on Windows).
HANDLED = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


def exit_status(signum: int) -> int:
    """The exit status of a command stopped by signal ``signum`` (``128 + signum``)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived outside a training loop: unwind as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.exit_code = exit_status(signum)


class Stopped(KeyboardInterrupt):
    """Training stopped after saving a checkpoint because SIGTERM or SIGHUP arrived."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = exit_status(signum)


class _State:
    def __init__(self) -> None:
        self.received: int | None = None
        self.training = 0


_state = _State()


def _handler(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
    _state.received = signum
    if _state.training == 0:
        raise Terminated(signum)


def received() -> int | None:
    """The signal recorded since :func:`handling` began (``None``: none)."""
    return _state.received


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP as described in the module docstring while the block runs (only
    in the main thread, where Python delivers signals); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    _state.received = None
    _state.training = 0
    for signum in HANDLED:
        try:
            previous[signum] = signal.signal(signum, _handler)
        except (OSError, ValueError):  # pragma: no cover - not settable here
            continue
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.training = 0


def _any_rank_received() -> bool:
    """Whether this process, or under a launcher any process, got a signal: every rank stops at
    the same step (one rank stopping alone would leave the others waiting in a collective)."""
    local = _state.received is not None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return local
    import torch

    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and _state.received is None:
        _state.received = int(signal.SIGTERM)  # another rank's signal: stop as it does
    return bool(flag.item())


def stop_on_signal() -> Any:
    """A ``TrainerCallback`` that turns a recorded SIGTERM/SIGHUP into "save a checkpoint of this
    step, then stop".

    While training runs (from its ``on_train_begin`` to its ``on_train_end``) the handler only
    records the signal; at the end of the step in progress the callback asks the trainer to save
    and stop. Outside training (data loading before the first step, the final export) the handler
    raises :class:`Terminated`. (Built here so the command line starts without transformers.)
    """
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - the trainer's signature
            _state.training += 1

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if _any_rank_received():
                control.should_save = True
                control.should_training_stop = True
                if args.save_total_limit == 1:
                    # At the end of training the trainer deletes the newest checkpoint when the limit is 1
                    # and it is not the best one; this one is what --resume continues from.
                    args.save_total_limit = 2

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            _state.training = max(0, _state.training - 1)

    return StopOnSignal()


def raise_if_stopped(trainer: Any) -> None:
    """After ``trainer.train()``: raise :class:`Stopped` when a signal ended it early."""
    signum = _state.received
    if signum is None:
        return
    step = int(trainer.state.global_step)
    checkpoint = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    raise Stopped(signum, step, checkpoint if checkpoint.is_dir() else None)


@contextlib.contextmanager
def training_loop() -> Iterator[None]:
    """Around ``trainer.train()``: the training depth returns to where it was even when training
    raises before its ``on_train_end``."""
    depth = _state.training
    try:
        yield
    finally:
        _state.training = depth
