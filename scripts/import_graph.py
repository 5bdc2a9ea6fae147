"""The import graph of vaezip/ and codec/, read with `ast` (nothing is imported): every module's imports of the
project's own modules, at the top of the file, inside functions (lazy) and under `if TYPE_CHECKING:` (typing),
relative imports resolved. Prints it, its layers (each module above everything it imports) and a topological
order; exits 1 on a cycle, counting lazy and typing imports too, or where a rule is broken:

- codec/ imports nothing from vaezip/, and never torch (it is numpy + constriction only);
- the modules in TORCH_FREE import no torch when they are imported (following top-level imports only): the
  CLI's start, `vaezip --version`, `vaezip info`, the decode of a file that needs no model and `compress
  --fast` need no torch.

    python scripts/import_graph.py            # the graph, its layers, the problems (exit 1 if any)
    python scripts/import_graph.py --dot      # Graphviz (lazy imports dashed, typing ones dotted)

tests/test_import_graph.py runs the same checks."""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vaezip", "codec")
KINDS = ("top", "lazy", "typing")  # where an import runs: on import, when a function is called, never
# Imported without torch: what the CLI loads before it knows whether a model is needed.
TORCH_FREE = ("vaezip.api", "vaezip.cli", "vaezip.errors", "vaezip.files", "vaezip.models", "vaezip.results",
              "vaezip.zoo", "vaezip.classical", "vaezip.archive", "vaezip.unpack", "vaezip.parallel", "vaezip.estimate", "codec")


@dataclass
class Graph:
    modules: dict[str, Path]  # dotted name -> file
    # module -> {imported project module: kind}; the strongest kind wins (top > lazy > typing)
    edges: dict[str, dict[str, str]] = field(default_factory=dict)
    # module -> {top-level name of an outside package (torch, numpy, ...): kind}
    external: dict[str, dict[str, str]] = field(default_factory=dict)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stronger(a: str | None, b: str) -> str:
    return b if a is None or KINDS.index(b) < KINDS.index(a) else a


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """(node, kind) for every import statement in the module."""

    def visit(node: ast.AST, kind: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, "lazy" if kind == "top" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), "typing")
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                yield from visit(child, kind)

    yield from visit(tree, "top")


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that importing `name` runs last: `name` itself, or the longest package above it."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]):
    """The dotted names an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # `from package import submodule` loads the submodule; `from module import name`, the module
    names = [f"{prefix}.{alias.name}" for alias in node.names if f"{prefix}.{alias.name}" in modules]
    if len(names) < len(node.names):
        names.append(prefix)
    return names


def build(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    files = sorted(path for package in packages for path in (root / package).rglob("*.py"))
    graph = Graph({module_name(path, root): path for path in files})
    for module, path in graph.modules.items():
        edges, external = graph.edges.setdefault(module, {}), graph.external.setdefault(module, {})
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, kind in _imports(tree):
            for name in _targets(node, module, path.name == "__init__.py", graph.modules):
                target = _resolve(name, graph.modules)
                if target is not None and target != module:
                    edges[target] = _stronger(edges.get(target), kind)
                elif target is None and name.split(".")[0] not in packages:
                    top = name.split(".")[0]
                    external[top] = _stronger(external.get(top), kind)
    return graph


def cycles(graph: Graph, kinds: tuple[str, ...] = KINDS) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) through each strongly connected group of
    modules, following imports of these kinds."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def follow(module: str) -> list[str]:
        return sorted(target for target, kind in graph.edges[module].items() if kind in kinds)

    def connect(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in follow(module):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph.modules) + 100))
    try:
        for module in sorted(graph.modules):
            if module not in index:
                connect(module)
    finally:
        sys.setrecursionlimit(limit)

    found = []
    for group in groups:  # a shortest way back to the group's first module, by breadth-first search
        members, start = set(group), group[0]
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for module in frontier:
                for target in follow(module):
                    if target in members and target not in previous:
                        previous[target] = module
                        following.append(target)
            frontier = following
        path, module = [start], previous[start]
        while module != start:
            path.append(module)
            module = previous[module]
        found.append([start] + path[:0:-1] + [start])
    return found


def layers(graph: Graph) -> dict[str, int]:
    """Each module's layer: 0 if it imports no project module, else one above the highest it imports (any
    kind). Only meaningful without cycles (a cycle's modules are left out)."""
    result: dict[str, int] = {}
    remaining = dict(graph.edges)
    while remaining:
        ready = [module for module, targets in remaining.items() if all(target in result for target in targets)]
        if not ready:
            break
        for module in ready:
            result[module] = 1 + max((result[target] for target in remaining[module]), default=-1)
            del remaining[module]
    return result


def loads_at_import(graph: Graph, module: str) -> tuple[set[str], set[str]]:
    """(project modules, outside packages) that importing `module` runs, following top-level imports."""
    seen, outside, todo = {module}, set(), [module]
    while todo:
        current = todo.pop()
        outside.update(name for name, kind in graph.external[current].items() if kind == "top")
        for target, kind in graph.edges[current].items():
            if kind == "top" and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen, outside


def problems(graph: Graph) -> list[str]:
    """Everything that breaks the rules in this module's docstring, one line each ([] when all hold)."""
    found = [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    for module in sorted(graph.modules):
        if module.split(".")[0] != "codec":
            continue
        for target in sorted(graph.edges[module]):
            if target.split(".")[0] != "codec":
                found.append(f"{module} imports {target}: codec/ never imports vaezip/")
        if "torch" in graph.external[module]:
            found.append(f"{module} imports torch: codec/ never does")
    for module in TORCH_FREE:
        if module in graph.modules and "torch" in loads_at_import(graph, module)[1]:
            found.append(f"importing {module} imports torch (through its top-level imports)")
    return found


def describe(graph: Graph) -> str:
    lines = []
    for module in sorted(graph.modules):
        by_kind = {kind: sorted(t for t, k in graph.edges[module].items() if k == kind) for kind in KINDS}
        parts = [", ".join(by_kind["top"]) or "-"]
        parts += [f"{kind}: {', '.join(by_kind[kind])}" for kind in ("lazy", "typing") if by_kind[kind]]
        lines.append(f"{module} -> {' | '.join(parts)}")
    levels = layers(graph)
    if levels:
        lines.append("")
        lines.append("layers (each module imports only from layers below it):")
        for level in range(max(levels.values()) + 1):
            lines.append(f"  {level}: {' '.join(sorted(m for m, n in levels.items() if n == level))}")
        lines.append("")
        lines.append("topological order: " + " ".join(sorted(levels, key=lambda m: (levels[m], m))))
    return "\n".join(lines)


def dot(graph: Graph) -> str:
    style = {"top": "solid", "lazy": "dashed", "typing": "dotted"}
    lines = ["digraph imports {", "  rankdir=BT;"]
    for module in sorted(graph.modules):
        for target, kind in sorted(graph.edges[module].items()):
            lines.append(f'  "{module}" -> "{target}" [style={style[kind]}];')
    lines.append("}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    parser.add_argument("--dot", action="store_true", help="print Graphviz instead")
    args = parser.parse_args(argv)
    graph = build(args.root)
    print(dot(graph) if args.dot else describe(graph))
    found = problems(graph)
    for line in found:
        print(line, file=sys.stderr)
    if not args.dot:
        print(f"\n{len(graph.modules)} modules, {sum(map(len, graph.edges.values()))} imports, "
              f"{len(found)} problem{'s' * (len(found) != 1)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
