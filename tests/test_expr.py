"""expr: template checks and references as the validator uses them, and the sandbox's promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import expr
from orchestrator.errors import ExpressionError
from orchestrator.spec.templates import _simple_references


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("{{ phases.a.output }}", {("phases", "a", "output")}),
        ("x {{ inputs.n | tojson }} {{ secrets.KEY }}", {("inputs", "n"), ("secrets", "KEY")}),
        ("{{ phases['b'].output[0] }}", {("phases", "b", "output", "0")}),
        ("{% for r in inputs.regions %}{{ r.name }}{% endfor %}", {("inputs", "regions")}),
        ("no template", set()),
    ],
)
def test_template_references(text, refs):
    assert expr.template_references(text) == refs


def test_condition_references_and_syntax():
    assert expr.references("phases.a.output.score > 0.5") == {("phases", "a", "output", "score")}
    assert expr.check_expression("phases.a.output >") is not None
    assert expr.check_expression("{{ phases.a.ok }}") is None
    assert expr.check_template("{{ x ") is not None
    assert expr.check_template("{{ x }}") is None


def test_a_lone_expression_keeps_its_type_and_undefined_is_an_error():
    assert expr.render("{{ inputs.n }}", {"inputs": {"n": [1, 2]}}) == [1, 2]
    assert expr.render("n={{ inputs.n }}", {"inputs": {"n": 3}}) == "n=3"
    with pytest.raises(ExpressionError, match="nope"):
        expr.render("{{ inputs.nope }} x", {"inputs": {}})
    with pytest.raises(ExpressionError):
        expr.evaluate("missing > 1", {})


def test_outputs_are_data_never_rendered_twice():
    value = "{{ 7 * 6 }}"
    assert expr.render("{{ phases.a.output }}", {"phases": {"a": {"output": value}}}) == value


@pytest.mark.parametrize(
    "text", ["{{ ''.__class__.__mro__ }}", "{{ 9 ** (9 ** 9) }}", "{{ 'x' * 10 ** 9 }}"]
)
def test_the_sandbox_refuses(text):
    with pytest.raises(ExpressionError):
        expr.render(text, {})


NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
PIECES = st.one_of(
    st.text(alphabet="ab {}%#|.", max_size=6),
    st.builds(lambda p: "{{ " + ".".join(p) + " }}", st.lists(NAMES, min_size=1, max_size=3)),
    st.builds(lambda p: "{{" + p + "|tojson}}", NAMES),
    # arithmetic with a number (`{{ index + 1 }}`), and near misses the reader must refuse
    st.builds(
        lambda p, space, op, n, end: "{{ " + ".".join(p) + space + op + space + n + end,
        st.lists(NAMES, min_size=1, max_size=2),
        st.sampled_from(["", " "]),
        st.sampled_from(["+", "-", "*", "**", "//", "/", "%", "--", "+-"]),
        st.sampled_from(["0", "1", "12", "01", "1_0", "1.5", "x", ""]),
        st.sampled_from([" }}", "}}", " -}}", "|tojson }}", " | tojson }}"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=5))
def test_the_validators_fast_reader_agrees_with_jinja(pieces):
    text = "".join(pieces)
    fast = _simple_references(text)
    if fast is not None:
        assert expr.check_template(text) is None
        assert set(fast) == expr.template_references(text)


# -- undefined names in the user's terms (the context the engine builds) -------------------


def _run_context():
    from orchestrator.engine.result import PhaseOutcome

    return {
        "inputs": {"name": "x"},
        "phases": {"a": PhaseOutcome("a", "completed", output={"score": 1})},
        "run": {"id": "r1", "workflow": "demo"},
        "env": {"HOME": "/home/u"},
        "secrets": {},
    }


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            "{{ env.MISSING_VAR }}",
            "environment variable 'MISSING_VAR' is not set in '{{ env.MISSING_VAR }}'",
            "set it before the run, or give a fallback: env.MISSING_VAR | default('...')",
        ),
        (
            "home={{ env['NOPE'] }}",
            "environment variable 'NOPE' is not set in 'home={{ env['NOPE'] }}'",
            "set it before the run, or give a fallback: env.NOPE | default('...')",
        ),
        (
            "{{ inputs.nme }}",
            "input 'nme' is not defined in '{{ inputs.nme }}'; did you mean 'name'?",
            None,
        ),
        (
            "{{ phases.a.outptu }}",
            "phase 'a' has no field 'outptu' in '{{ phases.a.outptu }}'; did you mean 'output'?",
            None,
        ),
        (
            "{{ phases.a.output.scor }}",
            "the output of phase 'a' has no key 'scor' in '{{ phases.a.output.scor }}';"
            " did you mean 'score'?",
            None,
        ),
        (
            "{{ phases.b.output }}",
            "phase 'b' has no result here in '{{ phases.b.output }}'",
            "a template reads the phases its phase depends on (and those that ran before)",
        ),
        ("{{ secrets.TOKEN }}", "secret 'TOKEN' is not set in '{{ secrets.TOKEN }}'", None),
        (
            "{{ inptus.name }}",
            "undefined name 'inptus' in '{{ inptus.name }}'; did you mean 'inputs'?",
            None,
        ),
    ],
)
def test_undefined_names_are_explained_in_the_users_terms(text, message, hint):
    with pytest.raises(ExpressionError) as info:
        expr.render(text, _run_context())
    assert info.value.message == message
    if hint is not None:
        assert info.value.hint == hint


def test_a_condition_and_a_shell_string_explain_undefined_names_too():
    with pytest.raises(ExpressionError) as info:
        expr.evaluate("env.X == 'a'", _run_context())
    assert info.value.message == "environment variable 'X' is not set in 'env.X == 'a''"
    with pytest.raises(ExpressionError) as info:
        expr.render_shell("echo {{ inputs.n }}", _run_context())
    assert info.value.message == "input 'n' is not defined in 'echo {{ inputs.n }}'"


def test_default_still_works_on_a_missing_environment_variable():
    ctx = _run_context()
    assert expr.render("{{ env.MISSING_VAR | default('none') }}", ctx) == "none"
    assert expr.render("at {{ env.MISSING_VAR | default(env.HOME) }}", ctx) == "at /home/u"
    assert expr.evaluate("env.MISSING_VAR is defined", ctx) is False
    assert expr.render_shell("echo {{ env.NOPE | default('a b') }}", ctx) == "echo 'a b'"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ phases.a._x }}", "_x"),
        ("{{ inputs['__dict__'] }}", "__dict__"),
        ("{{ run | attr('__init__') }}", "__init__"),
        ("{% for c in ''.__class__.__subclasses__() %}{{ c }}{% endfor %}", "__class__"),
    ],
)
def test_private_access_names_the_first_underscore_name(text, name):
    assert expr.private_access(text) == name


def test_private_access_is_none_for_plain_templates_and_checks_conditions():
    assert expr.private_access("{{ phases.a.output['k'] }} {{ inputs.x | default('_') }}") is None
    assert expr.private_access("no template") is None
    assert expr.private_access("{{ x ") is None
    assert expr.private_access("phases.a.__class__ is defined", condition=True) == "__class__"
