"""Planning and running every recipe x seed of a comparison, resumably.

Each run goes through the same path as ``hardcse train`` (:func:`hardcse.training.config.make_config` +
:func:`hardcse.training.run.train`) into ``DIR/<label>-s<seed>/``. A run is *finished* when its
``results.json`` exists and its ``config.yaml`` is the configuration that would be run now
(``output`` aside); finished runs are skipped, half-finished ones are continued from their last
checkpoint (or restarted when they have none), so a comparison can be stopped and restarted.
The untrained encoder's evaluation is the same for every run with the same model and test
settings; it is computed once and kept as ``DIR/start-<key>.json``
(:class:`hardcse.training.start.SharedStart`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hardcse.errors import ConfigError
from hardcse.io import atomic_write_json
from hardcse.objectives.registry import is_method, load_plugins, method_names, recipe_names
from hardcse.rundir import LOCK, MARKER, run_kind
from hardcse.safety import brief, check_directory_option, check_replace_target
from hardcse.training.checkpoints import last_complete_checkpoint
from hardcse.training.config import TrainConfig, dump_yaml
from hardcse.training.start import START_FILE, SharedStart, is_shared_start_file, read_start

#: Seeds used for ``--seeds N``: 42, 43, ... (42 is the default seed of ``hardcse train``).
FIRST_SEED = 42
#: Per-run bookkeeping written by the comparison (training seconds, resume step).
RUN_INFO = "compare.json"
#: The most seeds one comparison runs per recipe (a count of a million would plan for minutes).
MAX_SEEDS = 1000
#: The run-directory kind (:mod:`hardcse.rundir`) of a comparison directory.
COMPARE_KIND = "compare"
#: Keys of the report's ``report.json`` that identify it as a comparison's (older directories have no marker).
REPORT_KEYS = {"seeds", "baseline", "recipes", "tasks"}

Log = Callable[[str], None]


@dataclass
class RunSpec:
    """One run of the comparison: a recipe (or YAML config) with one seed."""

    label: str
    seed: int
    config: TrainConfig

    @property
    def name(self) -> str:
        return f"{self.label}-s{self.seed}"

    @property
    def path(self) -> Path:
        return Path(self.config.output)


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """``3`` or ``"3"`` -> ``[42, 43, 44]``; ``"42,7"`` or ``[42, 7]`` -> that list (no duplicates)."""
    if isinstance(seeds, str):
        text = seeds.strip()
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--seeds must be a count such as 3 or a list such as 42,43,44, got '{seeds}'.") from None
        if len(values) == 1 and "," not in text:
            seeds = values[0]
        else:
            seeds = values
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}.")
        if seeds > MAX_SEEDS:
            raise ConfigError(
                f"--seeds asks for {brief(seeds)} seeds; a comparison runs at most {MAX_SEEDS} seeds per recipe."
            )
        return list(range(FIRST_SEED, FIRST_SEED + seeds))
    values = [int(s) for s in seeds]
    if not values:
        raise ConfigError("--seeds is empty; give a count such as 3 or a list such as 42,43,44.")
    if len(values) > MAX_SEEDS:
        raise ConfigError(f"--seeds lists {len(values)} seeds; a comparison runs at most {MAX_SEEDS} seeds per recipe.")
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds lists a seed twice: {brief(values)}.")
    bad = [v for v in values if not 0 <= v < 2**32]
    if bad:
        raise ConfigError(f"--seeds: every seed must be between 0 and 2**32 - 1, got {brief(bad[0])}.")
    return values


def seed_text(seeds: Sequence[int]) -> str:
    """``[42, 43, 44]`` -> ``"seeds 42..44"``; ``[42]`` -> ``"seed 42"``; otherwise the list, so that a
    count mistaken for a seed (``--seeds 42`` is 42 seeds) shows before anything trains."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}..{seeds[-1]}"
    return "seeds " + ",".join(map(str, seeds))


def parse_recipes(recipes: str | Sequence[str]) -> list[str]:
    """``"simcse,clusterns"`` or a list -> the items, stripped, in order (at least one)."""
    items = recipes.split(",") if isinstance(recipes, str) else list(recipes)
    items = [str(item).strip() for item in items if str(item).strip()]
    if not items:
        raise ConfigError(f"--recipes is empty; name recipes ({', '.join(method_names())}) or YAML config files.")
    return items


def _is_recipe(item: str) -> bool:
    """True for a registered method or a composition of them (``clusterns+hsimcse``)."""
    return all(is_method(name.strip()) for name in item.split("+"))


def _is_yaml(item: str) -> bool:
    # A recipe name wins over a file of the same name in the working directory.
    return not _is_recipe(item) and (item.lower().endswith((".yaml", ".yml")) or Path(item).is_file())


def recipe_label(item: str) -> str:
    """The run-directory label of a recipe (``clusterns+hsimcse`` as written: '+' is fine in a
    directory name) or YAML file (its stem)."""
    return Path(item).stem if _is_yaml(item) else "+".join(name.strip() for name in item.split("+"))


def plan_runs(
    recipes: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    output: str | Path,
    overrides: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """Resolve every recipe x seed into a validated configuration (seed-major order).

    Seed-major order means an interrupted comparison has every recipe at the same number of seeds.

    Raises:
        ConfigError: unknown recipe, missing or bad YAML, two recipes with the same label, a bad
            preset or override.
    """
    from hardcse.training.config import make_config

    load_plugins((overrides or {}).get("plugins"))  # the recipes may name the plugins' methods
    out = Path(output).expanduser()
    labels: dict[str, str] = {}
    for item in recipes:
        if not _is_yaml(item) and not _is_recipe(item):
            unknown = next(n.strip() for n in item.split("+") if not is_method(n.strip()))
            raise ConfigError(
                f"unknown recipe '{unknown}' in --recipes; choose from {', '.join(method_names())} (or several joined "
                "by '+') or give a YAML config file."
            )
        if not _is_yaml(item):
            recipe_names(item)  # repeats, simcse+X: one sentence before anything runs
        label = recipe_label(item)
        if label in labels:
            raise ConfigError(f"--recipes names '{label}' twice ('{labels[label]}' and '{item}'); labels must differ.")
        labels[label] = item
    plan: list[RunSpec] = []
    for seed in seeds:
        for label, item in labels.items():
            values = dict(overrides or {})
            values.update(seed=seed, output=str(out / f"{label}-s{seed}"))
            if _is_yaml(item):
                config = make_config(preset=preset, config_file=item, **values)
            else:
                config = make_config(preset=preset, recipe=item, **values)
            plan.append(RunSpec(label=label, seed=seed, config=config))
    return plan


# ---------------------------------------------------------------------------------------------
# The state of a run directory


#: Keys that do not make a run a different run: where it lives (DIR may be spelled differently
#: between invocations) and speed settings that leave the method and its distributions as they
#: are (``length_chunks`` gives the same embeddings and gradients for the same dropout masks,
#: tested; ``fast_dropout`` draws the masks from another random stream with the same
#: distribution), so a faster default does not orphan finished runs; ``report_to`` only says
#: where the run is watched.
NOT_IDENTITY = ("output", "length_chunks", "fast_dropout", "report_to")


#: The method seed of a saved ClusterNS/HSimCSE configuration without a ``seed`` key: runs saved
#: before method seeds followed the run seed drew with 42 whatever their ``seed`` (new configs
#: always write the key, ``null`` meaning the run's seed).
LEGACY_METHOD_SEED = 42


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    """The identity of a run: every key but :data:`NOT_IDENTITY`, with each method's seed as the
    seed it draws with (explicit, else the run's seed, else the legacy 42), so an old run whose
    draws equal the new default's compares equal and one whose draws differ does not."""
    comparable = {k: v for k, v in values.items() if k not in NOT_IDENTITY}
    # Runs name their corpus by absolute path since it is resolved at training time; older ones
    # by the path they were given. Both are compared as the file they find from here.
    data_dir = comparable.get("data_dir")
    if isinstance(comparable.get("corpus"), list):
        from hardcse.data.corpus import resolve_corpus_paths
        from hardcse.data.paths import resolve_data_dir

        try:
            root = resolve_data_dir(data_dir)
        except Exception:  # noqa: BLE001 - an unusable data dir simply resolves nothing
            root = None
        comparable["corpus"] = resolve_corpus_paths([str(c) for c in comparable["corpus"]], root)
    if isinstance(data_dir, str):
        comparable["data_dir"] = str(Path(data_dir).expanduser().resolve())
    for method in method_names():
        options = comparable.get(method)
        if isinstance(options, dict) and options:
            seed = options.get("seed", LEGACY_METHOD_SEED)
            comparable[method] = {**options, "seed": values.get("seed") if seed is None else seed}
    return comparable


def run_state(spec: RunSpec, overwrite: bool = False) -> str:
    """``"finished"``, ``"partial"`` (a matching config, no results) or ``"new"``.

    Raises:
        ConfigError: the directory holds a run of another configuration (unless ``overwrite``),
            or files that are not a run.
    """
    path = spec.path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"'{path}' exists and is not a directory; remove it or choose another --output.")
    if not path.is_dir() or not any(path.iterdir()):
        return "new"
    saved_file = path / "config.yaml"
    if not saved_file.is_file():
        # A run killed before it wrote config.yaml leaves at most its marker, lock and start.json.
        if overwrite or {p.name for p in path.iterdir()} <= {START_FILE, MARKER, LOCK}:
            return "new"
        raise ConfigError(
            f"'{path}' holds files but no config.yaml, so it is not a run of this comparison; "
            "remove it, pass --overwrite, or choose another --output."
        )
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        saved = None
    if isinstance(saved, dict):
        # Through the config class, so a key added to hardcse after the run was made compares as
        # its default instead of as a difference.
        try:
            saved = yaml.safe_load(dump_yaml(TrainConfig.from_dict(saved, source=str(saved_file))))
        except ConfigError:
            pass  # unknown keys or bad values: compared as written, so the message names them
    wanted = yaml.safe_load(dump_yaml(spec.config))  # the same YAML round trip as the saved file
    have, want = _comparable(saved if isinstance(saved, dict) else {}), _comparable(wanted)
    if not isinstance(saved, dict) or have != want:
        if overwrite:
            return "new"
        differing = sorted(k for k in set(want) | set(have) if have.get(k) != want.get(k))
        raise ConfigError(
            f"'{path}' holds a run with a different configuration ({', '.join(differing) or 'unreadable config.yaml'} "
            "differ); pass --overwrite to redo it, or choose another --output."
        )
    return "finished" if (path / "results.json").is_file() else "partial"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Running


def _train_timer() -> Any:
    """A trainer callback measuring the training loop itself (dev evaluations included, the
    untrained and final seven-task evaluations not). Built here so importing this module does not
    import transformers."""
    from transformers import TrainerCallback

    class TrainTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begin: float | None = None
            self.seconds: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            if self.begin is not None:
                self.seconds = time.perf_counter() - self.begin

    return TrainTimer()


def is_comparison_dir(path: Path) -> bool:
    """True for a directory ``hardcse compare`` made: its marker; for older ones a ``report.json``
    of a comparison, or nothing but runs, shared start files and hidden files."""
    if run_kind(path) == COMPARE_KIND:
        return True
    report = path / "report.json"
    if report.is_file():
        values = _read_json(report)
        return isinstance(values, dict) and REPORT_KEYS <= set(values)
    for entry in path.iterdir():
        if entry.name.startswith(".") or is_shared_start_file(entry):
            continue
        if entry.is_dir() and (
            run_kind(entry) == "train" or (entry / "config.yaml").is_file() or not any(entry.iterdir())
        ):
            continue  # a run (run_state compares its configuration), or a run that never started
        return False
    return True


def check_comparison_dir(output: str | Path) -> Path:
    """Refuse (one sentence, touching nothing) an ``--output`` whose files the comparison would
    overwrite: a file, or a non-empty directory that is not a comparison (report.md, report.json
    and curves.png of the user's own, the working directory, home, ...)."""
    out = check_directory_option(output, "--output")
    if out.is_dir() and any(out.iterdir()):
        check_replace_target(out, option="--output", what="comparison", own=is_comparison_dir(out))
    return out


def _mark_comparison_dir(out: Path) -> None:
    if not (out / MARKER).is_file():
        atomic_write_json(out / MARKER, {"kind": COMPARE_KIND, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def run_all(
    plan: Sequence[RunSpec],
    output: str | Path,
    overwrite: bool = False,
    show_progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    log: Log | None = None,
) -> dict[str, dict]:
    """Run (or skip, or continue) every run of ``plan``; returns ``{run name: results}``.

    Every run's state is checked before any training starts, so a changed configuration is
    reported at once rather than after hours of training.
    """
    from hardcse.training.run import preflight, train

    say = log or (lambda _msg: None)
    out = check_comparison_dir(output)
    states = {spec.name: run_state(spec, overwrite=overwrite) for spec in plan}
    for spec in plan:  # every run that will train is checked before the comparison creates anything
        if states[spec.name] != "finished":
            preflight(spec.config)
    out.mkdir(parents=True, exist_ok=True)
    _mark_comparison_dir(out)
    results: dict[str, dict] = {}
    width = len(str(len(plan)))
    for number, spec in enumerate(plan, 1):
        prefix = f"[{number:>{width}}/{len(plan)}] {spec.name}:"
        state = states[spec.name]
        if state == "finished":
            results[spec.name] = json.loads((spec.path / "results.json").read_text(encoding="utf-8"))
            say(f"{prefix} finished earlier, skipped ({_score_text(results[spec.name])})")
            continue
        shared = SharedStart(out, spec.config, spec.path)
        start = shared.read()
        checkpoints = spec.path / "checkpoints"
        last = last_complete_checkpoint(checkpoints) if state == "partial" and checkpoints.is_dir() else None
        info: dict[str, Any] = {}
        if last is not None:
            info["resumed_from_step"] = int(Path(last).name.rsplit("-", 1)[-1])
            say(f"{prefix} continuing from step {info['resumed_from_step']}")
        else:
            say(f"{prefix} training" + (" (restarted: no checkpoint)" if state == "partial" else ""))
        timer = _train_timer()
        run_results = train(
            spec.config,
            overwrite=last is None,
            resume=last is not None,
            show_progress=show_progress,
            callbacks=[timer, *(callbacks or [])],
            start=start if last is None else None,
        )
        shared.share_run_start()
        info["train_seconds"] = None if timer.seconds is None else round(timer.seconds, 2)
        atomic_write_json(spec.path / RUN_INFO, info)
        results[spec.name] = run_results
        say(
            f"{prefix} done: {_score_text(run_results)}, best step {run_results['best_step']}, "
            f"{run_results['seconds']:.0f} s"
        )
    return results


def _score_text(results: dict) -> str:
    """``avg 76.52`` and each test pair set's score, for the progress lines."""
    test = results["test"]
    parts = [f"avg {test['avg']:.2f}"] if isinstance(test.get("avg"), float) else []
    parts += [f"{name} {r['spearman']:.2f}" for name, r in (test.get("pairs") or {}).items()]
    return ", ".join(parts) or "no test scores"


def start_cosines(spec: RunSpec) -> dict[str, list[float]] | None:
    """The untrained encoder's per-pair cosines on the run's test pair sets (its ``start.json``)."""
    start = read_start(spec.path) or {}
    return start.get("pair_cosines")


def run_info(spec: RunSpec) -> dict[str, Any]:
    """What the comparison recorded about a run (empty for runs it did not train itself)."""
    return _read_json(spec.path / RUN_INFO) or {}


def ensure_predictions(spec: RunSpec, show_progress: bool = False) -> dict:
    """The run's per-pair test predictions, computed from its exported model when the file is missing.

    Runs trained before ``test_predictions.npz`` existed only have ``model/``; encoding the test
    sets with it gives the same cosines the run's results were computed from.
    """
    from hardcse.evaluation.predictions import load_predictions, save_predictions
    from hardcse.evaluation.sts import evaluate_model
    from hardcse.training.run import PREDICTIONS

    path = spec.path / PREDICTIONS
    if path.is_file():
        return load_predictions(path)
    model_dir = spec.path / "model"
    if not model_dir.is_dir():
        raise ConfigError(f"run '{spec.path}' has results but no model/ to compute its test predictions from.")
    from hardcse.data.paths import resolve_data_dir
    from hardcse.models.loading import load_sentence_model

    model = load_sentence_model(str(model_dir))  # a prompt model's encoder is hardcse's own module
    scored = evaluate_model(
        model,
        tasks=spec.config.test_tasks,
        data_dir=resolve_data_dir(spec.config.data_dir),
        batch_size=spec.config.eval_batch_size,
        show_progress=show_progress,
        return_predictions=True,
    )
    save_predictions(path, scored["predictions"])
    return scored["predictions"]
