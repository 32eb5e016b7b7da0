"""The house rules (docs/design.md, "Layout"), checked on the source so that they stay true:

- imports run service -> retro -> index and never back;
- no import cycle among the project's modules, counting imports inside functions;
- no module of index/, retro/ or service/ is over 600 lines;
- the command-line library (typer) is imported only inside the command wing, service/cli/, and no
  module outside the wing imports a command module.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("index", "retro", "service")
LAYER = {"index": 0, "retro": 1, "service": 2}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    result = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                result.add(name)
    return result


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph, or None; a package's __init__ importing its own submodule is not one."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def test_imports_follow_the_dependency_direction():
    for module, imported in graph().items():
        for other in imported:
            upper, lower = module.split(".")[0], other.split(".")[0]
            assert LAYER[lower] <= LAYER[upper], f"{module} imports {other}: against service->retro->index"


def test_no_import_cycles_even_through_late_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail
    assert find_cycle({"p": {"p.x"}, "p.x": set()}) is None
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_is_over_600_lines():
    for name, path in modules().items():
        n = len(path.read_text().splitlines())
        assert n <= 600, f"{name} has {n} lines"


def test_the_command_line_lives_in_its_wing():
    for name, path in modules().items():
        in_wing = name == "service.cli" or name.startswith("service.cli.")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if not in_wing:
                    assert not any(n == "typer" or n.startswith("typer.") for n in names), (
                        f"{name} imports typer"
                    )
                    assert not any(n.startswith("service.cli") for n in names), (
                        f"{name} imports the command wing"
                    )
