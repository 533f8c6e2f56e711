"""The package's shape: imports run one way, down the layers, and never in a circle.

cli and bot -> actions -> bounces, check -> mail -> outbound -> dns -> state -> club; postfix/ (the
lines Postfix in front needs) sits on club alone.  A newcomer finds
where a post is decided (mail/rules.py), decorated (mail/decorate.py) and delivered
(outbound/worker.py) from the folder names alone; these tests keep it so.  Imports inside
functions count too (they are how ``--help`` stays fast, not a way around the layers);
imports under ``if TYPE_CHECKING:`` do not, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clublist"

# What each part may import from clublist (besides itself and errors).
LAYERS = {
    "club": set(),
    "state": {"club"},
    "dns": {"club"},
    "outbound": {"club", "state", "dns"},
    "mail": {"club", "state", "dns", "outbound"},
    "bounces": {"club", "state", "dns", "mail", "outbound"},
    "postfix": {"club"},
    "check": {"club", "state", "dns", "mail", "outbound", "postfix"},
    "actions": {"club", "state", "dns", "mail", "outbound", "bounces", "check", "postfix"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str) -> set[str]:
    """The clublist modules *module* imports (``from clublist.x import y`` names y when y is a module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("clublist"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clublist"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {_module_name(p): _imports(ast.parse(p.read_text()), _module_name(p)) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_module_imports_itself_in_a_circle() -> None:
    """Depth-first search for a back edge; the cycle found is named in full."""
    visiting: list[str] = []
    done: set[str] = set()

    def walk(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target in GRAPH:
                walk(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        walk(module)


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_a_part_imports_only_the_parts_below_it(part: str) -> None:
    allowed = LAYERS[part] | {part, "errors", ""}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _part(module) == part
        for target in targets
        if _part(target) not in allowed
    )
    assert wrong == []


def test_the_layout_check_sees_a_cycle(tmp_path: Path) -> None:
    """The walk above can fail: two modules importing each other are found."""
    source = "from clublist.club import store\n"
    assert _imports(ast.parse(source), "clublist.club.model") == {"clublist.club.store"}
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clublist.mail import handler\n"
    assert _imports(ast.parse(guarded), "clublist.bounces.processor") == set()
