"""What `orch validate` can know before the run (issue 9, item 10): unknown filters and
tests, `run.*` fields, macros and other names a template defines itself."""

from __future__ import annotations

import json

import pytest

import orchestrator
from orchestrator.engine import run_sync
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    return [f"{p.location.line}:{p.location.col}: {p.message}" for p in orchestrator.validate(path)]


def one_phase(template: str, *, key: str = "with: {text: ", where: str = "phases") -> str:
    return f"version: 1\nname: v\n{where}:\n  - id: a\n    agent: echo\n    {key}{template}}}\n"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            '"{{ [1, 2] | summ }}"',
            "unknown filter 'summ' in '{{ [1, 2] | summ }}'; did you mean 'sum'?",
        ),
        ('"{{ inputs | lenght }}"', "unknown filter 'lenght'"),
        ('"{{ 1 if 2 is iterabel else 0 }}"', "unknown test 'iterabel'"),
        ('"{% filter uppper %}x{% endfilter %}"', "unknown filter 'uppper'"),
        ("\"{{ [1] | map('lenght') | list }}\"", None),  # a filter named by a string: run time
        ('"{{ run.wokflow }}"', "'run.wokflow' is not defined here; did you mean 'run.workflow'?"),
        ('"{{ run.error }}"', "'run.error' is not defined here"),
    ],
)
def test_unknown_filters_tests_and_run_fields_are_found_before_the_run(
    tmp_path, template, expected
):
    found = problems(tmp_path, one_phase(template))
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith("6:18: phases[0].with.text: ")
        assert expected in found[0]


def test_an_unknown_test_in_when_is_found(tmp_path):
    found = problems(tmp_path, one_phase("1", key='when: "inputs is iterabel"\n    with: {text: '))
    assert found == [
        "6:11: phases[0].when: unknown test 'iterabel' in 'inputs is iterabel';"
        " did you mean 'iterable'?"
    ]


@pytest.mark.parametrize(
    "template",
    [
        '"{% macro f(n) %}{{ f(n - 1) if n > 0 else n }}{% endmacro %}{{ f(3) }}"',
        '"{% with q = 2 %}{{ q }}{% endwith %}"',
        '"{% set x %}text{% endset %}{{ x }}"',
        '"{% macro m() %}[{{ caller() }}]{% endmacro %}{% call m() %}in{% endcall %}"',
        '"{{ [3, 1] | sort | first }} {{ 2 is even }} {{ none is none }}"',
    ],
)
def test_names_a_template_defines_itself_are_not_unknown(tmp_path, template):
    assert problems(tmp_path, one_phase(template)) == []


def test_handlers_read_the_runs_status_and_error(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: v\nphases:\n"
        "  - {id: a, agent: fail, with: {message: boom}}\n"
        "on_failure:\n"
        "  - {id: tell, agent: echo, with: {text: '{{ run.status }}: {{ run.error }}'}}\n"
        "finally:\n"
        "  - {id: last, agent: echo, with: {text: '{{ run.workflow }} {{ run.status }}'}}\n",
        encoding="utf-8",
    )
    assert orchestrator.validate(path) == []
    result = run_sync(compile_plan(load_workflow(path)))
    assert result.status == "failed"
    assert result.phases["tell"].output == "failed: phase 'a' failed: boom"
    assert result.phases["last"].output == "v failed"
    assert json.dumps(result.phases["tell"].output)


def test_a_template_failing_at_run_time_is_located_at_its_key(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: v\nerror_handling: {continue_on_error: true}\nphases:\n"
        "  - id: a\n    agent: echo\n    with: {text: {k: 1}}\n"
        "  - id: b\n    agent: echo\n    with:\n      first: fine\n"
        '      text: "{{ phases.a.output.nope }}"\n'
        '  - id: c\n    agent: echo\n    when: "phases.a.output.nope > 1"\n    with: {text: 1}\n'
        '  - id: d\n    agent: echo\n    foreach: "{{ phases.a.output.nope }}"\n'
        "    with: {text: 1}\n",
        encoding="utf-8",
    )
    result = run_sync(compile_plan(load_workflow(path)))
    errors = {pid: o.error for pid, o in result.phases.items() if o.error}
    assert errors["b"].startswith(f"{path}:12:13: ")
    assert "the output of phase 'a' has no key 'nope'" in errors["b"]
    assert errors["c"].startswith(f"when: {path}:15:11: ")
    assert errors["d"].startswith(f"foreach: {path}:19:14: ")
