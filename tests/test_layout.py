"""The import graph, read from the source: the engine (`service/` outside `service/app/`) never imports `eval/` or
the interfaces, `eval/` never imports the interfaces, and no module imports back into one that imports it (imports
under `if TYPE_CHECKING:` aside)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "eval", "corpora")


def _module(path: Path) -> str:
    """The installed name of a source file: service/arms.py is ragft.service.arms."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(["ragft", *(parts[:-1] if parts[-1] == "__init__" else parts)])


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
    engine = [m for m in graph if m.startswith("ragft.service") and not m.startswith("ragft.service.app")]
    assert len(engine) > 10
    wrong = {m: sorted(t for t in graph[m] if t.startswith(("ragft.eval", "ragft.service.app"))) for m in engine}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_eval_never_imports_the_interfaces():
    graph = import_graph()
    wrong = {
        m: sorted(t for t in ts if t.startswith("ragft.service.app"))
        for m, ts in graph.items()
        if m.startswith("ragft.eval")
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_checker_sees_a_circle_and_ignores_type_only_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ragft.eval import spec\n\n\n"
        "def f():\n    from ragft.eval import store\n"
    )
    path = ROOT / "tests" / "_layout_probe.py"
    path.write_text(source)
    try:
        assert _imports(path, "tests._layout_probe", {"ragft.eval.spec", "ragft.eval.store", "ragft.eval"}) == {
            "ragft.eval.store"
        }
    finally:
        path.unlink()


def _imported_names(path: Path) -> set[tuple[str, str]]:
    """(module, name) of every `from module import name` in `path`, function-local imports included."""
    return {(node.module or "", alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) for alias in node.names}  # fmt: skip


def test_the_interfaces_share_code_through_shared_modules_not_each_other():
    graph = import_graph()
    # the CLI's time left comes from ragft.eval.running.progress, as the job worker's does, not from the worker itself
    assert "ragft.service.app.api.jobs" not in graph["ragft.service.app.cli"]
    # what the job resources share lives in ragft.service.app.api.job_routes: no route module imports another
    routes = [m for m in graph if m.startswith("ragft.service.app.api.routes.")]
    assert len(routes) >= 8
    assert {m: sorted(t for t in graph[m] if t in routes) for m in routes if graph[m] & set(routes)} == {}
    curves = _imported_names(ROOT / "service" / "app" / "api" / "routes" / "curves.py")
    assert not [name for module, name in curves if module.endswith("routes.runs") or name.startswith("_")]
    assert "ragft.service.app.api.job_routes" in graph["ragft.service.app.api.routes.curves"]


def test_training_keeps_its_memory_plumbing_in_service_memory():
    source = (ROOT / "service" / "finetune.py").read_text()
    assert not [word for word in ("mallopt", "malloc_trim", "ctypes", "/proc/self") if word in source]
    assert "ragft.service.memory" in import_graph()["ragft.service.finetune"]


# --- kinds, families and arms by their facts --------------------------------------------------------------------

# where a family, kind or arm is registered (and described by its facts): naming it there is the registration
REGISTRATIONS = {"eval/families.py", "service/kinds.py", "service/arms.py"}
# modules that write task rows of the families they produce, so they name those families
ROW_WRITERS = {
    "eval/corpus/generation_rows.py": "ragft corpus generate",
    "eval/corpus/corpus_import.py": "ragft corpus init",
}


def _registered_names() -> set[str]:
    from ragft.eval.families import FAMILIES
    from ragft.service.arms import ARMS
    from ragft.service.kinds import KINDS

    return set(FAMILIES) | set(KINDS) | set(ARMS)


def _decisions(source: str, names: set[str], reads_allowed: bool = False) -> list[str]:
    """Code that decides by a registered name: compares with one (`family == "knowledge"`, `"abstention" in reads`,
    `arm in ("base", "rag")`), looks one up (`out["rag"]`, `.get("freshness")`) or lists only names as a default
    (`["base", "rag"]`). Docstrings, comments and calls that register (`Family("knowledge", ...)`) are not decisions.
    A lookup in settings (`config["settings"]["lora"]`) reads the settings group, not the kind of that name;
    `reads_allowed`: tuples of names are what a metric module registers its metrics for."""

    def named(node) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            hit = any(named(s) or (isinstance(s, (ast.Tuple, ast.List, ast.Set)) and any(map(named, s.elts)))
                      for s in sides)  # fmt: skip
        elif isinstance(node, ast.Subscript):
            hit = named(node.slice) and "settings" not in ast.unparse(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop"):
            hit = bool(node.args) and named(node.args[0]) and "settings" not in ast.unparse(node.func.value)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            hit = bool(node.elts) and all(map(named, node.elts)) and not (reads_allowed and isinstance(node, ast.Tuple))
        else:
            continue
        if hit:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_decision_names_a_family_kind_or_arm_outside_its_registration():
    names = _registered_names()
    paths = sorted([*(ROOT / "eval").rglob("*.py"), *(ROOT / "service").rglob("*.py")])
    found = {}
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        if rel in REGISTRATIONS or rel in ROW_WRITERS:
            continue
        if hits := _decisions(path.read_text(), names, reads_allowed=rel.startswith("eval/scoring/metrics/")):
            found[rel] = hits
    assert found == {}, "decide by the registered facts (Family, Kind, Arm fields), not by a name"
    # the page asks the API which arms exist and which to tick (GET /v1/arms): it names none itself
    script = (ROOT / "service" / "app" / "ui" / "static" / "app.js").read_text()
    quoted = [n for n in sorted(names) if f'"{n}"' in script or f"'{n}'" in script]
    assert quoted == []


def test_the_name_checker_sees_decisions_and_not_registrations_or_docs():
    names = {"knowledge", "abstention", "rag", "base", "lora"}
    source = '''"""Docs may say "knowledge" and ["base", "rag"]."""
register_family(Family("knowledge", "Knowledge", "answer_contained"))  # names it as it registers it: no decision
register(Metric("coverage", "abstention", ("abstention", "knowledge")))  # the rows a metric reads
a = row.family == "knowledge"
b = "abstention" in reads
c = arm in ("base", "other")
d = out["rag"]
e = block.get("knowledge")
f = arms or ["base", "rag"]
g = ((results.get("config") or {}).get("settings") or {}).get("lora", {})  # the lora settings group
'''

    def lines(**kw) -> list[int]:
        return sorted(int(hit.split(":")[0]) for hit in _decisions(source, names, **kw))

    assert lines() == [3, 4, 5, 6, 7, 8, 9]
    assert lines(reads_allowed=True) == [4, 5, 6, 7, 8, 9]  # a metric module registers the rows it reads


# The evaluation package's rooms, lowest first: a module imports its own room, the rooms below it and the shared
# vocabulary at eval/'s top (families, tasks, spec, store), never a room above; the vocabulary imports no room.
ROOM_ORDER = ("scoring", "reporting", "corpus", "running")


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "eval" and parts[2] in ROOM_ORDER else None


def test_eval_rooms_import_only_downwards():
    graph = import_graph()
    evaluation = [m for m in graph if m.startswith("ragft.eval.")]
    assert {r for m in evaluation if (r := _room(m))} == set(ROOM_ORDER)
    allowed = {room: set(ROOM_ORDER[: i + 1]) for i, room in enumerate(ROOM_ORDER)}
    allowed["running"] = set(ROOM_ORDER)
    wrong = {}
    for m in evaluation:
        mine = _room(m)
        rooms = {r for t in graph[m] if (r := _room(t))}
        bad = rooms - (allowed[mine] if mine else set())
        if bad:
            wrong[m] = sorted(bad)
    assert wrong == {}


def test_nothing_installs_or_imports_a_generic_top_level_name():
    """service, eval and corpora are installed as ragft.service, ragft.eval and ragft.corpora; an import of the bare
    names would load a second copy of each module (or another distribution's package)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(("ragft", *p.parent.relative_to(ROOT).parts)) for pkg in PACKAGES
               for p in (ROOT / pkg).rglob("__init__.py")}  # fmt: skip
    assert set(config["packages"]) == folders and all(p.startswith("ragft.") for p in config["packages"])
    bare = []
    for path in [*ROOT.joinpath("tests").rglob("*.py"), *ROOT.joinpath("bench").rglob("*.py"),
                 *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))]:  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []  # fmt: skip
            bare += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert bare == []


def test_the_wheel_installs_one_top_level_name(tmp_path):
    """What `pip install .` puts into site-packages: ragft and its dist-info, nothing named service, eval or corpora
    (the wheel is what pip installs)."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = tmp_path.glob("ragft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"ragft"}
    assert "ragft/eval/running/runner.py" in names and "ragft/service/app/ui/static/app.js" in names
