"""The package layout is a rule, not a habit: imports only go down, and the README says where.

A newcomer finds a rule by the package named after what it does; that only holds while no
module reaches up a floor (a transform that imports the run would make the floors a tangle)
and while the README's layout table names what is really there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "importer"

#: bottom to top: a package may import from those before it, never from those after it
FLOORS = ["input", "transform", "dynamodb", "modes", "mbc", "run", "aws", "cli"]
#: packages on one floor: neither imports the other
SAME_FLOOR = {frozenset({"modes", "mbc"})}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
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


def _floor(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOORS else None


def test_every_package_is_on_a_floor():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(FLOORS)


def test_imports_only_go_down():
    modules = _modules()
    known = set(modules)
    upward = []
    for name, path in modules.items():
        here = _floor(name)
        for target in _imports(name, path, known):
            there = _floor(target)
            if here is None:
                # the top-level modules (records, __init__) are the floor under every package
                if there is not None:
                    upward.append(f"{name} -> {target}")
                continue
            if there is None or there == here:
                continue
            if frozenset({here, there}) in SAME_FLOOR or FLOORS.index(there) > FLOORS.index(here):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_module_import_cycle():
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # a package's __init__ is imported by every module under it: not an edge of interest
    graph = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Layout")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_layout_names_every_module_and_only_real_ones():
    listed: set[str] = set()
    for line in _layout_section().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        folder = ""
        for token in re.findall(r"`([^`]+)`", cell):
            if token.endswith(".pyx"):
                assert (ROOT / token).exists(), token
                continue
            if not token.endswith(".py"):
                continue
            if "/" in token:
                folder = token.rpartition("/")[0] + "/"
                listed.add(token)
            else:
                listed.add(folder + token)
    real = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(real - listed) == [], "modules the README's layout table does not name"
    assert sorted(listed - real) == [], "the README's layout table names modules that are gone"
