"""The model and weights packages import in one direction: no module imports, at any level (function-level imports
included), a module that imports it back; `checkpoint.py` is state-dict I/O that builds no model."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"clipvis.model": ROOT / "model", "clipvis.weights": ROOT / "weights"}


def _module_name(package: str, path: Path) -> str:
    return package if path.name == "__init__.py" else f"{package}.{path.stem}"


def _import_graph() -> dict[str, set[str]]:
    modules = {
        _module_name(package, path): path for package, folder in PACKAGES.items() for path in folder.glob("*.py")
    }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):  # every import, at module level or inside functions
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle_in_model_and_weights() -> None:
    assert _cycles(_import_graph()) == []


def test_checkpoint_module_is_pure_state_dict_io() -> None:
    graph = _import_graph()
    # model.errors: exception classes only (the standard library's dataclasses and Mapping)
    assert graph["clipvis.model.errors"] == set()
    # weights.cache_files: the mode open() gives a new file (the standard library only)
    assert graph["clipvis.model.checkpoint"] <= {"clipvis.model.config", "clipvis.model.errors",
                                                 "clipvis.weights.cache_files"}
    assert graph["clipvis.weights.cache_files"] == set()
    assert not any(target.startswith("clipvis.model") for target in graph["clipvis.weights.resolve"])


def test_the_shared_path_words_import_nothing_of_clipvis() -> None:
    """`clipvis.paths` (what a path that names nothing is) serves the CLI, the weights and the model alike."""
    imported = [alias.name if isinstance(node, ast.Import) else node.module
                for node in ast.walk(ast.parse((ROOT / "clipvis" / "paths.py").read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
    assert imported and not any(name and name.startswith("clipvis") for name in imported)


def test_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_rules_of_class_names_import_without_torch() -> None:
    """The CLI reads --vocab and --vocab-file with `clipvis.model.vocabulary` before it loads the model (and `--help`
    imports no torch): the module and the package's __init__ load no torch."""
    import subprocess
    import sys

    code = "import sys, clipvis.model.vocabulary; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.split() == ["False"], done.stderr[-2000:]
