"""One configuration for a training run, usable from YAML, the command line and Python.

Values are resolved in this order (later wins): the preset, a YAML file (``--config``), then
explicit options. The fully resolved configuration is written to ``DIR/config.yaml``; passing it
back with ``--config`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hardcse.errors import ConfigError
from hardcse.models.representation import POOLINGS, Representation
from hardcse.objectives.registry import (
    get_method,
    is_method,
    load_plugins,
    method_names,
    normalize_recipe,
    recipe_names,
)
from hardcse.process_group import launched_world_size
from hardcse.safety import brief, load_yaml_text


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the ``cpu`` preset's SimCSE).

    ``recipe`` is a registered method or several joined by ``+`` (``clusterns+hsimcse``; a YAML list
    is joined). Each method's settings are a mapping under its name (``clusterns: {k: 32}``,
    ``--set clusterns.k=32``), held in :attr:`methods` and written at the top level of
    ``config.yaml``; ``config.clusterns`` still reads them. :meth:`method_configs` gives them as
    the methods' typed config objects.
    """

    recipe: str = "simcse"
    preset: str = "cpu"
    # Encoder
    model: str = "default"
    pooling: str = "cls"
    max_seq_length: int = 32
    mlp_head: bool = True
    dropout: float | None = None
    trust_remote_code: bool = False
    # Prompt representation (PromptBERT; prompt ClusterNS): the [MASK] state of the sentence wrapped in
    # a template ({sentence}, {mask}), template denoising in training; null templates: the official ones.
    # (pooling and these, together: the `representation` property.)
    prompt: bool = False
    prompt_template: str | None = None
    prompt_template2: str | None = None
    prompt_denoise: bool = True
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
    # linear (decay to 0, the official recipes') or constant (after warm-up; TSDAE's documentation)
    lr_schedule: str = "linear"
    max_grad_norm: float = 1.0
    temperature: float = 0.05
    # Encode the two views in this many length-sorted chunks (less padding; 1 = one pass).
    length_chunks: int = 1
    # Cached (GradCache-style) steps: encode at most this many sentences at a time, the loss still
    # on the whole batch (memory of a mini-batch, gradients of the batch); None = one graph.
    mini_batch_size: int | None = None
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
    # Tasks scored before and after training (default: the seven of the papers; [] with `test`: none).
    test_tasks: list[str] | None = None
    # Your own pairs (hardcse.data.pairs): `dev` replaces STS-B dev for selection and early stopping;
    # each `test` set is scored before and after training. A TSV/CSV/JSONL file, a saved `datasets`
    # directory or name, or a built-in domain (STS-B:captions, STS-B:news, STS-B:forums, SICK).
    dev: str | None = None
    test: list[str] = field(default_factory=list)
    # Sentence 1, sentence 2 and score columns of those files (names, or positions without a header).
    pair_columns: list[str] | None = None
    # Output
    output: str = "runs/simcse-cpu"
    save_total_limit: int = 1
    # Live tracking (the trainer's integrations): tensorboard, wandb, mlflow, trackio; none: nowhere.
    report_to: list[str] = field(default_factory=lambda: ["none"])
    # Train with a sentence-transformers loss instead of the recipe (domain-adaptation baselines:
    # tsdae, ct; hardcse.training.st_baselines); null: the recipe.
    st_loss: str | None = None
    # Modules imported before anything else is checked: they register methods from outside hardcse
    # (--plugin MODULE; saved here so --resume and compare import them again).
    plugins: list[str] = field(default_factory=list)
    # Method settings by method name (fields of each method's config dataclass; defaults where absent).
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # ``config.clusterns``: a method's settings (only reached for names that are not attributes).
        if not name.startswith("_") and is_method(name):
            return self.__dict__.setdefault("methods", {}).setdefault(name, {})
        raise AttributeError(f"'TrainConfig' has no setting '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _FIELD_NAMES and is_method(name):
            self.methods[name] = value
        else:
            object.__setattr__(self, name, value)

    @property
    def representation(self) -> Representation:
        """The sentence representation these settings describe (``pooling``, ``prompt``,
        ``prompt_template``, ``prompt_template2``, ``prompt_denoise``): it builds the training
        model, its collator and export, and names the run's pooling and start key."""
        return Representation.from_settings(
            {
                "pooling": self.pooling,
                "prompt": self.prompt,
                "prompt_template": self.prompt_template,
                "prompt_template2": self.prompt_template2,
                "prompt_denoise": self.prompt_denoise,
            }
        )

    def validate(self) -> None:
        """Check every value's range (types were checked when the config was built); one sentence each.

        Runs before the corpus or the model is loaded, so a bad value costs nothing.
        """
        recipe_names(self.recipe)
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{self.pooling}'; choose one of {', '.join(POOLINGS)}.")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch size {self.batch_size} is too small: contrastive learning needs at least 2 sentences "
                "per batch (the official recipes use 64 to 512)."
            )
        _at_least("--steps", self.steps, 1)
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}.")
        _at_least("--eval-steps", self.eval_steps, 1)
        _at_least("--early-stopping", self.early_stopping, 1)
        _at_least("--max-sentences", self.max_sentences, 1)
        _at_least("max_seq_length", self.max_seq_length, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        _at_least("save_total_limit", self.save_total_limit, 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        if not (self.lr > 0):
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}.")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("weight_decay and max_grad_norm must be 0 or more.")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout is a probability in [0, 1), got {self.dropout}.")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be between 0 and 2**32 - 1, got {self.seed}.")
        if self.length_chunks < 1:
            raise ConfigError(f"length_chunks must be at least 1, got {self.length_chunks}.")
        if self.mini_batch_size is not None and not 1 <= self.mini_batch_size <= self.batch_size:
            raise ConfigError(
                f"mini_batch_size must be between 1 and the batch size {self.batch_size} sentences (or unset: "
                f"no caching), got {self.mini_batch_size}."
            )
        if self.fp16 and self.bf16:
            raise ConfigError("fp16 and bf16 are exclusive; choose one.")
        if self.prompt or self.prompt_template is not None or self.prompt_template2 is not None:
            from hardcse.models.templates import check_templates

            check_templates(self.prompt_template, self.prompt_template2)
        if not self.corpus:
            raise ConfigError("no corpus given; pass --corpus FILE (one sentence per line).")
        from hardcse.training.tracking import report_targets

        report_targets(self.report_to)  # known names, each integration's package installed
        if self.test_tasks is not None and (self.test_tasks or not self.test):
            from hardcse.evaluation.sts import resolve_tasks

            resolve_tasks(self.test_tasks, "test")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        if self.st_loss is not None:
            from hardcse.training.st_baselines import check_st_loss

            check_st_loss(self.st_loss)
            if self.prompt:
                raise ConfigError("st_loss trains a plain encoder; it cannot be combined with prompt.")
        if self.pair_columns is not None:
            from hardcse.data.pairs import parse_columns

            parse_columns(self.pair_columns)
        if self.dev is not None and not self.dev.strip():
            raise ConfigError("--dev is empty; pass a pair file or a domain such as STS-B:captions.")
        self.method_configs()  # each method's own checks (K <= batch, margins, choices ...)

    def method_configs(self) -> dict[str, Any]:
        """The typed, validated config objects (``{"clusterns": ClusterNSConfig(...)}``) of the
        recipe's methods, in recipe order, then of any other method given settings.

        Each recipe method's ``check_batch`` sees the global batch here (per-device batch x
        ``WORLD_SIZE`` of a launcher; ClusterNS needs K sentences), so a batch a method cannot use
        is refused before anything loads.
        """
        names = recipe_names(self.recipe)
        configs = {}
        for name in [*names, *(n for n in self.methods if n not in names)]:
            method = get_method(name)
            values = check_fields(method.config_class, self.methods.get(name, {}), "the configuration", f"{name}.")
            check_method_seed(name, values)
            configs[name] = method.make_config(values)
        world = launched_world_size()
        for name in names:
            check = get_method(name).check_batch
            if check is None:
                continue
            try:
                check(configs[name], self.batch_size * world)
            except ConfigError as err:
                if self.mini_batch_size is None:
                    raise
                # Cached steps split only the encoding; say so, or mini_batch_size looks like the fix.
                raise ConfigError(
                    f"{str(err).rstrip('.')} (mini_batch_size does not change this: the loss sees the whole batch)."
                ) from None
        return configs

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values; each method's settings at the top level under its name
        (empty ones left out: no settings are the method's defaults)."""
        values = dataclasses.asdict(self)
        for name, settings in values.pop("methods").items():
            if settings:
                values[name] = settings
        return values

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> TrainConfig:
        """A config from ``values`` (every key known, every value of its field's type, nested
        method settings included); ranges are checked by :meth:`validate`."""
        checked = check_fields(cls, values, source)
        methods = {key: checked.pop(key) for key in list(checked) if key not in _FIELD_NAMES}
        config = cls(**checked, methods=methods)
        if isinstance(config.corpus, str):
            config.corpus = [config.corpus]
        return config

    def updated(self, source: str = "the options", **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (``None`` values are ignored; dicts are merged).

        The changes are checked on their own first, so an error names where they came from.
        """
        changes = check_fields(TrainConfig, {k: v for k, v in changes.items() if v is not None}, source)
        values = self.to_dict()
        for key, value in changes.items():
            if isinstance(values.get(key), dict) and isinstance(value, dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return TrainConfig.from_dict(values)


#: Learning-rate schedules by name -> the transformers scheduler type.
LR_SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup"}


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def config_keys() -> list[str]:
    """The keys a configuration may have: the settings of :class:`TrainConfig` and one per
    registered method (its settings mapping); ``methods`` is internal."""
    clash = [name for name in method_names() if name in _FIELD_NAMES]
    if clash:
        raise ConfigError(
            f"a registered method is named '{clash[0]}', which is already a training setting; register it under "
            "another name."
        )
    return [*(f for f in _FIELD_NAMES if f != "methods"), *method_names()]


def check_method_seed(method: str, values: dict[str, Any]) -> None:
    """A method's own ``seed`` (``clusterns.seed``, ``hsimcse.seed``) gets the run seed's range check."""
    seed = values.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        raise ConfigError(
            f"{method}.seed must be between 0 and 2**32 - 1 (or null: the run's seed), got {brief(seed)}."
        )


def _at_least(name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}.")


def check_fields(cls: type, values: Any, source: str, prefix: str = "") -> dict[str, Any]:
    """``values`` checked against the fields of dataclass ``cls``: all unknown keys named at once
    with the valid ones, each value converted to its field's type or refused in one sentence.

    For :class:`TrainConfig` the method settings (``clusterns``, ``hsimcse``, any registered
    method) are checked against their methods' config dataclasses, so ``--set clusterns.k=abc``
    fails here, before anything loads, and ``recipe`` (a name, ``a+b`` or a list) is checked and
    spelled ``a+b``.
    """
    if not isinstance(values, dict):
        raise ConfigError(
            f"'{prefix.rstrip('.')}' in {source} must be a mapping of keys to values, got {brief(values)}."
        )
    top = cls is TrainConfig
    if top:
        load_plugins(values.get("plugins"))  # they may register the methods named below
    names = config_keys() if top else [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in names]
    if unknown:
        valid = ", ".join(prefix + n for n in sorted(names))
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(brief(prefix + str(k)) for k in unknown[:10])} "
            f"in {source}; valid keys are {valid}."
        )
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        if top and key not in _FIELD_NAMES:  # a method's settings
            checked[key] = check_fields(get_method(key).config_class, value, source, prefix=f"{prefix}{key}.")
        elif top and key == "recipe" and isinstance(value, (str, list, tuple)):
            checked[key] = normalize_recipe(value)
        else:
            checked[key] = _checked_value(prefix + key, hints[key], value, source)
    return checked


def _checked_value(key: str, hint: Any, value: Any, source: str) -> Any:
    """``value`` as the type of field ``key``, or one clear error.

    YAML reads ``5e-4`` (no dot) as a string, so numeric strings are converted for number fields;
    NaN and infinities are refused (no setting means them).
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = set(typing.get_args(hint)) if union else {hint}
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"'{key}' in {source} needs a value, got null.")
    if bool in args:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' in {source} must be true or false, got {brief(value)}.")
    if float in args or int in args:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"'{key}' in {source} must be a number, got {brief(value)}.")
        if not math.isfinite(number):
            raise ConfigError(f"'{key}' in {source} must be a finite number, got {brief(value)}.")
        if float in args:
            return float(number) if isinstance(value, str) else number
        if float(number).is_integer():
            return int(number)
        raise ConfigError(f"'{key}' in {source} must be a whole number, got {brief(value)}.")
    if str in args:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' in {source} must be text, got {brief(value)}.")
    origins = {typing.get_origin(a) for a in args}
    if list in origins:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(item, str) for item in items):
            return list(items)
        raise ConfigError(f"'{key}' in {source} must be a list of text values, got {brief(value)}.")
    if dict in origins and not isinstance(value, dict):
        raise ConfigError(f"'{key}' in {source} must be a mapping of keys to values, got {brief(value)}.")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (one clear error for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist.")
    try:
        values = load_yaml_text(path.read_text(encoding="utf-8"), f"config file '{path}'") or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {err.start}); re-encode it.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values.")
    return values


def make_config(
    preset: str | None = "cpu", recipe: str | None = None, config_file: str | Path | None = None, **overrides: Any
) -> TrainConfig:
    """Resolve preset < YAML file < keyword overrides into a checked, validated :class:`TrainConfig`.

    Each layer's keys and values are checked on their own (an error names the file or the
    options), and everything is validated before anything is loaded. Without an ``output`` the
    run goes to ``runs/RECIPE-PRESET``.
    """
    from hardcse.training.presets import resolve_preset

    file_values = load_yaml(config_file) if config_file is not None else {}
    source = f"config file '{config_file}'"
    preset = overrides.pop("preset", None) or file_values.get("preset") or preset or "cpu"
    plugins = [*_names(file_values.get("plugins")), *_names(overrides.get("plugins"))]
    load_plugins(plugins)  # before the preset: the recipe may name a plugin's method
    if plugins:
        overrides["plugins"] = list(dict.fromkeys(plugins))
    recipe = recipe or file_values.get("recipe")
    if isinstance(recipe, (list, tuple)):
        recipe = normalize_recipe(recipe)
    if not isinstance(preset, str) or not (recipe is None or isinstance(recipe, str)):
        raise ConfigError(f"preset and recipe must be names, got {brief(preset)} and {brief(recipe)}.")
    base = TrainConfig.from_dict(resolve_preset(preset, recipe), source=f"preset '{preset}'")
    config = base.updated(source=source, **{k: v for k, v in file_values.items() if k != "preset"})
    config = config.updated(source="the options", **overrides)
    if overrides.get("output") is None and file_values.get("output") is None:
        config.output = f"runs/{config.recipe}-{config.preset}"
    config.validate()
    return config


def _names(value: Any) -> list[Any]:
    """A ``plugins`` value as a list (one name, a list, or nothing)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
