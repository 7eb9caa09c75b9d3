"""The layer contract and the size limits, checked on the source: ``envs`` <- ``agents`` <- ``runners`` (<- ``benchmarks``).

Every import statement counts, function-level ones included (``ast.walk``), so an upward import cannot hide
inside a function. Project imports inside functions are not allowed at all (they only ever dodged a cycle);
optional third-party dependencies may still be imported where they are used.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("envs", "agents", "runners", "benchmarks")  # each may import only those before it
ENTRY_POINTS = {"train", "evaluate", "compare", "sft", "train_reward", "rlhf", "verifiable"}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[ast.AST, list[str]]]:
    """Every import statement with the dotted names it may bind (``from a import b`` -> ``a``, ``a.b``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.append((node, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node, [node.module] + [f"{node.module}.{a.name}" for a in node.names]))
    return out


def _inside_functions(tree: ast.AST) -> set[ast.AST]:
    return {n for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}


def _violations(package: str) -> list[str]:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    bad = []
    for path in _modules(package):
        tree = ast.parse(path.read_text())
        rel, nested = path.relative_to(ROOT), _inside_functions(tree)
        for node, names in _imports(tree):
            tops = {n.split(".")[0] for n in names}
            if tops & set(LAYERS) - allowed:
                bad.append(f"{rel}:{node.lineno} imports {names[0]} (a higher layer)")
            if rel.parts[:2] == ("runners", "common") and any(
                    n.split(".")[:1] == ["runners"] and n.count(".") == 1 and n.split(".")[1] in ENTRY_POINTS
                    for n in names):
                bad.append(f"{rel}:{node.lineno} imports an entry point ({', '.join(names)})")
            if node in nested and tops & set(LAYERS):
                bad.append(f"{rel}:{node.lineno} imports the project inside a function")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_layers_point_one_way(package):
    assert _violations(package) == []


def test_the_contract_check_sees_upward_and_function_level_imports(tmp_path, monkeypatch):
    """Planted: agents importing runners inside a function is reported twice (upward, inside a function)."""
    fake = tmp_path / "agents"
    fake.mkdir()
    (fake / "m.py").write_text("def f():\n    from runners.common import cli\n    return cli\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert len(_violations("agents")) == 2


@pytest.mark.parametrize("package", ["envs", "agents", "runners"])
def test_files_and_functions_stay_small(package):
    long = []
    for path in _modules(package):
        src = path.read_text()
        rel = path.relative_to(ROOT)
        if len(src.splitlines()) > MAX_FILE_LINES:
            long.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert long == []
