"""One configuration for a training run, usable from YAML, the command line and Python.

Values are resolved in this order (later wins): the preset, a YAML file (``--config``), then
explicit options. The fully resolved configuration is written to ``DIR/config.yaml``; passing it
back with ``--config`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hardcse.errors import ConfigError

RECIPES = ("simcse", "clusterns", "hsimcse")


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the ``cpu`` preset's SimCSE)."""

    recipe: str = "simcse"
    preset: str = "cpu"
    # Encoder
    model: str = "default"
    pooling: str = "cls"
    max_seq_length: int = 32
    mlp_head: bool = True
    dropout: float | None = None
    trust_remote_code: bool = False
    # Data: text files (one sentence per line), or a `datasets` name/path with `corpus_column`.
    corpus: list[str] = field(default_factory=lambda: ["corpus/wikipedia_vital_articles_en.sentences.txt"])
    corpus_column: str = "text"
    max_sentences: int | None = None
    data_dir: str | None = None
    # Optimisation (official recipe: AdamW, linear decay, no warm-up, clip 1.0)
    steps: int | None = 250
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    temperature: float = 0.05
    # Encode the two views in this many length-sorted chunks (less padding; 1 = one pass).
    length_chunks: int = 1
    # Dropout masks from packed 16-bit random draws on the CPU (p within 7.6e-6, same expectation;
    # 5-7% faster steps in perf.py); false = torch's own dropout. No effect on GPUs.
    fast_dropout: bool = True
    fp16: bool = False
    bf16: bool = False
    seed: int = 42
    # Selection on STS-B dev
    eval_steps: int = 50
    early_stopping: int | None = None
    eval_batch_size: int = 128
    # Tasks scored before and after training (default: the seven of the papers).
    test_tasks: list[str] | None = None
    # Output
    output: str = "runs/simcse-cpu"
    save_total_limit: int = 1
    # Method parameters (fields of the method's own config dataclass)
    clusterns: dict[str, Any] = field(default_factory=dict)
    hsimcse: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe '{self.recipe}'; choose one of {', '.join(RECIPES)}.")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch size {self.batch_size} is too small: contrastive learning needs at least 2 sentences "
                "per batch (the official recipes use 64 to 512)."
            )
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}.")
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}.")
        if self.eval_steps < 1:
            raise ConfigError(f"--eval-steps must be at least 1, got {self.eval_steps}.")
        if not (self.lr > 0):
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}.")
        if self.length_chunks < 1:
            raise ConfigError(f"length_chunks must be at least 1, got {self.length_chunks}.")
        if self.fp16 and self.bf16:
            raise ConfigError("fp16 and bf16 are exclusive; choose one.")
        if not self.corpus:
            raise ConfigError("no corpus given; pass --corpus FILE (one sentence per line).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> TrainConfig:
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in {source}; "
                f"valid keys are {', '.join(sorted(cls.field_names()))}."
            )
        hints = typing.get_type_hints(cls)
        values = {key: _checked_value(key, hints[key], value, source) for key, value in values.items()}
        config = cls(**values)
        if isinstance(config.corpus, str):
            config.corpus = [config.corpus]
        return config

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``None`` values are ignored; dicts are merged)."""
        values = self.to_dict()
        for key, value in changes.items():
            if value is None:
                continue
            if key not in values:
                raise ConfigError(f"unknown configuration key '{key}'.")
            if isinstance(values[key], dict) and isinstance(value, dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return TrainConfig.from_dict(values)


def _checked_value(key: str, hint: Any, value: Any, source: str) -> Any:
    """``value`` as the type of field ``key``, or one clear error.

    YAML reads ``5e-4`` (no dot) as a string, so numeric strings are converted for number fields.
    """
    if value is None:
        return None
    args = set(typing.get_args(hint)) or {hint}
    if bool in args:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' in {source} must be true or false, got {value!r}.")
    if float in args or int in args:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"'{key}' in {source} must be a number, got {value!r}.")
        if float in args:
            return float(number) if isinstance(value, str) else number
        if float(number).is_integer():
            return int(number)
        raise ConfigError(f"'{key}' in {source} must be a whole number, got {value!r}.")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (one clear error for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(err).splitlines()[0]}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values.")
    return values


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
