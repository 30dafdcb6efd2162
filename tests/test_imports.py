"""No import cycle anywhere in orchestrator/, and the layers import only downwards.

Every module's imports are read from its source: module level, inside functions,
under ``if TYPE_CHECKING:`` and ``importlib.import_module("...")`` with a literal name
alike. A typing-only import still ties two modules together (neither can be read or
type-checked apart), so it counts: a module that needs a type of a module above it
describes what it needs with a small ``typing.Protocol`` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator

ROOT = Path(orchestrator.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The orchestrator modules ``name`` imports (at run time or for typing only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.append(sub if sub in known else module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            while target and target not in known:  # `import a.b.c` names a module's attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_reads_every_module_and_its_in_function_imports():
    graph = _graph()
    assert "orchestrator.engine.runner" in graph
    # in-function imports count: the CLI imports the engine only inside its commands
    assert "orchestrator.runs" in graph["orchestrator.cli.run"]
    # a lazy importlib.import_module("...") counts too
    assert "orchestrator.spec" in graph["orchestrator.engine.context"]
    # and so does an import under `if TYPE_CHECKING:` (approval needs Phase for typing only)
    assert "orchestrator.spec.model" in graph["orchestrator.engine.approval"]


def test_no_module_of_orchestrator_imports_another_in_a_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _layer(graph: dict[str, set[str]], prefix: str) -> list[str]:
    return [m for m in graph if m == prefix or m.startswith(prefix + ".")]


def test_the_state_store_does_not_import_the_engine():
    graph = _graph()
    for module in _layer(graph, "orchestrator.state"):
        wrong = sorted(m for m in graph[module] if m.startswith("orchestrator.engine"))
        assert wrong == [], f"{module} imports {wrong}"


def test_the_event_contract_and_the_errors_import_only_the_standard_library():
    graph = _graph()
    assert graph["orchestrator.errors"] == set()
    # events builds its Event with frozen.quick_init, a module of the standard library only
    assert graph["orchestrator.frozen"] == set()
    assert graph["orchestrator.events"] <= {"orchestrator.frozen"}


def test_the_core_never_reaches_the_cli_or_the_renderers():
    graph = _graph()
    core = ("spec", "plan", "expr", "engine", "agents", "state", "events", "errors")
    for layer in core:
        for module in _layer(graph, f"orchestrator.{layer}"):
            reached = _reach(graph, module)
            wrong = sorted(
                m for m in reached if m.startswith(("orchestrator.cli", "orchestrator.render"))
            )
            assert wrong == [], f"{module} reaches {wrong}"


def test_spec_and_plan_do_not_import_the_engine_or_the_state_store():
    graph = _graph()
    for layer in ("orchestrator.spec", "orchestrator.plan", "orchestrator.expr"):
        for module in _layer(graph, layer):
            wrong = sorted(
                m
                for m in graph[module]
                if m.startswith(("orchestrator.engine", "orchestrator.state"))
            )
            assert wrong == [], f"{module} imports {wrong}"


def test_the_engine_uses_no_concrete_agent_or_store():
    graph = _graph()
    for module in _layer(graph, "orchestrator.engine"):
        wrong = sorted(
            m
            for m in graph[module]
            if m.startswith(("orchestrator.agents.builtin", "orchestrator.state.sqlite"))
        )
        assert wrong == [], f"{module} imports {wrong}"
