"""The exported model's card: every required item rendered from a config and a results dict."""

from __future__ import annotations

import re

import pytest
import yaml

import hardcse
from hardcse.data.sts import DISPLAY_NAMES, TASKS
from hardcse.objectives.registry import get_method
from hardcse.training.card import method_citations, recipe_methods, render_model_card


def _result(offset: float) -> dict:
    tasks = {t: {"spearman": 50.0 + i + offset, "pairs": 10, "subsets": {}} for i, t in enumerate(TASKS)}
    avg = sum(round(v["spearman"], 2) for v in tasks.values()) / len(tasks)
    return {"model": "m", "pooling": "cls", "aggregation": "all", "split": "test", "tasks": tasks, "avg": avg}


def _config(recipe: str) -> dict:
    """A resolved config dict as ``config.yaml`` holds it, with the settings of each method of ``recipe``."""
    values = hardcse.make_config(recipe="simcse", seed=7, lr=4e-5, batch_size=48, steps=321).to_dict()
    for method in recipe_methods(recipe):
        if method != "simcse":
            values[method] = hardcse.make_config(recipe=method).to_dict()[method]
    values.update(recipe=recipe, model="bert-base-uncased", corpus=["/data/corpus/wiki1m_for_simcse.txt"])
    return values


def _results(recipe: str) -> dict:
    start, test = _result(0.0), _result(10.004)
    start["stsb_dev"] = 60.0
    return {
        "recipe": recipe,
        "model": "bert-base-uncased",
        "preset": "cpu",
        "seed": 7,
        "steps": 321,
        "best_step": 300,
        "stsb_dev_best": 81.234,
        "start": start,
        "test": test,
        "history": [{"step": i, "loss": 1.0} for i in range(1, 322)],
        "seconds": 754.2,
    }


def _front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "the card starts with YAML front matter"
    return yaml.safe_load(match.group(1))


def test_card_names_every_required_item():
    recipe = "clusterns+hsimcse"
    config, results = _config(recipe), _results(recipe)
    card = render_model_card(config, results, corpus_sentences=1_000_000, model_path="runs/x/model")

    meta = _front_matter(card)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["base_model"] == "bert-base-uncased"
    assert meta["tags"] == ["sentence-transformers", "sentence-similarity", "hardcse", "clusterns", "hsimcse"]

    body = card.split("\n---\n", 1)[1]
    assert "`bert-base-uncased`" in body and f"`{recipe}`" in body
    # The general hyperparameters, with their values.
    for key, value in [
        ("batch_size", "48"),
        ("lr", "4e-05"),
        ("steps", "321"),
        ("temperature", "0.05"),
        ("max_seq_length", "32"),
        ("pooling", "cls"),
        ("seed", "7"),
    ]:
        assert f"| `{key}` | {value} |" in body, key
    # Every setting of each method of the recipe.
    for method in ("clusterns", "hsimcse"):
        assert f"### {method} settings" in body
        for key in config[method]:
            assert f"| `{key}` |" in body.split(f"### {method} settings", 1)[1], (method, key)
    assert "| `k` | 32 |" in body and "| `bml_beta` | 0.3 |" in body  # ClusterNS' cpu settings
    assert "`wiki1m_for_simcse.txt` (1,000,000 sentences)" in body
    assert "Steps: 321" in body and "step 300" in body and "81.23" in body
    assert "754 s (12.6 min)" in body and "321 logged entries" in body
    assert 'SentenceTransformer("runs/x/model")' in body

    # The seven-task table, base model and trained model, with the delta.
    header = next(line for line in body.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", *(DISPLAY_NAMES[t] for t in TASKS), "Avg"]
    assert re.search(r"\| base model +\| +50\.00 \|", body)
    assert re.search(r"\| this model +\| +60\.00 \|", body)
    assert re.search(r"\| delta +\| +\+10\.00 \|", body)

    # BibTeX of SimCSE and of each method used, each entry with balanced braces.
    blocks = re.findall(r"```bibtex\n(.*?)\n```", body, re.S)
    keys = [re.match(r"@\w+\{(\w+),", b).group(1) for b in blocks]
    assert keys == ["gao2021simcse", "deng2023clusterns", "hsimcse2023"]
    for block in blocks:
        assert block.count("{") == block.count("}")


def test_hsimcse_entry_invents_no_authors():
    # The paper's front matter and the official code give HSimCSE's title and venue, not its authors.
    entry = get_method("hsimcse").citation
    assert "author" not in entry and "IJCNN" in entry and "Authors not recorded" in entry
    assert "Deng and others" in get_method("clusterns").citation  # only the first author's surname is sourced


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("simcse", ["SimCSE"]),
        ("clusterns", ["SimCSE", "ClusterNS"]),
        ("hsimcse", ["SimCSE", "HSimCSE"]),
        ("hsimcse+clusterns", ["SimCSE", "HSimCSE", "ClusterNS"]),
    ],
)
def test_citations_follow_the_recipe(recipe, expected):
    assert [name for name, _ in method_citations(recipe)] == expected


def test_simcse_card_has_no_method_sections_and_only_simcse():
    card = render_model_card(_config("simcse"), _results("simcse"))
    assert "settings" not in card.replace("### Hyperparameters", "")
    assert card.count("```bibtex") == 1 and "gao2021simcse" in card
    assert _front_matter(card)["tags"][-1] == "simcse"


def test_card_without_results_says_so():
    results = {k: v for k, v in _results("simcse").items() if k not in ("start", "test")}
    card = render_model_card(_config("simcse"), results)
    assert "No STS results were recorded" in card


def test_card_metadata_reads_with_the_hub_client():
    # The hub's own parser reads the front matter (what the model page shows).
    from huggingface_hub import ModelCard

    data = ModelCard(render_model_card(_config("clusterns"), _results("clusterns"))).data.to_dict()
    assert data["library_name"] == "sentence-transformers" and "clusterns" in data["tags"]
