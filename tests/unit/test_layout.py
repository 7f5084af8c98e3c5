"""The package's layout rules (README, Layout): no import circle, no oversized file.

Imports are read with ast, function-level ones included: a lazy import still ties two
modules together (the old ``cli`` <-> ``cli_app`` circle was one).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "subsecinspect"
#: The size past which a file is asking to be split (the developers' guide).
MAX_PY_LINES = 400
MAX_C_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))  # fmt: skip
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                # the module itself, or the package whose __init__ it names
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != mod and not mod.startswith(name + "."):
                    graph[mod].add(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_sees_imports() -> None:
    g = _graph()
    assert "subsecinspect.cli.common" in g["subsecinspect.cli.main"]
    assert "subsecinspect.snapshot.model" in g["subsecinspect.classify.decide"]


def test_no_import_circle() -> None:
    assert _cycle(_graph()) is None


def test_a_circle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_past_the_size_limit() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_PY_LINES
    }
    assert not big


def test_no_bpf_source_past_the_size_limit() -> None:
    big = {
        p.name: n
        for p in (ROOT / "bpf").iterdir()
        if p.suffix in (".c", ".h") and (n := len(p.read_text().splitlines())) > MAX_C_LINES
    }
    assert not big
