"""The model card (``DIR/model/README.md``) of a trained model: what it is, how it was made, how it scores.

sentence-transformers writes a generic card when a model is saved; hardcse replaces it once the
run's results are known with one that names the base model, the recipe and every hyperparameter
(the general training settings and each method's full settings), the corpus, the steps and wall
time, the seven-task STS table before and after training, how to load the model, and the BibTeX
of each method used. The YAML front matter follows the Hugging Face hub's model-card metadata
(``library_name``, ``base_model``, ``pipeline_tag``, ``tags``).

Citations (sources: the papers and the official repositories; fields no source gives are
left out and said so in the entry's ``note``):

* SimCSE: Gao, Yao and Chen, EMNLP 2021, arXiv 2104.08821 (authors and title from the official
  README's BibTeX).
* ClusterNS: "Clustering-Aware Negative Sampling for Unsupervised Sentence Representation",
  Deng et al., Findings of ACL 2023, arXiv 2305.09892 (title and venue from the official README);
  the full author list is not in hardcse's sources.
* HSimCSE: "HSimCSE: Improving Contrastive Learning of Unsupervised Sentence Representation with
  Adversarial Hard Positives and Dual Hard Negatives", IJCNN 2023 (title from the paper's
  OpenReview page); the authors are not in hardcse's sources.

The card lives in ``training`` because it reads the resolved training configuration and uses the
evaluation tables (``models`` sits below ``evaluation`` and may not import it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hardcse.evaluation.tables import format_comparison
from hardcse.models.representation import Representation
from hardcse.numeric import is_finite_number

#: General training settings shown in the card, in this order (those present in the config).
TRAINING_KEYS: tuple[str, ...] = (
    "preset",
    "batch_size",
    "lr",
    "steps",
    "epochs",
    "temperature",
    "max_seq_length",
    "pooling",
    "mlp_head",
    "dropout",
    "weight_decay",
    "warmup_steps",
    "max_grad_norm",
    "mini_batch_size",
    "prompt",
    "prompt_template",
    "prompt_template2",
    "prompt_denoise",
    "fp16",
    "bf16",
    "seed",
    "eval_steps",
    "early_stopping",
)


def recipe_methods(recipe: str) -> list[str]:
    """The method names of a recipe: ``"clusterns+hsimcse"`` -> ``["clusterns", "hsimcse"]``."""
    return [part.strip() for part in str(recipe).split("+") if part.strip()]


def method_citations(recipe: str) -> list[tuple[str, str]]:
    """``(method title, BibTeX)`` for every method a recipe uses, from the method registry: SimCSE
    always (every recipe is built on its contrastive frame), then each further method of the recipe
    that has a citation (an outside method may have none)."""
    from hardcse.objectives.registry import get_method

    names = ["simcse", *(m for m in recipe_methods(recipe) if m != "simcse")]
    cited = []
    for name in dict.fromkeys(names):
        try:
            method = get_method(name)
        except Exception:  # noqa: BLE001 - a method no longer registered: nothing to cite
            continue
        if method.citation:
            cited.append((method.title or method.name, method.citation))
    return cited


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _settings_table(settings: Mapping[str, Any]) -> list[str]:
    lines = ["| Setting | Value |", "|:--|--:|"]
    lines += [f"| `{key}` | {_value(value)} |" for key, value in settings.items()]
    return lines


def _plain_usage(model_path: str) -> list[str]:
    return [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{model_path}")',
        'embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])',
        "similarity = model.similarity(embeddings[0:1], embeddings[1:2])",
        "```",
    ]


def _prompt_usage(model_path: str) -> list[str]:
    """Loading a prompt model: its encoder module (template + [MASK] state) is hardcse's, so hardcse
    must be installed; sentence-transformers >= 6 imports a module class from outside its own
    package only with ``trust_remote_code=True`` (hardcse's loader resolves it without)."""
    return [
        'This is a **prompt model**: it wraps each sentence in its template (a final "." is added where the '
        "sentence has no final punctuation) and its vector is the last-layer state of the template's mask token "
        "(PromptBERT). That encoder module ships with hardcse, so **hardcse must be installed** "
        "(`pip install hardcse`) to load the model.",
        "",
        "```python",
        "import hardcse",
        "from hardcse.models.loading import load_sentence_model",
        "",
        f'model = load_sentence_model("{model_path}")  # a SentenceTransformer',
        'embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])',
        "similarity = model.similarity(embeddings[0:1], embeddings[1:2])",
        "```",
        "",
        "Plain sentence-transformers loads it too, with hardcse installed: "
        f'`SentenceTransformer("{model_path}", trust_remote_code=True)` (sentence-transformers 6 imports module '
        "classes from outside its own package only with that flag; the class is `hardcse.models.prompt."
        "PromptTransformer`, nothing is run from the model directory). On the command line: "
        f"`hardcse evaluate {model_path}`.",
    ]


def _duration(seconds: float | None) -> str:
    if not is_finite_number(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def render_model_card(
    config: Mapping[str, Any],
    results: Mapping[str, Any],
    citations: Sequence[tuple[str, str]] | None = None,
    corpus_sentences: int | None = None,
    model_path: str = "path/to/model",
) -> str:
    """The Markdown model card (with YAML front matter) of a trained model.

    Args:
        config: the resolved training configuration as a dict (``TrainConfig.to_dict()``, as in
            ``config.yaml``); a method's settings are the dict under its name (e.g. ``clusterns``).
        results: the run's ``results.json`` dict: ``model``, ``recipe``, ``steps``, ``best_step``,
            ``stsb_dev_best``, ``seconds``, ``history`` and the ``start``/``test`` STS results.
        citations: ``(method, BibTeX)`` pairs; default :func:`method_citations` of the recipe.
        corpus_sentences: the number of training sentences read from the corpus, when known.
        model_path: the path shown in the loading example.
    """
    recipe = str(results.get("recipe") or config.get("recipe", "simcse"))
    methods = recipe_methods(recipe)
    base_model = str(results.get("model") or config.get("model", "unknown"))
    if citations is None:
        citations = method_citations(recipe)
    front = {
        "library_name": "sentence-transformers",
        "base_model": base_model,
        "pipeline_tag": "sentence-similarity",
        "tags": list(dict.fromkeys(["sentence-transformers", "sentence-similarity", "hardcse", *methods])),
    }
    corpus = [Path(str(c)).name for c in config.get("corpus") or []]
    corpus_text = ", ".join(f"`{c}`" for c in corpus) or "unknown"
    if corpus_sentences is not None:
        corpus_text += f" ({corpus_sentences:,} sentences)"
    elif config.get("max_sentences"):
        corpus_text += f" (at most {config['max_sentences']:,} sentences)"
    method_names = " + ".join(name for name, _ in citations) or recipe
    # A prompt model's encoder is hardcse's own module: loading it needs hardcse.
    needs_hardcse = Representation.from_settings(config).needs_hardcse

    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines += [
        f"# {recipe} sentence encoder (hardcse)",
        "",
        f"A [sentence-transformers](https://www.sbert.net) model trained from `{base_model}` without labels by "
        f"contrastive learning ({method_names}) with hardcse, recipe `{recipe}`. It maps "
        "sentences to dense vectors compared by cosine similarity.",
        "",
        "## Usage",
        "",
        *(_prompt_usage(model_path) if needs_hardcse else _plain_usage(model_path)),
        "",
        "## Training",
        "",
        f"- Base model: `{base_model}`",
        f"- Recipe: `{recipe}` ({method_names})",
        f"- Corpus: {corpus_text}",
        f"- Steps: {results.get('steps', 'unknown')}; best checkpoint (STS-B dev) at step "
        f"{results.get('best_step', 'unknown')}"
        + (f", STS-B dev {results['stsb_dev_best']:.2f}" if isinstance(results.get("stsb_dev_best"), float) else ""),
        f"- Wall time (training, checkpoint selection and evaluation): {_duration(results.get('seconds'))}",
        f"- Training history: {len(results.get('history') or [])} logged entries (losses and STS-B dev scores)",
        "",
        "### Hyperparameters",
        "",
        *_settings_table({k: config[k] for k in TRAINING_KEYS if k in config}),
        "",
    ]
    for method in methods:
        settings = config.get(method)
        if isinstance(settings, Mapping) and settings:
            lines += [f"### {method} settings", "", *_settings_table(settings), ""]
            if "seed" in settings and settings["seed"] is None:
                lines += [f"`seed: null` means the method draws with the run seed ({_value(config.get('seed'))}).", ""]
    lines += ["## Evaluation", ""]
    start, test = results.get("start"), results.get("test")
    if isinstance(start, Mapping) and isinstance(test, Mapping) and test.get("tasks"):
        aggregation = test.get("aggregation", "all")
        lines += [
            f"Spearman correlation x 100 of cosine similarities (SentEval protocol: STS12-16 '{aggregation}' "
            "aggregation, STS-B and SICK-R test splits), for the base model and this model:",
            "",
            format_comparison(start, test, labels=("base model", "this model")),
            "",
        ]
    else:
        lines += ["No STS results were recorded for this run.", ""]
    lines += ["## Citation", ""]
    for name, bibtex in citations:
        lines += [f"{name}:", "", "```bibtex", bibtex.strip(), "```", ""]
    return "\n".join(lines)
