"""The package's import graph, read from the source with `ast` (lazy imports inside functions included):
no import cycle between modules, no loop between packages, no loose top-level modules, and one torn-tail
repair (one resume mechanism)."""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent / "blade_plugin"
PACKAGE = "blade_plugin"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_graph() -> dict[str, set[str]]:
    """{module: modules of blade_plugin it imports}. `from pkg import name` counts as importing pkg.name when
    that is a module, else pkg."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name and t != PACKAGE}
    return graph


def _package(module: str) -> str:
    """The sub-package a module belongs to (blade_plugin.llm.client -> llm); top-level modules are their own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_reader_sees_lazy_imports():
    """The parser must see imports inside functions (the test is worthless otherwise)."""
    graph = _import_graph()
    assert "blade_plugin.bpo.run" in graph["blade_plugin.commands.optimize"]  # imported inside optimize()


def test_no_import_cycle_between_modules():
    # Lazy imports inside functions count: a cycle through one still ties the two modules together.
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_loop_between_packages():
    """No cycle of any length in the package graph (qa -> llm -> testing -> qa is a loop as much as a pair is)."""
    graph = _import_graph()
    packages: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], tuple[str, str]] = {}
    for src, targets in graph.items():
        for dst in targets:
            a, b = _package(src), _package(dst)
            if a != b:
                packages.setdefault(a, set()).add(b)
                witness.setdefault((a, b), (src, dst))
    # cli.py is the entry point: it imports the commands, and they import nothing back from it.
    cycle = _find_cycle(packages)
    assert cycle is None, "package loop: " + "; ".join(
        f"{a} -> {b} ({' -> '.join(witness[(a, b)])})" for a, b in zip(cycle, cycle[1:]))


def test_the_package_loop_finder_sees_long_loops():
    assert _find_cycle({"qa": {"llm"}, "llm": {"testing"}, "testing": {"qa"}}) == ["llm", "testing", "qa", "llm"]
    assert _find_cycle({"qa": {"llm"}, "llm": {"extras"}}) is None


def test_no_loose_top_level_modules():
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "cli.py"))
    assert loose == [], f"modules at the top of blade_plugin/ belong in a sub-package: {loose}"


def test_one_torn_tail_repair():
    """One resume mechanism: exactly one function in the package cuts a torn last line."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "torn" in node.name:
                found.append(f"{name}.{node.name}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "truncate"):
                found.append(f"{name}: .truncate() call at line {node.lineno}")
    assert len([f for f in found if "truncate() call" in f]) == 1, found
    assert len([f for f in found if "truncate() call" not in f]) == 1, found


def test_code_only_tests_use_is_not_shipped():
    """The loopback test servers live in tests/blade_testing, outside the package; nothing shipped imports them."""
    assert not (ROOT / "testing").exists()
    shipped = [name for name, path in _modules().items() if "blade_testing" in path.read_text(encoding="utf-8")
               and "import" in path.read_text(encoding="utf-8").split("blade_testing")[0][-80:]]
    assert shipped == []
