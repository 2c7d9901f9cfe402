"""The import graph, read from the source: the engine (`service/` outside `service/app/`) never imports `eval/` or
the interfaces, `eval/` never imports the interfaces, and no module imports back into one that imports it (imports
under `if TYPE_CHECKING:` aside)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "eval", "corpora")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Project modules `path` imports anywhere (function-local imports included), except type-only ones."""
    found = set()

    def visit(node, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = type_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import) and not guarded:
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not guarded:
                base = child.module or ""
                if child.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names)
            visit(child, guarded)

    visit(ast.parse(path.read_text()), False)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {_module(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: _imports(path, name, set(paths)) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert _cycles(import_graph()) == []


def test_the_engine_never_imports_eval_or_the_interfaces():
    graph = import_graph()
    engine = [m for m in graph if m.startswith("service") and not m.startswith("service.app")]
    assert len(engine) > 10
    wrong = {m: sorted(t for t in graph[m] if t.startswith(("eval", "service.app"))) for m in engine}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_eval_never_imports_the_interfaces():
    graph = import_graph()
    wrong = {m: sorted(t for t in ts if t.startswith("service.app")) for m, ts in graph.items() if m.startswith("eval")}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_checker_sees_a_circle_and_ignores_type_only_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from eval import spec\n\n\ndef f():\n    from eval import store\n"
    path = ROOT / "tests" / "_layout_probe.py"
    path.write_text(source)
    try:
        assert _imports(path, "tests._layout_probe", {"eval.spec", "eval.store", "eval"}) == {"eval.store"}
    finally:
        path.unlink()
