"""The method registry: every method is one registered :class:`Method` object.

A method is its name, a typed config dataclass (its settings, every field with a default), the
presets that use it, and a ``build`` step that turns a config into the :class:`~hardcse.objectives.
base.Part` objects it adds to the contrastive frame and the :class:`StepHook` objects that must run
between optimisation steps (an index refresh, say). The training layer looks methods up here and
never names one; a user adds a method from outside the package with :func:`register`
(``docs/extending.md``).

A *recipe* is one method name or several joined by ``+`` (``clusterns+hsimcse``; a YAML list is the
same). Each method's ``build`` injects parts (:mod:`hardcse.objectives.parts`: positives, negative
miners, false-negative handlers, auxiliary terms); a step runs them on one
:class:`~hardcse.objectives.base.ContrastiveBatch` by stage (:data:`~hardcse.objectives.base.STAGES`),
in recipe order within a stage, then the contrastive head, so the loss is the SimCSE InfoNCE over the
batch plus every column the parts add, plus every auxiliary term, whatever the order of the methods:

.. math::

    \\mathcal L = \\mathcal L_{\\text{InfoNCE}}(S \\,|\\, E_1 | \\dots | E_m) + \\sum_t \\lambda_t \\mathcal L_t

``simcse`` is that frame with no parts; naming it next to another method would add nothing, so
``simcse+X`` is refused (write ``X``) rather than being a second name for the same run.

The built-in methods (``simcse``, ``clusterns``, ``hsimcse``) are loaded from their modules on first
use, so looking names up stays cheap (no faiss or transformers import).

Methods from other packages (plugins) are found in two ways, so the command line, ``--resume`` and
``compare`` know them as well as Python code that registered them does:

* the Python packaging convention: a distribution declares an entry point in the group
  ``hardcse.methods`` (:data:`ENTRY_POINT_GROUP`) named after the method, whose value is the
  :class:`Method` object (``package.module:METHOD``) or a module that registers it when imported.
  It is loaded the first time its name is looked up;
* a module named in a run's ``plugins`` setting (``--plugin MODULE``), imported before the
  configuration is checked (:func:`load_plugins`); ``plugins`` is saved in ``config.yaml``, so a
  resumed or compared run imports it again.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hardcse.errors import ConfigError
from hardcse.objectives.base import Part
from hardcse.objectives.heads import ContrastiveHead

#: The SimCSE Wikipedia corpus of the paper presets (``hardcse download`` puts it in the data directory).
WIKI1M = "corpus/wiki1m_for_simcse.txt"

# Built-in methods: name -> module defining ``METHOD``; imported when first asked for.
_BUILTIN: dict[str, str] = {
    "simcse": "hardcse.objectives.simcse",
    "clusterns": "hardcse.objectives.clusterns",
    "hsimcse": "hardcse.objectives.hsimcse",
}
_LOADED: dict[str, Method] = {}
_REGISTERED: dict[str, Method] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: The entry-point group in which other packages declare their methods (name: the method's name).
ENTRY_POINT_GROUP = "hardcse.methods"
_ENTRY_POINTS: dict[tuple[tuple[str, int], ...], dict[str, importlib.metadata.EntryPoint]] = {}


@dataclass(frozen=True)
class StepInfo:
    """What a :class:`StepHook` is told: the optimisation step (0 before the first), the planned
    number of steps (``None`` if unknown), the model being trained and whether this is the main
    process (the one that may print)."""

    step: int
    max_steps: int | None
    model: Any
    main: bool = True


class StepHook:
    """Work a method does between optimisation steps, run by the trainer's one generic callback
    (:class:`hardcse.training.callbacks.MethodHooksCallback`), on every process at the same steps.

    Override what you need; both do nothing by default. State a hook changes that must survive a
    restart belongs in a buffer of one of the method's parts (saved with every checkpoint).
    """

    def on_train_begin(self, info: StepInfo) -> None:
        """Called once when training begins (``info.step`` > 0 when resuming from a checkpoint)."""

    def on_step_end(self, info: StepInfo) -> None:
        """Called after optimisation step ``info.step``."""


@dataclass(frozen=True)
class BuildContext:
    """What a method's ``build`` may use.

    ``model``: the SentenceTransformer about to be trained (untrained, not yet restored on resume);
    ``sentences``: the training corpus (row ``i`` is dataset label ``i``); ``global_batch``: the
    sentences one loss sees (per-device batch x processes); ``run_seed``: the run's ``--seed``;
    ``encode_batch_size``/``show_progress``: for methods that encode the corpus.
    """

    model: Any
    sentences: Sequence[str]
    global_batch: int
    run_seed: int | None = None
    encode_batch_size: int = 128
    show_progress: bool = False

    @property
    def dim(self) -> int:
        """The embedding dimension of ``model``."""
        return int(self.model.get_embedding_dimension())


@dataclass
class Built:
    """A built method: the parts it adds to the loss (in order), its step hooks, and the contrastive
    head that replaces the default InfoNCE (``None``: the method keeps the recipe's head)."""

    parts: list[Part] = field(default_factory=list)
    hooks: list[StepHook] = field(default_factory=list)
    head: ContrastiveHead | None = None


@dataclass(frozen=True)
class Method:
    """One contrastive-learning method.

    Attributes:
        name: the recipe name (lower case letters, digits, ``_``); also the key of its settings in a
            configuration (``--set NAME.key=value``, a top-level ``NAME:`` mapping in YAML).
        config_class: a dataclass of its settings; every field needs a default. An optional
            ``validate()`` method raises :class:`~hardcse.errors.ConfigError` for a bad value.
        build: ``build(config, context)`` -> :class:`Built` (or just a list of parts).
        cpu_settings: its settings in the ``cpu`` preset (merged for a composed recipe).
        presets: paper presets, name -> full training-config values (``recipe`` included).
        published: preset name -> the seven-task STS average the paper reports (``None``: none).
        check_batch: ``check_batch(config, global_batch)`` refuses a batch the method cannot use
            (run before anything loads).
        citation: BibTeX of the paper.
        title: the method's name as papers write it (``ClusterNS``), for model cards.
        summary: one line for listings.
    """

    name: str
    config_class: type
    build: Callable[[Any, BuildContext], Built | Sequence[Part]]
    cpu_settings: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    published: Mapping[str, float | None] = field(default_factory=dict)
    check_batch: Callable[[Any, int], None] | None = None
    citation: str = ""
    title: str = ""
    summary: str = ""

    def make_config(self, values: Mapping[str, Any] | None = None) -> Any:
        """The typed config from ``values`` (already type-checked), validated."""
        config = self.config_class(**dict(values or {}))
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
        return config

    def build_parts(self, config: Any, context: BuildContext) -> Built:
        """``build`` with its result as a :class:`Built` (a bare list of parts is accepted)."""
        out = self.build(config, context)
        if isinstance(out, Built):
            return out
        return Built(parts=list(out))


def _check_method(method: Method) -> None:
    if not isinstance(method, Method):
        raise ConfigError(f"register() takes a hardcse.objectives.registry.Method, got {type(method).__name__}.")
    if not _NAME.match(method.name):
        raise ConfigError(
            f"method name '{method.name}' is not usable as a recipe and config key; use lower case letters, "
            "digits and '_', starting with a letter."
        )
    cls = method.config_class
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"method '{method.name}': config_class must be a dataclass, got {cls!r}.")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"method '{method.name}': config fields {', '.join(missing)} need defaults.")


def register(method: Method, replace: bool = False) -> Method:
    """Register ``method`` under its name (``replace=True`` replaces a method registered earlier;
    built-in methods cannot be replaced). Returns it, so it can decorate nothing or be assigned."""
    _check_method(method)
    if method.name in _BUILTIN:
        raise ConfigError(f"'{method.name}' is a built-in method of hardcse; register yours under another name.")
    if method.name in _REGISTERED and not replace:
        raise ConfigError(f"a method named '{method.name}' is already registered; pass replace=True to replace it.")
    _REGISTERED[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method registered with :func:`register` (unknown names are ignored)."""
    _REGISTERED.pop(name, None)


def method_names() -> list[str]:
    """Every method name: the built-in ones first, then registered ones in registration order, then
    those other installed packages declare (entry points) that are not loaded yet."""
    return [*_BUILTIN, *_REGISTERED, *(n for n in _entry_points() if n not in _REGISTERED)]


def is_method(name: Any) -> bool:
    return isinstance(name, str) and (name in _BUILTIN or name in _REGISTERED or name in _entry_points())


def get_method(name: str) -> Method:
    """The method called ``name`` (unknown: one sentence naming the registered ones).

    A name declared by an installed package's entry point is loaded (and registered) here."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        if name not in _LOADED:
            _LOADED[name] = importlib.import_module(_BUILTIN[name]).METHOD
        return _LOADED[name]
    if name in _entry_points():
        return _load_entry_point(name, _entry_points()[name])
    raise ConfigError(f"unknown method '{name}'; registered methods are {', '.join(method_names())}.")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The methods installed packages declare (group :data:`ENTRY_POINT_GROUP`), by name (built-in
    names are ignored: they cannot be replaced). Read again when ``sys.path`` or one of its
    directories changes (a package installed since)."""
    key = tuple((entry, _mtime(entry)) for entry in sys.path)
    if key not in _ENTRY_POINTS:
        found = {}
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in _BUILTIN:
                found.setdefault(entry.name, entry)
        _ENTRY_POINTS.clear()
        _ENTRY_POINTS[key] = found
    return _ENTRY_POINTS[key]


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return -1


def _load_entry_point(name: str, entry: importlib.metadata.EntryPoint) -> Method:
    """Load a declared method: the entry point's object is a :class:`Method` (registered here) or a
    module that registers the method when imported."""
    where = f"entry point '{name} = {entry.value}' (group {ENTRY_POINT_GROUP})"
    try:
        loaded = entry.load()
    except Exception as err:  # noqa: BLE001 - any failure of the outside code is one sentence
        raise ConfigError(f"method '{name}' cannot be loaded from its {where}: {err}.") from None
    if isinstance(loaded, Method) and _REGISTERED.get(loaded.name) is not loaded:
        register(loaded)
    if name not in _REGISTERED:
        raise ConfigError(f"the {where} did not register a method named '{name}'.")
    return _REGISTERED[name]


def load_plugins(modules: str | Iterable[str] | None) -> None:
    """Import each module of ``modules`` (a run's ``plugins`` setting; one name or several):
    importing a plugin module registers its methods (:func:`register`). A module imported before
    is not imported again."""
    if isinstance(modules, str):
        modules = [modules]
    if modules is not None and not isinstance(modules, (list, tuple)):
        raise ConfigError(f"plugins is a list of module names, got {modules!r}.")
    for module in modules or ():
        if not isinstance(module, str) or not module.strip():
            raise ConfigError(f"a plugin is a module name such as 'mypackage.methods', got {module!r}.")
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module.strip())
        except ImportError as err:
            raise ConfigError(
                f"plugin module '{module}' cannot be imported ({err}); install its package or put it on PYTHONPATH."
            ) from None


def compose(recipe: str | Sequence[str], configs: Mapping[str, Any], context: BuildContext) -> Built:
    """Build every method of ``recipe`` with its config (``configs[name]``) and join them: the parts
    in recipe order (a step runs them by stage, :data:`~hardcse.objectives.base.STAGES`), every
    hook, and the one head a method may replace the InfoNCE with (two are refused). Two parts of
    one name are refused too: a part's name keys its settings in the loss's configuration."""
    out = Built()
    owner = None
    named: dict[str, str] = {}
    for method in parse_recipe(recipe):
        built = method.build_parts(configs[method.name], context)
        for part in built.parts:
            if part.name in named:
                first = named[part.name]
                who = (
                    f"method '{first}' adds two parts"
                    if first == method.name
                    else f"methods '{first}' and '{method.name}' both add a part"
                )
                raise ConfigError(f"{who} named '{part.name}'; give one of them another name (its name attribute).")
            named[part.name] = method.name
        out.parts.extend(built.parts)
        out.hooks.extend(built.hooks)
        if built.head is not None:
            if out.head is not None:
                raise ConfigError(
                    f"methods '{owner}' and '{method.name}' each replace the contrastive head; a recipe has one head, "
                    "so use one of them."
                )
            out.head, owner = built.head, method.name
    return out


def recipe_names(recipe: str | Sequence[str]) -> list[str]:
    """The method names of a recipe (``"a+b"`` or ``["a", "b"]``), checked: known, no repeats,
    at least one, ``simcse`` alone or not at all. Each problem is one sentence."""
    if isinstance(recipe, str):
        text = recipe
        names = [part.strip() for part in recipe.split("+")]
    elif isinstance(recipe, (list, tuple)) and all(isinstance(item, str) for item in recipe):
        text = "+".join(recipe)
        names = [str(item).strip() for item in recipe]
    else:
        raise ConfigError(f"a recipe is a method name or several joined by '+' (or a list of names), got {recipe!r}.")
    known = ", ".join(method_names())
    if not any(names):
        raise ConfigError(f"the recipe is empty; name a method ({known}) or several joined by '+'.")
    for name in names:
        if not name:
            raise ConfigError(
                f"recipe '{text}' has an empty method name; join names with one '+' (e.g. clusterns+hsimcse)."
            )
        if not is_method(name):
            where = f" in '{text}'" if len(names) > 1 else ""
            raise ConfigError(
                f"unknown recipe '{name}'{where}; choose from {known}, or join several with '+' "
                "(e.g. clusterns+hsimcse)."
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"recipe '{text}' names {', '.join(repeated)} twice; name each method once.")
    if "simcse" in names and len(names) > 1:
        rest = "+".join(n for n in names if n != "simcse")
        raise ConfigError(
            f"recipe '{text}' adds nothing by naming simcse: every recipe is built on the SimCSE loss; write '{rest}'."
        )
    return names


def normalize_recipe(recipe: str | Sequence[str]) -> str:
    """The canonical spelling of a recipe: its method names joined by ``+`` (checked)."""
    return "+".join(recipe_names(recipe))


def parse_recipe(recipe: str | Sequence[str]) -> list[Method]:
    """The methods of a recipe, in order (see :func:`recipe_names`)."""
    return [get_method(name) for name in recipe_names(recipe)]


def cpu_settings(recipe: str | Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``cpu`` preset's method settings for a recipe: each method's own, under its name."""
    return {m.name: dict(m.cpu_settings) for m in parse_recipe(recipe) if m.cpu_settings}


def all_presets() -> dict[str, dict[str, Any]]:
    """Every method's paper presets (name -> training-config values), built-in methods first."""
    table: dict[str, dict[str, Any]] = {}
    for name in method_names():
        for preset, values in get_method(name).presets.items():
            table[preset] = dict(values)
    return table


def paper_preset(model: str, batch: int, lr: float, recipe: str, **extra: Any) -> dict[str, Any]:
    """The official unsupervised SimCSE recipe with ``extra`` on top: 1 epoch of
    wiki1m, max length 32, fp16, STS-B dev every 125 steps, CLS + train-only MLP."""
    return {
        "recipe": recipe,
        "model": model,
        "pooling": "cls",
        "max_seq_length": 32,
        "corpus": [WIKI1M],
        "batch_size": batch,
        "lr": lr,
        "steps": None,
        "epochs": 1.0,
        "eval_steps": 125,
        "fp16": True,
        **extra,
    }
