"""The package layout is a rule, not a habit: imports only go down, and the README says where.

A newcomer finds a rule by the package named after what it does; that only holds while no
module reaches up a floor (a transform that imports the run would make the floors a tangle)
and while the README's layout table names what is really there.
"""

from __future__ import annotations

import re

from tests.support.import_graph import (
    FLOORS,
    PACKAGE,
    ROOT,
    cycles,
    module_graph,
    upward,
)


def test_every_package_is_on_a_floor():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(FLOORS)


def test_imports_only_go_down():
    assert upward(module_graph()) == []


def test_no_module_import_cycle():
    assert cycles(module_graph()) == []


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
