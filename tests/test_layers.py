"""The import graph of src/: arrows point down the layers of ARCHITECTURE.md, and no module imports
itself back through others (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# what each layer may never import (cli and web sit on top and may import any layer)
BOTTOM = {"errors", "settings", "jsonfile", "containers", "fargate"}  # beside the layers, at the bottom
FORBIDDEN = {
    "errors": {"*"},
    "settings": {"*"},
    "jsonfile": {"*"},
    "containers": {"*"},
    "fargate": {"*"},
    "db": {"files", "dispatch", "deploy", "job", "jobs", "storage", "cli", "web"},
    "storage": {"db", "files", "dispatch", "deploy", "job", "jobs", "cli", "web"},
    "files": {"dispatch", "deploy", "job", "jobs", "cli", "web"},
    "dispatch": {"deploy", "jobs", "cli", "web"},  # the local runner starts the job SDK in its children
    "deploy": {"dispatch", "job", "jobs", "cli", "web"},
    "job": {"dispatch", "deploy", "jobs", "cli", "web"},
    "jobs": {"dispatch", "deploy", "cli", "web"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("locaria_batch")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    return {name: {target for target in imports_of(path) if target in modules and target != name}
            for name, path in modules.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_arrows_point_down_the_layers() -> None:
    wrong = []
    for source, targets in graph().items():
        banned = FORBIDDEN.get(layer(source), set())
        for target in targets:
            below = layer(target) in BOTTOM and (layer(source) not in BOTTOM or layer(target) == "errors")
            if layer(target) != layer(source) and not below and ("*" in banned or layer(target) in banned):
                wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            # a package importing its own submodules (re-exports) is not a cycle of the code
            if target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
