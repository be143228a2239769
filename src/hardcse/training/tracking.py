"""Live experiment tracking through the trainer's own integrations.

``report_to`` (``--report-to``; a name, a comma-separated string or a list) names where a run is
watched while it trains: ``tensorboard``, ``wandb`` (Weights & Biases), ``mlflow`` or ``trackio``;
``none`` (the default) reports nowhere. The integrations are those of ``transformers``: they see
every value the trainer logs, which in a hardcse run is

* the loss and each of its components, every step (``train/loss``, ``train/infonce``,
  ``train/bml``, ...);
* the STS-B dev score at every evaluation (``eval/stsb_spearman``);
* the method's diagnostics of the step (clustering start, same-cluster pairs, hinge activity, ...)
  under their own namespace, ``diagnostics/<name>`` (``train/diagnostics/<name>`` once the
  integration prefixes it), so a diagnostic never takes the place of a loss component of the same
  name.

TensorBoard's event files go to ``DIR/tensorboard`` (``tensorboard --logdir DIR`` shows them;
``TENSORBOARD_LOGGING_DIR`` moves them). The other integrations are configured by their own
environment variables (``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``, ``TRACKIO_PROJECT``, ...) and
name the run after its directory.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hardcse.errors import ConfigError

__all__ = [
    "REPORT_TARGETS",
    "TENSORBOARD_DIR",
    "attach_tracking",
    "report_targets",
    "training_report_to",
]

#: Each integration: the modules that provide it (any one will do) and the pip package to install.
REPORT_TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "trackio": (("trackio",), "trackio"),
}
#: The name that reports nowhere.
NO_REPORT = "none"
#: Where TensorBoard's event files go, inside the run directory.
TENSORBOARD_DIR = "tensorboard"


def report_targets(value: str | Sequence[str] | None) -> list[str]:
    """The integrations ``value`` names (``None``, ``[]`` and ``none``: none), each checked.

    Raises:
        ConfigError: an unknown name, ``none`` together with an integration, or an integration
            whose package is not installed (one sentence naming the package to install).
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"report_to takes integration names, got {item!r}.")
        for part in item.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    choices = ", ".join([*REPORT_TARGETS, NO_REPORT])
    unknown = [n for n in names if n != NO_REPORT and n not in REPORT_TARGETS]
    if unknown:
        raise ConfigError(f"unknown --report-to target '{unknown[0]}'; choose one or more of {choices}.")
    if NO_REPORT in names:
        others = [n for n in names if n != NO_REPORT]
        if others:
            raise ConfigError(f"--report-to none reports nowhere, so it cannot be combined with {others[0]}.")
        return []
    for name in names:
        modules, package = REPORT_TARGETS[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise ConfigError(
                f"--report-to {name} needs the '{package}' package, which is not installed; "
                f"install it (pip install {package}) or leave {name} out."
            )
    return names


def training_report_to(value: str | Sequence[str] | None) -> list[str] | str:
    """``report_to`` for ``TrainingArguments``: the checked names, or ``"none"``."""
    return report_targets(value) or NO_REPORT


def attach_tracking(trainer: Any) -> None:
    """Prepare ``trainer``'s tracking integrations (none: nothing to do).

    The method diagnostics join the logged values
    (:class:`~hardcse.training.callbacks.DiagnosticsLogCallback`, first among the callbacks), and
    TensorBoard writes into the run directory (``DIR/tensorboard``, the parent of the checkpoints
    folder) unless ``TENSORBOARD_LOGGING_DIR`` says otherwise.
    """
    from hardcse.training.callbacks import DiagnosticsLogCallback

    targets = trainer.args.report_to
    if not targets or targets == NO_REPORT or list(targets) == [NO_REPORT]:
        return
    loss = getattr(trainer, "loss", None)
    if hasattr(loss, "last_diagnostics"):
        trainer.callback_handler.callbacks.insert(0, DiagnosticsLogCallback(loss))
    run_dir = Path(trainer.args.output_dir).parent
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "logging_dir", "") is None:
            callback.logging_dir = str(run_dir / TENSORBOARD_DIR)
