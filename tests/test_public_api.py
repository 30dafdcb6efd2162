"""The public Python API: orchestrator.__all__ is sorted, and every name in it resolves."""

from __future__ import annotations

import inspect
from pathlib import Path

import orchestrator

# The names the other parts build on; more join them (run, run_sync, RunResult, validate...).
CORE = {
    "Agent",
    "AgentContext",
    "AgentRegistry",
    "AgentResult",
    "Event",
    "Location",
    "OrchError",
    "Plan",
    "Problem",
    "WorkflowInvalid",
    "compile_plan",
    "load_workflow",
}


def test_all_is_sorted_and_has_no_repeats():
    assert list(orchestrator.__all__) == sorted(orchestrator.__all__)
    assert len(set(orchestrator.__all__)) == len(orchestrator.__all__)


def test_every_public_name_resolves_to_a_documented_object():
    for name in orchestrator.__all__:
        value = getattr(orchestrator, name)
        assert value is not None, name
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def test_the_core_names_are_public():
    assert CORE <= set(orchestrator.__all__)


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from orchestrator import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(orchestrator.__all__)


def test_the_readme_python_example_prints_what_it_says(capsys, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    code = readme.split("### Python API\n\n```python\n", 1)[1].split("```", 1)[0]
    expected = [line.split("# ", 1)[1] for line in code.splitlines() if "print(" in line]
    monkeypatch.chdir(root)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == expected


def test_the_examples_use_only_the_public_api():
    """examples/ show users what to import: nothing from below `orchestrator` itself."""
    import ast

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "examples").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orchestrator"):
                assert node.module == "orchestrator", f"{path.name}: from {node.module} import"
                assert {a.name for a in node.names} <= set(orchestrator.__all__), path.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "orchestrator" or alias.name == (
                        "orchestrator"
                    ), f"{path.name}: import {alias.name}"


def test_event_is_public_and_the_one_the_engine_sends():
    from orchestrator.events import Event

    assert orchestrator.Event is Event
