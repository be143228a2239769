"""Kept for imports written before ``helpers`` existed; new code imports from :mod:`helpers`."""

from helpers import WORDS, make_tiny_bert, make_tiny_training_model

__all__ = ["WORDS", "make_tiny_bert", "make_tiny_training_model"]
