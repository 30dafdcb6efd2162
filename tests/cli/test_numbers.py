"""Numbers orch reads and writes (issue 9, item 9; reliability X10): every number in a
workflow, an input or an agent output is one JSON can carry, or a located problem; every
JSON text orch writes is strict JSON (no NaN, no Infinity); nothing prints a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()
HUGE = "9" * 5000


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))


def orch(*args: str):
    return runner.invoke(app, list(args))


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def strict(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""

    def refuse(name: str):
        raise AssertionError(f"{name} in orch's JSON output")

    return json.loads(text, parse_constant=refuse)


ONE_PHASE = (
    "version: 1\nname: n\n{top}phases:\n  - id: a\n    agent: echo\n"
    "{extra}    with: {{text: {text}}}\n"
)


@pytest.mark.parametrize(
    ("top", "extra", "text", "line", "expected"),
    [
        ("", "", ".nan", 6, "is NaN"),
        ("", "", "-.inf", 6, "is -Infinity"),
        ("", "", "1e400", 6, "is Infinity"),
        ("", "", HUGE, 6, "integer of more than 4,300 digits"),
        ("", "", "0x" + "f" * 20000, 6, "integer of more than 4,300 digits"),
        (f"max_parallel: {HUGE}\n", "", "1", 3, "integer of more than 4,300 digits"),
        ("", "    estimated_duration: .inf\n", "1", 6, "is Infinity"),
        ("inputs:\n  x: {type: number, default: .nan}\n", "", "1", 4, "is NaN"),
        ("", "", "!!float " + HUGE, 6, "is Infinity"),
        ("agents:\n  x: {type: echo, rate_limit: '" + HUGE + "/s'}\n", "", "1", 4, "rate limit"),
        ("", "    timeout: " + "9" * 4000 + "\n", "1", 6, "too long: more than 30 days"),
        ("", "    estimated_duration: " + "9" * 400 + "\n", "1", 6, "at most 2592000"),
    ],
)
def test_a_number_json_cannot_carry_is_a_located_problem(
    tmp_path, top, extra, text, line, expected
):
    wf = write(tmp_path, ONE_PHASE.format(top=top, extra=extra, text=text))
    result = orch("validate", str(wf))
    assert result.exit_code == 2, result.output
    assert f"wf.yaml:{line}:" in result.output
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_json_workflow_with_nan_or_a_huge_integer_is_refused(tmp_path):
    # a surrogate-pair escape: YAML refuses it, so the file is read as JSON
    emoji = '"e": "\\ud83d\\ude00", '
    for value in ("NaN", "-Infinity", "1e999", HUGE):
        wf = write(tmp_path, "{" + emoji + '"x": ' + value + "}", "wf.json")
        result = orch("validate", str(wf))
        assert result.exit_code == 2, result.output
        assert "invalid JSON" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("timeout: " + "9" * 400 + "h", "too long: more than 30 days"),
        ("retries: {attempts: 1, delay: 1e308}", "too long: more than 30 days"),
        ("retries: {attempts: 1, delay: 1s, max_delay: 800h}", "too long: more than 30 days"),
        ("estimated_duration: 1e300", "at most 2592000"),
        ("cache: {ttl: 99999999h}", "too long: more than 3650 days"),
    ],
)
def test_durations_are_finite_and_bounded(tmp_path, setting, expected):
    wf = write(tmp_path, ONE_PHASE.format(top="", extra=f"    {setting}\n", text="1"))
    result = orch("validate", str(wf))
    assert result.exit_code == 2, result.output
    assert "wf.yaml:6:" in result.output
    assert expected in result.output


def test_long_but_reasonable_durations_still_pass(tmp_path):
    extra = "    timeout: 720h\n    retries: {attempts: 1, delay: 1h, max_delay: 2h}\n"
    extra += "    cache: {ttl: 8760h}\n    estimated_duration: 86400\n"
    wf = write(tmp_path, ONE_PHASE.format(top="", extra=extra, text=str(10**4000)))
    result = orch("validate", str(wf))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("decl", "given", "expected"),
    [
        ("{type: number}", "n=NaN", "holds NaN"),
        ("{type: number}", "n=1e400", "holds Infinity"),
        ("{type: number}", "n=-Infinity", "holds -Infinity"),
        ("{type: integer}", "n=" + HUGE, "integer of more than 4,300 digits"),
        ("{type: array}", "n=[1, NaN]", "holds NaN (JSON has no NaN or Infinity) at $[1]"),
        ("{type: array}", "n=[" + HUGE + "]", "must be an array"),
        ("{type: object}", "n=" + "[" * 5000, "must be an object"),
    ],
)
def test_inputs_hold_only_json_numbers(tmp_path, decl, given, expected):
    wf = write(
        tmp_path,
        f"version: 1\nname: n\ninputs:\n  n: {decl}\nphases:\n  - id: a\n    agent: noop\n",
    )
    result = orch("run", str(wf), "--input", given)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / ".orch").exists() or "phase a" not in result.output


def test_an_agent_output_with_nan_or_a_huge_integer_fails_its_phase_and_is_stored(tmp_path):
    (tmp_path / "nums.py").write_text(
        "def nan():\n    return {'avg': float('nan')}\n"
        "def huge():\n    return [1, 10 ** 5000]\n"
        "def inf():\n    return float('inf')\n",
        encoding="utf-8",
    )
    wf = write(
        tmp_path,
        "version: 1\nname: n\nerror_handling: {continue_on_error: true}\nphases:\n"
        "  - {id: a, agent: python, with: {function: 'nums:nan'}}\n"
        "  - {id: b, agent: python, with: {function: 'nums:huge'}}\n"
        "  - {id: c, agent: python, with: {function: 'nums:inf'}}\n"
        "  - {id: d, agent: echo, with: {text: '{{ [1e308 * 10] | tojson }}'}}\n"
        "  - {id: e, agent: echo, with: {text: ok}}\n",
    )
    result = orch("run", str(wf), "--events", "jsonl")
    assert result.exit_code == 1, result.output
    events = [strict(line) for line in result.output.splitlines() if line.startswith("{")]
    failed = {e["phase"]: e["data"]["error"] for e in events if e["event"] == "phase_failed"}
    assert "holds NaN" in failed["a"] and "at $.avg" in failed["a"]
    assert "more than 4,300 digits" in failed["b"] and "at $[1]" in failed["b"]
    assert "holds Infinity" in failed["c"]
    assert "tojson holds Infinity" in failed["d"]
    assert {e["phase"] for e in events if e["event"] == "phase_completed"} == {"e"}
    run_id = events[0]["run_id"]
    status = orch("status", run_id, "--json")
    assert status.exit_code == 0, status.output
    info = strict(status.output)
    assert info["status"] == "failed"
    logs = orch("logs", run_id, "--json")
    assert logs.exit_code == 0
    assert [strict(line)["event"] for line in logs.output.splitlines()][-1] == "workflow_failed"


@pytest.mark.parametrize(
    "condition",
    [
        "(" * 100 + "true" + ")" * 100,
        "not " * 400 + "false",
        " + ".join(["1"] * 3000) + " > 0",
    ],
)
def test_deeply_nested_expressions_are_a_located_problem_not_a_traceback(tmp_path, condition):
    wf = write(
        tmp_path,
        f'version: 1\nname: n\nphases:\n  - id: a\n    agent: noop\n    when: "{condition}"\n',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(wf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "wf.yaml:6:" in proc.stdout + proc.stderr
    assert "nested too deeply" in proc.stdout + proc.stderr
