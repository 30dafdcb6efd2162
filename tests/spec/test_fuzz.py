"""Random YAML trees and random bytes: only located problems or success, never another exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.agents.registry import AgentRegistry
from orchestrator.errors import WorkflowError
from orchestrator.spec import check
from orchestrator.spec.source import parse_source

REGISTRY = AgentRegistry.from_entry_points()
KEYS = [
    "name",
    "phases",
    "id",
    "agent",
    "with",
    "depends_on",
    "when",
    "timeout",
    "retries",
    "foreach",
    "inputs",
    "agents",
    "type",
    "mode",
    "cache",
    "handoff",
    "outputs",
    "text",
    "seconds",
    "schedule",
    "cron",
    "defaults",
    "priority",
    "trigger",
    "x",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "a",
            "echo",
            "noop",
            "sleep",
            "5s",
            "{{ phases.a.output }}",
            "{{ item }}",
            "{{ inputs.x }}",
            "{% if %}",
            "0 2 * * *",
            "sequential",
            "b",
            "a",
        ]
    ),
    st.text(max_size=8),
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), kids, max_size=5),
    ),
    max_leaves=25,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _check_text(factory, raw: bytes) -> None:
    path = factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(raw)
    workflow, problems = check(path, registry=REGISTRY)
    for p in problems:
        assert p.location.line >= 1 and p.location.col >= 1
        assert p.message
    if not [p for p in problems if p.severity == "error"]:
        assert workflow is not None


@SETTINGS
@given(tree=st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6))
def test_random_trees_give_problems_or_a_workflow(tmp_path_factory, tree):
    # JSON is YAML: flow style, one line, all the shapes and types
    raw = json.dumps(tree).encode()
    _check_text(tmp_path_factory, raw)


@SETTINGS
@given(tree=st.dictionaries(st.sampled_from(KEYS), TREES, max_size=6))
def test_random_trees_in_block_style(tmp_path_factory, tree):
    def block(value, indent=0):
        pad = " " * indent
        if isinstance(value, dict) and value:
            return "".join(f"{pad}{k}:\n{block(v, indent + 2)}" for k, v in value.items())
        if isinstance(value, list) and value:
            return "".join(f"{pad}-\n{block(v, indent + 2)}" for v in value)
        return f"{pad}{json.dumps(value)}\n"

    _check_text(tmp_path_factory, block(tree).encode())


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_escape(raw):
    try:
        parse_source(raw, "w.yaml")
    except WorkflowError as exc:
        assert exc.location.line >= 1 and exc.location.col >= 1


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`?, \n\t0")), max_size=80))
def test_random_yaml_punctuation_never_escapes(tmp_path_factory, text):
    _check_text(tmp_path_factory, text.encode())


PHASES = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "1x"])},
    optional={
        "agent": st.sampled_from(["echo", "noop", "sleep", "fail", "nope", 5]),
        "with": TREES,
        "depends_on": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3) | SCALARS,
        "when": SCALARS,
        "foreach": TREES,
        "retries": TREES,
        "timeout": SCALARS,
        "cache": TREES,
        "handoff": TREES,
        "fallback": TREES,
        "compensate": TREES,
        "trigger": SCALARS,
    },
)
SECTIONS = st.dictionaries(
    st.sampled_from(["inputs", "agents", "defaults", "outputs", "on_failure", "schedule"]),
    TREES,
    max_size=3,
)


@SETTINGS
@given(
    phases=st.lists(PHASES, max_size=4),
    mode=st.sampled_from(["dag", "sequential"]),
    extra=SECTIONS,
)
def test_phase_shaped_documents_either_fail_located_or_compile(
    tmp_path_factory, phases, mode, extra
):
    from orchestrator.plan import compile_plan

    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(json.dumps({"name": "x", "mode": mode, "phases": phases, **extra}))
    workflow, problems = check(path, registry=REGISTRY)
    assert all(p.location.line >= 1 for p in problems)
    if not [p for p in problems if p.severity == "error"]:
        assert workflow is not None
        compile_plan(workflow)  # a valid workflow always compiles: no cycle, no unknown phase
