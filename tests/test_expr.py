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
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=5))
def test_the_validators_fast_reader_agrees_with_jinja(pieces):
    text = "".join(pieces)
    fast = _simple_references(text)
    if fast is not None:
        assert expr.check_template(text) is None
        assert set(fast) == expr.template_references(text)
