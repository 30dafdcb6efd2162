"""YAML 1.2 rules the parser gets wrong (item 11): U+0085, U+2028 and U+2029 are not line
breaks, and only a plain ``<<`` is a merge key. Through `orch validate` and the loader."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import WorkflowError
from orchestrator.spec.source import parse_source, read_source

runner = CliRunner()
BREAKS = ["\x85", "\u2028", "\u2029"]


def problems(tmp_path, text: str) -> list[str]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(text, encoding="utf-8")
    res = runner.invoke(app, ["validate", str(wf)])
    assert "Traceback" not in res.output
    return [line for line in res.output.splitlines() if line.startswith(str(wf))]


@pytest.mark.parametrize("char", BREAKS, ids=["NEL", "LS", "PS"])
@pytest.mark.parametrize(
    "where",
    ['name: "a{c}b"', "name: 'a{c}b'", "name: a{c}b", "name: w  # a{c}b", "name: |\n  a{c}b"],
    ids=["double", "single", "plain", "comment", "block"],
)
def test_a_unicode_line_break_does_not_shift_later_lines(tmp_path, char, where):
    head = where.format(c=char)
    lines = head.count("\n") + 1
    text = head + "\nphases:\n  - id: a\n    agent: echo\n    depends_on: [nope]\n"
    (found,) = problems(tmp_path, text)
    assert f":{lines + 4}:" in found and "unknown phase 'nope'" in found, found


@pytest.mark.parametrize("char", BREAKS, ids=["NEL", "LS", "PS"])
def test_the_character_is_kept_in_the_value(tmp_path, char):
    path = tmp_path / "v.yaml"
    path.write_text(f'a: "x{char}y"\nb: x{char}y\n{char}k: v\n', encoding="utf-8")
    assert read_source(path).data == {"a": f"x{char}y", "b": f"x{char}y", f"{char}k": "v"}


def test_a_quoted_merge_key_is_a_plain_key(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text('base: &b {x: 1}\nm1: {"<<": *b, y: 2}\nm2: {<<: *b, y: 2}\n', "utf-8")
    data = read_source(path).data
    assert data["m1"] == {"<<": {"x": 1}, "y": 2}
    assert data["m2"] == {"x": 1, "y": 2}
    path.write_text("a: {'<<': 1, '<<': 2}\n", "utf-8")  # a plain key: duplicates are refused
    with pytest.raises(Exception, match="duplicate key '<<'"):
        read_source(path)


# -- Hypothesis: unicode line breaks anywhere ------------------------------------------------


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(
    text=st.text(alphabet=st.sampled_from(list("ab:-[]{}'\"#| \n\x85\u2028\u2029")), max_size=60)
)
def test_yaml_with_unicode_breaks_never_escapes(text):
    try:
        parse_source(text.encode("utf-8"), "w.yaml")
    except WorkflowError as exc:
        assert exc.location.line >= 1 and exc.location.col >= 1
        assert exc.location.line <= text.count("\n") + 2  # never past the file's real lines


@FUZZ
@given(
    noise=st.text(alphabet=st.sampled_from(["x", " ", *BREAKS]), min_size=1, max_size=6),
    where=st.sampled_from(["double", "single", "plain", "comment"]),
)
def test_a_later_problem_keeps_its_line_whatever_breaks_come_before(tmp_path_factory, noise, where):
    head = {
        "double": f'name: "w{noise}"',
        "single": f"name: 'w{noise}'",
        "plain": f"name: w{noise.strip() or 'x'}w",
        "comment": f"name: w # {noise}",
    }[where]
    text = head + "\nphases:\n  - id: a\n    agent: echo\n    depends_on: [nope]\n"
    path = tmp_path_factory.getbasetemp() / "breaks.yaml"
    path.write_text(text, encoding="utf-8")
    res = runner.invoke(app, ["validate", str(path)])
    assert f"{path}:5:" in res.output, res.output
