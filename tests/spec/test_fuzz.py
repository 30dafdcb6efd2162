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


# -- numbers, unicode line breaks and template expressions (issue 9: no traceback) ------

NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(
        [
            ".inf",
            "-.inf",
            ".nan",
            ".NaN",
            "1e400",
            "-1e400",
            "1e308",
            "9" * 4301,
            "9" * 4300,
            "0x" + "f" * 20000,
            "0o" + "7" * 6000,
            "1e-400",
            "0.0",
            "-0",
            "9" * 400 + "h",
            "1" * 21 + "s",
            "720h",
            "720h1s",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
NUMBER_SLOTS = [
    "max_parallel: {n}\n",
    "timeout: {n}\n",
    "inputs:\n  x: {{type: number, default: {n}}}\n",
]
PHASE_NUMBER_SLOTS = [
    "    timeout: {n}\n",
    "    estimated_duration: {n}\n",
    "    retries: {{attempts: 1, delay: {n}, max_delay: {n}}}\n",
    "    with: {{text: {n}}}\n",
    "    cache: {{ttl: {n}}}\n",
    "    max_parallel: {n}\n",
]


def _run_if_valid(factory, raw: bytes) -> None:
    """check(); when the workflow is valid, run it: the run ends in a RunResult whose
    every output is strict JSON, whatever the file held."""
    from orchestrator.engine import run_sync
    from orchestrator.errors import OrchError
    from orchestrator.jsontext import dumps
    from orchestrator.plan import compile_plan

    path = factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(raw)
    workflow, problems = check(path, registry=REGISTRY)
    for p in problems:
        assert p.location.line >= 1 and p.location.col >= 1 and p.message
    if workflow is None or [p for p in problems if p.severity == "error"]:
        return
    try:
        result = run_sync(compile_plan(workflow), registry=REGISTRY)
    except OrchError:  # inputs, secrets: a usage error before the run, never a crash
        return
    assert result.status in ("completed", "failed")
    dumps(result.outputs)
    for outcome in result.phases.values():
        dumps(outcome.output)
        assert outcome.error is None or isinstance(outcome.error, str)


@SETTINGS
@given(
    top=st.sampled_from(NUMBER_SLOTS + [""]),
    phase=st.sampled_from(PHASE_NUMBER_SLOTS),
    n=NUMBERS,
)
def test_numbers_anywhere_are_located_problems_or_bounded_values(tmp_path_factory, top, phase, n):
    text = f"version: 1\nname: n\n{top.format(n=n)}phases:\n  - id: a\n    agent: noop\n"
    text += phase.format(n=n)
    _run_if_valid(tmp_path_factory, text.encode())


BREAKS = ["\u2028", "\u2029", "\u0085", "\r", "\r\n", "\x0b", "\x0c", "\u200b", "\ufeff"]


@SETTINGS
@given(
    pieces=st.lists(
        st.one_of(st.sampled_from(BREAKS), st.text(alphabet="ab #:'\"-", max_size=4)),
        max_size=8,
    ),
    where=st.sampled_from(["quoted", "plain", "comment", "key"]),
)
def test_unicode_line_breaks_anywhere_never_escape(tmp_path_factory, pieces, where):
    junk = "".join(pieces)
    if where == "quoted":
        line = f'    with: {{text: "{junk}"}}\n'
    elif where == "plain":
        line = f"    with: {{text: {junk}}}\n"
    elif where == "comment":
        line = f"    # {junk}\n"
    else:
        line = f"    {junk}: 1\n"
    text = (
        f"version: 1\nname: u\nphases:\n  - id: a\n    agent: echo\n{line}  - id: b\n    agent: x\n"
    )
    _check_text(tmp_path_factory, text.encode("utf-8"))


ATOMS = st.sampled_from(
    [
        "1",
        "0",
        "2.5",
        "10 ** 9",
        "'x'",
        "'%05d'",
        "none",
        "true",
        "[1, 2]",
        "{'k': 1}",
        "inputs.x",
        "phases.a.output",
        "phases.a.status",
        "run.id",
        "run.nope",
        "env.HOME",
        "secrets",
        "nope",
        "range(3)",
        "range(10 ** 6)",
        "lipsum(2)",
        "'x' * 3",
        "'ab'.ljust(5)",
        "'ab'.ljust(10 ** 9)",
        "9 ** 9 ** 9",
        "1e308 * 10",
        "(1",
    ]
)
OPS = st.sampled_from(
    [
        " + ",
        " - ",
        " * ",
        " / ",
        " // ",
        " % ",
        " ** ",
        " ~ ",
        " and ",
        " or ",
        " == ",
        " < ",
        " in ",
    ]
)
FILTERS = st.sampled_from(
    [
        "length",
        "lenght",
        "tojson",
        "upper",
        "int",
        "float",
        "sum",
        "list",
        "string",
        "first",
        "indent(10 ** 9)",
        "center(5)",
        "join(',')",
        "default(1)",
        "summ",
    ]
)
TESTS = st.sampled_from(["defined", "number", "iterable", "iterabel", "even"])


@st.composite
def expressions(draw, depth=0):
    kind = draw(st.integers(0, 5 if depth < 3 else 0))
    if kind == 0:
        return draw(ATOMS)
    if kind == 1:
        return f"{draw(expressions(depth + 1))}{draw(OPS)}{draw(expressions(depth + 1))}"
    if kind == 2:
        return f"({draw(expressions(depth + 1))}) | {draw(FILTERS)}"
    if kind == 3:
        return f"{draw(expressions(depth + 1))} is {draw(TESTS)}"
    if kind == 4:
        return f"not ({draw(expressions(depth + 1))})"
    return "(" * draw(st.integers(1, 120)) + "1" + ")" * draw(st.integers(1, 120))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(expression=expressions(), block=st.booleans())
def test_random_template_expressions_validate_and_run_without_a_traceback(
    tmp_path_factory, expression, block
):
    body = (
        "{% for i in range(2) %}{{ " + expression + " }}{% endfor %}"
        if block
        else "{{ " + expression + " }}"
    )
    text = (
        "version: 1\nname: t\ninputs:\n  x: {type: number, default: 2}\n"
        "error_handling: {continue_on_error: true}\nphases:\n"
        "  - id: a\n    agent: echo\n    with: {text: 1}\n"
        f"  - id: b\n    agent: echo\n    timeout: 2s\n    with: {{text: {json.dumps(body)}}}\n"
        f"  - id: c\n    agent: noop\n    timeout: 2s\n    when: {json.dumps(expression)}\n"
    )
    _run_if_valid(tmp_path_factory, text.encode())
