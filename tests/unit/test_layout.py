"""The layout of agent/: imports run one way only (cli → worker → pipeline → supervise → api,
config), no modules import each other in a circle (lazy imports inside functions included), no
module is over 400 lines and no function over 60."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Package → rank: a module may import from a package of lower rank (or its own), never higher
# or equal. Root modules (agent/__init__.py, agent/errors.py) are the floor every layer stands on.
RANKS = {
    "__main__": 7,
    "cli": 6,
    "slurm": 5,
    "worker": 4,
    "pipeline": 3,
    "server": 3,
    "supervise": 2,
    "api": 1,
    "config": 1,
    "": 0,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """``agent.worker.daemon`` → ``worker``; root modules (``agent``, ``agent.errors``) → ``""``."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if (AGENT / parts[1]).is_dir() or parts[1] == "__main__":
        return parts[1]
    return ""


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(AGENT.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported agent module, line) for every import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "agent":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "agent":
                continue
            for alias in node.names:  # ``from agent.server import claims``: the submodule
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in known else node.module), node.lineno


def edges() -> list[tuple[str, str, int]]:
    modules = all_modules()
    known = set(modules)
    return [
        (source, target, line)
        for source, path in modules.items()
        for target, line in imports_of(path, known)
        if target != source
    ]


def test_every_package_has_a_rank() -> None:
    packages = {package_of(m) for m in all_modules()}
    unranked = sorted(packages - set(RANKS))
    assert not unranked, f"add these packages to RANKS (their place in the layers): {unranked}"


def test_imports_only_go_down() -> None:
    upward = [
        f"{source}:{line} imports {target}"
        for source, target, line in edges()
        if package_of(source) != package_of(target)
        and RANKS.get(package_of(source), 0) <= RANKS.get(package_of(target), 0)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a list of nodes (first == last), or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_module_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in all_modules()}
    for source, target, _ in edges():
        graph[source].add(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "cyclic"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(graph) is not None) is cyclic


def test_no_oversized_module_or_function() -> None:
    oversized: list[str] = []
    for path in sorted(AGENT.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            oversized.append(f"{path.relative_to(AGENT.parent)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    oversized.append(f"{path.relative_to(AGENT.parent)}: {node.name}() {length}")
    assert not oversized, "split these along their seams:\n" + "\n".join(oversized)
