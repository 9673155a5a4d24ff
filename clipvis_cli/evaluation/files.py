"""Reading JSON inputs with one-line errors, and the atomic zip writer used for evaluation-server uploads."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from clipvis.cli.atomic import atomic_output_path, ensure_output_dir
from clipvis.cli.evaluation.errors import EvaluationInputError


def read_json_file(path: Path, what: str) -> Any:
    """Parse the JSON file `path`; `what` names the input in error messages (e.g. "results file")."""
    path = Path(path)
    if not path.exists():
        raise EvaluationInputError(f"{what} not found: {path}")
    if path.is_dir():
        raise EvaluationInputError(f"{what} is a directory, expected a JSON file: {path}")
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationInputError(
            f"{what} {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from error
    except UnicodeDecodeError as error:
        raise EvaluationInputError(f"{what} {path} is not UTF-8 JSON text ({error.reason})") from error
    except OSError as error:
        raise EvaluationInputError(f"cannot read {what} {path}: {error.strerror or error}") from error


def write_zip_atomic(path: Path, members: dict[str, bytes]) -> Path:
    """Write a deflate-compressed zip holding `members` (archive name -> content) to `path` atomically."""
    path = Path(path)
    ensure_output_dir(path.parent)
    with atomic_output_path(path) as temp_path:
        with zipfile.ZipFile(temp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in members.items():
                archive.writestr(name, content)
    return path
