"""function_app.py wires triggers only; its names must be the ones botcore uses."""

from __future__ import annotations

import json
from pathlib import Path

import function_app
from botcore import settings
from tests.functions_table import FUNCTIONS, table_of


def test_queue_and_connection_names_match_botcore() -> None:
    assert function_app.JOBS_QUEUE == settings.JOBS_QUEUE
    assert function_app.SENDS_QUEUE == settings.SENDS_QUEUE
    assert function_app.STORAGE == settings.STORAGE_CONNECTION
    host = json.loads((Path(function_app.__file__).parent / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == settings.MAX_DEQUEUE_COUNT


def test_every_function_is_registered_as_the_table_says() -> None:
    functions = [
        (f.get_function_name(), [json.loads(raw) for raw in f.get_raw_bindings()])
        for f in function_app.app.get_functions()
    ]
    assert table_of(functions) == FUNCTIONS


def test_the_app_imports_only_what_requirements_txt_installs() -> None:
    """A module the app imports (also inside functions) must come with requirements.txt: the
    test-only packages (azure-data-tables, pytest ...) are not there in Azure."""
    import ast
    import re
    import sys
    from importlib import metadata
    from pathlib import Path

    repo = Path(function_app.__file__).parent

    from packaging.requirements import Requirement

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = [
        r
        for r in (
            Requirement(line)
            for line in (repo / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        if r.marker is None or r.marker.evaluate()
    ]  # the lines for this Python
    installed: set[str] = set()
    while wanted:  # requirements.txt and everything it brings along, on this Python
        requirement = wanted.pop()
        name = canonical(requirement.name)
        if name in installed:
            continue
        installed.add(name)
        for dependency in map(Requirement, metadata.requires(name) or []):
            extras = [{"extra": e} for e in requirement.extras] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(x) for x in extras):
                wanted.append(dependency)
    providers = {module: {canonical(d) for d in dists} for module, dists in metadata.packages_distributions().items()}
    for dist in metadata.distributions():  # `azure` is a namespace: each of its packages has its own distribution
        for file in dist.files or []:
            if len(file.parts) > 2 and file.parts[0] == "azure":
                providers.setdefault(f"azure.{file.parts[1]}", set()).add(canonical(dist.metadata["Name"]))

    def top(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "azure" and len(parts) > 1 else parts[0]

    def guarded(tree: ast.AST) -> set[ast.AST]:
        """Imports inside a `try` that handles ImportError: the code runs on without them (operator tooling)."""
        handled = ("ImportError", "ModuleNotFoundError")
        return {
            inner
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            and any(isinstance(h.type, ast.Name) and h.type.id in handled for h in node.handlers)
            for statement in node.body
            for inner in ast.walk(statement)
        }

    imported: dict[str, str] = {}
    optional: dict[str, str] = {}
    for path in [repo / "function_app.py", *(repo / "botcore").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        skipped = guarded(tree)
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                (optional if node in skipped else imported).setdefault(top(name), str(path.relative_to(repo)))
    third_party = {
        m: where
        for m, where in imported.items()
        if m.split(".")[0] not in sys.stdlib_module_names and m not in ("botcore", "function_app")
    }
    missing = {m: where for m, where in third_party.items() if not providers.get(m, set()) & installed}
    assert {"azure.functions", "azure.identity", "httpx", "jwt"} <= set(third_party)  # the scan sees the app's imports
    assert not missing, f"imported but not installed by requirements.txt: {missing}"
    # An optional import is operator tooling: requirements-dev.txt names it, requirements.txt does not.
    dev = {
        canonical(Requirement(line).name)
        for line in (repo / "requirements-dev.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r"))
    }
    assert "tqdm" in optional  # the scan sees the CLI's optional import
    for module, where in optional.items():
        assert providers.get(module, set()) & dev and not providers[module] & installed, (module, where)
