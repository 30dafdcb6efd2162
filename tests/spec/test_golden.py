"""The golden corpus: each broken file in tests/fixtures/invalid gives exactly its problems.

Each NAME.yaml has NAME.expected with one ``LINE:COL: message`` per line (the file
name left out). Lines and messages must match exactly, columns within 1, and
every problem comes out of one pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.agents.registry import AgentRegistry
from orchestrator.cli import app
from orchestrator.spec import validate

CORPUS = Path(__file__).parents[1] / "fixtures" / "invalid"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
LINE = re.compile(r"^(\d+):(\d+): (.*)$")


@pytest.fixture(scope="module")
def registry() -> AgentRegistry:
    return AgentRegistry.from_entry_points()


def _expected(name: str) -> list[tuple[int, int, str]]:
    out = []
    for raw in (CORPUS / f"{name}.expected").read_text(encoding="utf-8").splitlines():
        m = LINE.match(raw)
        assert m, f"bad line in {name}.expected: {raw!r}"
        out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 50
    for name in CASES:
        assert (CORPUS / f"{name}.expected").is_file(), name


@pytest.mark.parametrize("name", CASES)
def test_golden(name, registry):
    problems = validate(CORPUS / f"{name}.yaml", registry=registry)
    errors = [p for p in problems if p.severity == "error"]
    expected = _expected(name)
    assert errors, "a broken file must give at least one problem"
    got = [(p.location.line, p.location.col, p.message) for p in errors]
    assert [(line, msg) for line, _, msg in got] == [(line, msg) for line, _, msg in expected]
    for (_, col, _), (_, want, _) in zip(got, expected, strict=True):
        assert abs(col - want) <= 1
    for p in errors:
        assert p.location.path.endswith(f"{name}.yaml")
        assert p.message[:1] == p.message[:1].lower() or p.message[:1] in "'\"("
        assert not p.message.endswith(".")


SAMPLE = [
    "several_problems",
    "python_tag",
    "alias_bomb",
    "binary_nul",
    "cycle_three",
    "sleep_without_seconds",
]


@pytest.mark.parametrize("name", SAMPLE)
def test_the_real_command_prints_them_and_exits_2(name):
    path = CORPUS / f"{name}.yaml"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if not ln.startswith("  hint: ")]
    want = [f"{path}:{line}:{col}: {msg}" for line, col, msg in _expected(name)]
    assert lines == want
