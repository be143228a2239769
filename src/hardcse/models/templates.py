"""Prompt templates (PromptBERT; the prompt variant of ClusterNS): the official ones, their check,
and the official evaluation's final-period rule. Kept free of heavy imports, so configurations and
presets can name and check templates before anything loads (:mod:`hardcse.models.prompt` is the
encoder that uses them).

A template is text with ``{sentence}`` and ``{mask}`` (the tokenizer's mask token) once each. The
official ``*cls*_This_sentence_:_'_*sent_0*_'_means*mask*.*sep+*`` of ``run_prompt.sh`` is written
``This sentence : ' {sentence} ' means{mask}.`` (``_`` is a space; ``*cls*``/``*sep+*`` are the
special tokens the tokenizer adds).
"""

from __future__ import annotations

from hardcse.errors import ConfigError

#: The official prompt templates (``run_prompt.sh``, RoBERTa-style, used by its BERT run too).
PROMPT_TEMPLATE = "This sentence : ' {sentence} ' means{mask}."
PROMPT_TEMPLATE2 = "The sentence : ' {sentence} ' means{mask}."
#: PromptBERT's BERT templates (the first, overwritten assignment in ``run_prompt.sh``).
BERT_TEMPLATE = 'This sentence of "{sentence}" means{mask}.'
BERT_TEMPLATE2 = 'This sentence : "{sentence}" means{mask}.'

#: The pooling name of the prompt representation (the template's ``[MASK]`` state) in result files and cards.
PROMPT_POOLING_NAME = "prompt-mask"

#: A sentence ending in none of these gets a "." at evaluation (``evaluation_prompt.py``).
FINAL_PUNCTUATION = ".?\"'"


def split_template(template: str, where: str = "prompt_template") -> tuple[str, str]:
    """``(prefix, suffix)``: the text before and after ``{sentence}``, with ``{mask}`` still in it.

    Raises :class:`ConfigError` (one sentence) unless ``{sentence}`` and ``{mask}`` each occur once.
    """
    if not isinstance(template, str):
        raise ConfigError(f"{where} must be text with {{sentence}} and {{mask}}, got {template!r}.")
    for key in ("{sentence}", "{mask}"):
        count = template.count(key)
        if count != 1:
            what = "has no" if count == 0 else f"has {count} of"
            raise ConfigError(
                f"{where} '{template}' {what} {key}; a prompt template holds {{sentence}} and {{mask}} once each, "
                f'e.g. "{PROMPT_TEMPLATE}".'
            )
    prefix, suffix = template.split("{sentence}")
    return prefix, suffix


def check_templates(template: str | None, template2: str | None) -> None:
    """Check both templates (``None``: the default), for :meth:`TrainConfig.validate`."""
    split_template(template or PROMPT_TEMPLATE, "prompt_template")
    split_template(template2 or PROMPT_TEMPLATE2, "prompt_template2")


def add_final_period(sentence: str) -> str:
    """The official evaluation's rule: append "." unless the sentence ends in ``. ? " '``."""
    if sentence and sentence[-1] not in FINAL_PUNCTUATION:
        return sentence + "."
    return sentence
