"""The layers of botcore, as a contract the import graph must keep (every import counts: module level,
inside functions, and under TYPE_CHECKING).

    edges      app, api, endpoint, worker, cli, responses: build the parts, map errors, serve triggers
    delivery/  jobs' fan-out, sends, revisions, reminders, pacing: may use state/ and protocol/
    state/     conversations, turns, dialogs, the service-URL record: may use protocol/
    protocol/  the Bot Framework protocol: activities, auth, the Connector, tokens, the trust rule
    base       errors, settings, keys, jobs, storage and small helpers: used by all, using none of the above

A function-level import is kept only where a cold start needs it (a module a first invocation may not
need), and says why on its own line or the one above. Below the edges nothing names the app's `Bot`
(importing botcore.app is an edge's privilege): each layer takes the context it works with.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "botcore"
EDGES = (
    "botcore.app",
    "botcore.api",
    "botcore.endpoint",
    "botcore.worker",
    "botcore.cli",
    "botcore.__main__",
    "botcore.responses",
)
LAYERS = {"botcore.protocol": 1, "botcore.state": 2, "botcore.delivery": 3}
FORBIDDEN = {
    "botcore.protocol": ("botcore.state", "botcore.delivery", "botcore.storage", *EDGES),
    "botcore.state": ("botcore.delivery", *EDGES),
    "botcore.delivery": EDGES,
}
BASE_FORBIDDEN = ("botcore.protocol", "botcore.state", "botcore.delivery", *EDGES)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, statement, inside a function) for every import of the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    found: list[tuple[str, ast.stmt, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append((target, child, in_function))
                found.extend((f"{target}.{alias.name}", child, in_function) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _layer_of(module: str) -> str | None:
    if module in EDGES:
        return "edge"
    return next((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), None)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_its_layer_may(path: Path) -> None:
    module = _module(path)
    layer = _layer_of(module)
    forbidden = () if layer == "edge" else FORBIDDEN.get(layer or "", BASE_FORBIDDEN)
    wrong = sorted(
        {
            f"{target} (line {stmt.lineno})"
            for target, stmt, _ in _imports(path)
            if target.startswith("botcore")
            and _is_module(target)
            and any(target == f or target.startswith(f + ".") for f in forbidden)
        }
    )
    assert not wrong, f"{module} ({layer or 'base'}) imports {', '.join(wrong)}"


def _says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    above = lineno - 2
    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_function_level_imports_say_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    silent = sorted(
        {stmt.lineno for _, stmt, in_function in _imports(path) if in_function and not _says_why(lines, stmt.lineno)}
    )
    assert not silent, f"{path.relative_to(ROOT)}: function-level imports without a reason on lines {silent}"
