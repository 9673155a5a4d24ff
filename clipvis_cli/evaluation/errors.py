"""Errors raised for bad evaluation inputs (ground-truth or results files)."""

from __future__ import annotations


class EvaluationInputError(ValueError):
    """A ground-truth or results input cannot be scored.

    The message is one line that names the file (and the entry, where there is one) and the problem, so the CLI
    can print it as is.
    """
