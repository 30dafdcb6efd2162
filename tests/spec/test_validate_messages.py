"""What a new user saw in their first hour, through the real `orch validate`: messages and hints.

Each test writes a small workflow, runs the command and compares the printed
lines (``FILE:LINE:COL: message`` and the ``  hint:`` lines) exactly.
"""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.engine.inputs import resolve_inputs
from orchestrator.errors import UsageError
from orchestrator.spec import load_workflow
from orchestrator.spec.values import input_type_ok


def _validate(tmp_path, text, name="w.yaml"):
    path = tmp_path / name
    path.write_bytes(textwrap.dedent(text).encode())
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert "Traceback" not in result.output
    return result, [line.replace(f"{path}:", "", 1) for line in result.output.splitlines()]


# -- 1. input defaults are checked against the declared type -----------------------------


def test_an_input_default_of_the_wrong_type_is_located_at_the_default(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        inputs:
          n: {type: integer, default: abc}
          regions: {type: array, default: eu}
          opts:
            type: object
            default: [1]
          label: {type: string, default: 1.0}
          fine: {type: number, default: 2}
          unset: {type: integer, default: null}
        phases:
          - {id: a, agent: echo}
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "3:31: inputs.n.default must be an integer (the input's type), not the string 'abc'",
        "  hint: use a whole number such as 3",
        "4:35: inputs.regions.default must be an array (the input's type), not the string 'eu'",
        "  hint: write a list, e.g. default: [a, b] (or one '- item' per line)",
        "7:14: inputs.opts.default must be an object (the input's type), not a list",
        "  hint: write a mapping, e.g. default: {key: value}",
        "8:34: inputs.label.default must be a string (the input's type), not the number 1.0",
        "  hint: YAML 1.2 reads this as a number; quote it to keep it as text",
    ]


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("integer", [3, -1], [True, 2.0, "3"]),
        ("number", [2, 2.5], [False, "2.5"]),
        ("boolean", [True, False], [0, "yes"]),
        ("array", [[1], ()], ["a", {}]),
        ("object", [{}, {"k": 1}], [[], "x"]),
        ("string", ["x", ""], [1, 1.5]),  # None: "not given" (tests/cli/test_new_user.py)
    ],
)
def test_validate_and_the_engine_share_one_type_rule(tmp_path, type_, good, bad):
    path = tmp_path / "w.yaml"
    path.write_text(
        f"name: d\ninputs:\n  x: {{type: {type_}}}\nphases:\n  - {{id: a, agent: noop}}\n"
    )
    workflow = load_workflow(path)
    for value in good:
        assert input_type_ok(type_, value)
        resolve_inputs(workflow, {"x": value})
    for value in bad:
        assert not input_type_ok(type_, value)
        with pytest.raises(UsageError, match="input 'x' must be"):
            resolve_inputs(workflow, {"x": value})


# -- 2. a timeout of zero ------------------------------------------------------------------


def test_a_zero_timeout_or_reset_delay_is_refused_and_delays_may_be_zero(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        timeout: 0
        defaults:
          timeout: 0ms
        agents:
          flaky:
            type: echo
            circuit_breaker: {failures: 2, reset_after: 0s}
        phases:
          - id: a
            agent: flaky
            timeout: 0s
            retries: {attempts: 2, delay: 0, jitter: 0s}
          - id: b
            agent: echo
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "2:10: timeout: a timeout must be greater than 0",
        "  hint: leave the key out for no limit",
        "4:12: defaults.timeout: a timeout must be greater than 0",
        "  hint: leave the key out for no limit",
        "8:49: agents.flaky.circuit_breaker.reset_after: the reset delay must be greater than 0",
        "12:14: phases[0].timeout: a timeout must be greater than 0",
        "  hint: leave the key out for no limit",
    ]


# -- 3. every duplicate key, and the other checks too --------------------------------------


def test_every_duplicate_key_is_reported_and_the_rest_is_still_checked(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        name: again
        phases:
          - id: a
            agent: echo
            agent: noop
            with:
              text: hi
              text: ho
            timeot: 5s
        """,
    )
    assert result.exit_code == 2
    hint = "  hint: a key may appear once in a mapping; remove or rename one"
    assert lines == [
        "2:1: duplicate key 'name' (first at line 1)",
        hint,
        "6:5: duplicate key 'agent' (first at line 5)",
        hint,
        "9:7: duplicate key 'text' (first at line 8)",
        hint,
        "10:5: unknown key 'timeot' in phase 'a'; did you mean 'timeout'?",
    ]


def test_the_first_value_of_a_duplicate_key_is_kept(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: d\nphases:\n  - id: a\n    agent: echo\n    with: {text: one, text: two}\n"
    )
    from orchestrator.spec import check

    workflow, problems = check(path)
    assert [p.message for p in problems] == ["duplicate key 'text' (first at line 5)"]
    assert workflow is not None and workflow.phases[0].with_ == {"text": "one"}


# -- 4 and 11. YAML syntax: tabs, and where an unclosed bracket was opened ----------------


def test_a_tab_in_the_indentation_is_named(tmp_path):
    result, lines = _validate(tmp_path, "name: demo\nphases:\n  - id: a\n\tagent: echo\n")
    assert result.exit_code == 2
    assert lines == [
        "4:1: tabs are not allowed for indentation in YAML",
        "  hint: indent with spaces",
    ]


def test_an_unclosed_bracket_is_located_where_it_was_opened(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        phases:
          - id: a
            agent: echo
            depends_on: [b, c
          - id: b
            agent: echo
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "6:7: invalid YAML: did not find expected ',' or ']'",
        "  hint: the '[' opened at line 5, column 17 is not closed",
    ]


def test_an_unclosed_brace_and_quote_are_located_too(tmp_path):
    _, lines = _validate(tmp_path, "name: demo\nphases: {a: 1\nb: 2\n")
    assert lines[-1] == "  hint: the '{' opened at line 2, column 9 is not closed"
    _, lines = _validate(tmp_path, "name: 'demo\nphases: []\n")
    assert lines[-1] == "  hint: the quote opened at line 1, column 7 is not closed"


# -- 5 and 7. type hints that fit the mistake ----------------------------------------------


def test_the_yaml_1_2_hint_only_when_quoting_would_be_accepted(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        description: 1.0
        phases:
          - id: a
            agent: echo
            foreach: 5
          - id: b
            agent: echo
            priority: 1
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "2:14: description must be a string, not the number 1.0",
        "  hint: YAML 1.2 reads this as a number; quote it to keep it as text",
        "6:14: phases[0].foreach must be a list or a string, not the number 5",
        "9:15: phases[1].priority: 1 is not one of 'critical', 'high', 'medium', 'low',"
        " 'background'",
    ]


def test_hints_for_github_actions_and_argo_habits(tmp_path):
    _, lines = _validate(tmp_path, "name: demo\nphases: {build: 1}\n")
    assert lines == [
        "2:9: phases must be a list, not a mapping",
        '  hint: phases is a list: write "- id: build" for each phase',
    ]
    _, lines = _validate(
        tmp_path,
        "name: demo\nphases:\n  - {id: a, agent: echo}\n  - {id: b, agent: echo, depends_on: a}\n",
    )
    assert lines == [
        "4:38: phases[1].depends_on must be a list, not the string 'a'",
        "  hint: write depends_on: [a]",
    ]


# -- 8. a cycle made by sequential mode ----------------------------------------------------


def test_a_cycle_through_an_implicit_sequential_edge_says_where_the_edge_comes_from(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        mode: sequential
        phases:
          - {id: a, agent: echo}
          - {id: b, agent: echo, depends_on: [c]}
          - {id: c, agent: echo}
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "5:39: cycle: b -> c -> b",
        "  hint: 'c -> b' comes from mode: sequential: in sequential mode each phase depends on"
        " the one listed before it; remove the depends_on that points to a later phase,"
        " or list the phases in the order they run",
    ]


def test_a_cycle_of_written_edges_keeps_the_plain_hint(tmp_path):
    _, lines = _validate(
        tmp_path,
        """\
        name: demo
        mode: sequential
        phases:
          - {id: a, agent: echo, depends_on: [b]}
          - {id: b, agent: echo, depends_on: [a]}
        """,
    )
    assert lines[-1] == "  hint: remove one of these dependencies"


# -- 9. sandbox escapes are refused at validate --------------------------------------------


def test_access_to_underscore_names_is_refused_at_validate(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        phases:
          - id: a
            agent: echo
            with:
              text: "{{ ''.__class__.__mro__ }}"
          - id: b
            agent: echo
            when: "inputs['_x'] == 1"
            with:
              text: "{{ phases.a._secret }} {{ phases.a | attr('__dict__') }}"
          - id: c
            agent: echo
            with: {text: "{{ phases.a.output }}"}
        """,
    )
    assert result.exit_code == 2
    messages = [line for line in lines if not line.startswith("  hint:")]
    assert messages == [
        "6:13: phases[0].with.text: access to '__class__' is not allowed in templates",
        "9:11: phases[1].when: access to '_x' is not allowed in templates",
        "11:13: phases[1].with.text: access to '_secret' is not allowed in templates",
    ]


def test_a_zero_cache_ttl_and_an_unused_zero_default_timeout_are_refused(tmp_path):
    result, lines = _validate(
        tmp_path,
        """\
        name: demo
        defaults:
          timeout: 0
        phases:
          - {id: a, agent: echo, timeout: 5s, cache: {ttl: 0}}
        """,
    )
    assert result.exit_code == 2
    assert lines == [
        "3:12: defaults.timeout: a timeout must be greater than 0",
        "  hint: leave the key out for no limit",
        "5:52: phases[0].cache.ttl: a cache ttl must be greater than 0",
        "  hint: leave ttl out to keep cached outputs with no expiry; remove cache to turn it off",
    ]


def test_input_types_named_the_way_other_tools_name_them_get_the_json_type_and_an_example(
    tmp_path,
):
    _, lines = _validate(
        tmp_path,
        """\
        name: demo
        inputs:
          regions: {type: list}
          labels: {type: dict}
          count: {type: int}
        phases:
          - {id: a, agent: echo}
        """,
    )
    one_of = "is not one of 'string', 'integer', 'number', 'boolean', 'array', 'object'"
    assert lines == [
        f"3:19: inputs.regions.type: 'list' {one_of}; did you mean 'array'?",
        """  hint: a list input: type: array, e.g. default: [a, b]; --input regions='["a", "b"]'""",
        f"4:18: inputs.labels.type: 'dict' {one_of}; did you mean 'object'?",
        "  hint: a mapping input: type: object, e.g. default: {key: value};"
        """ --input labels='{"key": 1}'""",
        f"5:17: inputs.count.type: 'int' {one_of}; did you mean 'integer'?",
    ]
