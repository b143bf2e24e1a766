"""The HTTP layer never speaks the agent's protocol: it uses the typed agent client
(``cove.core.agent_client``) and nothing below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cove.api

API = Path(cove.api.__file__).parent
FORBIDDEN = ("cove.agent.protocol", "cove.core.agent_call", "cove.agent.mux")


def _modules() -> list[Path]:
    return sorted(API.rglob("*.py"))


def _imported(tree: ast.AST) -> set[str]:
    """Every module the code imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _op_dicts(tree: ast.AST) -> list[int]:
    """Lines of dict literals with an ``"op"`` key, and of ``dict(op=...)`` calls."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == "op" for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(k.arg == "op" for k in node.keywords) and (
                isinstance(node.func, ast.Name) and node.func.id == "dict"):
            lines.append(node.lineno)
    return lines


def test_there_are_api_modules_to_check() -> None:
    names = {p.name for p in _modules()}
    assert {"streaming.py", "toolbox_files.py", "toolbox_pty.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(API)))
def test_no_api_module_speaks_the_agent_protocol(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = sorted(n for n in _imported(tree) if n.startswith(FORBIDDEN))
    assert not bad, f"{path} imports the agent's wire protocol: {bad}"
    assert not _op_dicts(tree), f"{path} builds agent messages at lines {_op_dicts(tree)}"


def test_the_checks_catch_what_they_forbid() -> None:
    tree = ast.parse("from cove.agent import protocol\nimport cove.agent.mux\n"
                     "m = {'op': 'exec'}\nn = dict(op='x')\n")
    assert {"cove.agent.protocol", "cove.agent.mux"} <= _imported(tree)
    assert _op_dicts(tree) == [3, 4]
