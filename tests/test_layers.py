"""Layers: the import graph of petl_bench, methods and datamodules, read from the source with `ast`
(nothing is imported), has no circle, and the foundation imports none of the training stack.

A circle counts every import, those inside functions too: an import moved into a function to dodge
a circle is still a circle. The training-stack check follows what importing a module runs: its
module-level imports, each with the packages above it (`import a.b.c` runs `a/__init__` and
`a/b/__init__`), through every module they reach.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folder -> the name it installs under (pyproject's [tool.setuptools.package-dir]).
PACKAGES = {"petl_bench": "petl_bench", "methods": "petl_bench.methods", "datamodules": "petl_bench.datamodules"}
FOUNDATION = [
    "petl_bench.errors",
    "petl_bench.files",
    "petl_bench.datamodules.catalog",
    "petl_bench.config",
    "petl_bench.results",
    "petl_bench.sweep.grid",
]
TRAINING_STACK = {"torch", "lightning", "open_clip", "torchvision"}


class Graph:
    """Modules by installed name, and each one's imports: (target, line, inside a function)."""

    def __init__(self, root: Path, packages: dict[str, str]):
        self.files = {}
        for folder, package in packages.items():
            for path in sorted((root / folder).rglob("*.py")):
                parts = [part for part in path.relative_to(root / folder).with_suffix("").parts if part != "__init__"]
                self.files[".".join([package, *parts])] = path
        self.imports = {name: list(self._imports(name, path)) for name, path in self.files.items()}

    def _imports(self, name: str, path: Path):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # for type checkers only; never runs
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        yield alias.name, child.lineno, in_function
                elif isinstance(child, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                    module = ".".join([*base, *([child.module] if child.module else [])])
                    yield module, child.lineno, in_function
                    for alias in child.names:  # `from pkg import module`
                        if f"{module}.{alias.name}" in self.files:
                            yield f"{module}.{alias.name}", child.lineno, in_function
                yield from walk(
                    child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                )

        yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)

    def circles(self) -> list[list[tuple[str, int]]]:
        """One circle through each set of modules that import each other: [(module, line of its
        import of the next), ...]."""
        edges = {name: {} for name in self.files}
        for name, found in self.imports.items():
            for target, line, _ in found:
                # A module's own packages are importing already: `from . import x` is no circle.
                if target in self.files and target != name and not name.startswith(f"{target}."):
                    edges[name].setdefault(target, line)
        return [_circle_in(group, edges) for group in _strongly_connected(edges) if len(group) > 1]

    def loads(self, name: str) -> dict[str, list[str]]:
        """Every module importing `name` runs (its own packages first), each with one chain of
        imports that leads to it."""
        parts = name.split(".")
        chains = {name: [name], **{".".join(parts[:i]): [name, ".".join(parts[:i])] for i in range(1, len(parts))}}
        todo = list(chains)
        while todo:
            current = todo.pop()
            for target, _, in_function in self.imports[current]:
                if in_function:
                    continue
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    module = ".".join(parts[:i])
                    if module not in chains and (module in self.files or i == 1):
                        chains[module] = [*chains[current], module]
                        if module in self.files:
                            todo.append(module)
        return chains


def _strongly_connected(edges: dict[str, dict]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(edges[target])))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return groups


def _circle_in(group: list[str], edges: dict[str, dict]) -> list[tuple[str, int]]:
    """A shortest circle from the group's first module back to it, inside the group."""
    start, members = group[0], set(group)
    paths, frontier = {start: []}, [start]
    while frontier:
        following = []
        for node in frontier:
            for target, line in edges[node].items():
                if target == start:
                    return [*paths[node], (node, line)]
                if target in members and target not in paths:
                    paths[target] = [*paths[node], (node, line)]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in {group}")


def _spelled(circle: list[tuple[str, int]]) -> str:
    return " -> ".join(f"{module} (line {line})" for module, line in circle) + f" -> {circle[0][0]}"


def test_no_module_imports_itself_through_others():
    circles = Graph(REPO, PACKAGES).circles()
    assert not circles, "import circles:\n" + "\n".join(map(_spelled, circles))


def test_foundation_modules_import_no_training_stack():
    graph = Graph(REPO, PACKAGES)
    heavy = []
    for name in FOUNDATION:
        chains = graph.loads(name)
        heavy += [" -> ".join(chain) for module, chain in chains.items() if module in TRAINING_STACK]
    assert not heavy, "the foundation loads the training stack:\n" + "\n".join(heavy)


def test_the_checks_see_circles_inside_functions_packages_and_heavy_imports(tmp_path):
    """The graph above on a made-up tree: a circle closed inside a function, a package whose
    `__init__` loads torch, a `from . import` that is no circle, and TYPE_CHECKING imports."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from . import a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\nfrom .sub.leaf import x\n",
        "pkg/sub/__init__.py": "import lightning\n",
        "pkg/sub/leaf.py": "from .. import b\nx = 1\n",
        "plug/__init__.py": "from . import one\n",
        "plug/one.py": "from pkg import c\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = Graph(tmp_path, {"pkg": "pkg", "plug": "pkg.plug"})
    assert sorted(graph.files) == [
        "pkg",
        "pkg.a",
        "pkg.b",
        "pkg.c",
        "pkg.plug",
        "pkg.plug.one",
        "pkg.sub",
        "pkg.sub.leaf",
    ]
    assert [_spelled(circle) for circle in graph.circles()] == ["pkg.a (line 1) -> pkg.b (line 2) -> pkg.a"]
    loads = graph.loads("pkg.c")
    assert loads["lightning"] == ["pkg.c", "pkg.sub", "lightning"]  # the package above the module imported
    assert "torch" not in loads and "pkg.a" not in loads  # TYPE_CHECKING; pkg.b imports pkg.a in a function
    assert "pkg.b" in loads and graph.loads("pkg.plug.one")["pkg.c"] == ["pkg.plug.one", "pkg.c"]
    assert graph.loads("pkg.sub.leaf")["lightning"] == ["pkg.sub.leaf", "pkg.sub", "lightning"]  # its own package
