"""Ending a command with one line: `clipvis: error: ...` on stderr and the exit code (docs/architecture.md)."""

from __future__ import annotations

import typer

from clipvis.cli.messages import print_error


def fail(message: str | BaseException, code: int = 1) -> typer.Exit:
    """Print `clipvis: error: message` on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)
