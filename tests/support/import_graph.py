"""The import graph of `importer/`, by module and by package (floor).

`tests/test_layout.py` asserts on it (imports only go down, no cycle); run as a script
it prints the graph between packages, for a reader or a closing note:

    python -m tests.support.import_graph

Every import counts, wherever it stands in a file (inside a function, under
TYPE_CHECKING): a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "importer"

#: bottom to top: a package may import from those before it, never from those after it
FLOORS = ["input", "transform", "dynamodb", "modes", "mbc", "run", "aws", "cli"]
#: packages on one floor: neither imports the other
SAME_FLOOR = {frozenset({"modes", "mbc"})}
#: what the modules at the top of `importer/` (records, item_size, the compiled cores'
#: stubs) are called in the package graph: the floor under every package
BASE = "(base)"


def modules() -> dict[str, Path]:
    """Every module of `importer`, by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every importer module `name` imports, wherever in the file (functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def module_graph() -> dict[str, set[str]]:
    """Module -> the importer modules it imports (a package's own __init__ left out)."""
    mods = modules()
    known = set(mods)
    graph = {name: imports(name, path, known) for name, path in mods.items()}
    return {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}


def floor(module: str) -> str | None:
    """The package (floor) a module is in; None for the modules at the top of `importer/`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOORS else None


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports that go up a floor, or sideways between packages on one floor."""
    found = []
    for name, targets in graph.items():
        here = floor(name)
        for target in targets:
            there = floor(target)
            if here is None:
                if there is not None:  # the base imports no package
                    found.append(f"{name} -> {target}")
                continue
            if there is None or there == here:
                continue
            if frozenset({here, there}) in SAME_FLOOR or FLOORS.index(there) > FLOORS.index(here):
                found.append(f"{name} -> {target}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Module import cycles (each found once, from its first module in name order)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, Counter[str]]:
    """Package -> {package it imports: how many module-to-module imports}."""
    out: dict[str, Counter[str]] = {p: Counter() for p in [*FLOORS, BASE]}
    for name, targets in graph.items():
        here = floor(name) or BASE
        for target in targets:
            there = floor(target) or BASE
            if there != here:
                out[here][there] += 1
    return out


def render(graph: dict[str, set[str]]) -> str:
    """The package graph, top floor first, then what the checks found."""
    packages = package_graph(graph)
    lines = ["package -> packages it imports (module imports), top floor first"]
    for package in [*reversed(FLOORS), BASE]:
        edges = packages[package]
        order = [*reversed(FLOORS), BASE]
        targets = ", ".join(f"{t} ({edges[t]})" for t in order if edges[t])
        lines.append(f"  {package:<10} -> {targets or '-'}")
    up, loops = upward(graph), cycles(graph)
    lines.append(f"upward or sideways edges: {len(up)}" + "".join(f"\n  {e}" for e in up))
    lines.append(f"module cycles: {len(loops)}" + "".join(f"\n  {' -> '.join(c)}" for c in loops))
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(module_graph()))
