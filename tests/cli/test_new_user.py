"""Tried as a new user would (issue 9, items 16-18): each test writes the workflow a
newcomer writes, runs the real `orch` command (or the Python API next to it) and
asserts what they see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orchestrator
from orchestrator.cli import app

runner = CliRunner()


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


# -- 17. an optional input without a default is null, in the CLI and in the API -------------

OPTIONAL = """\
version: 1
name: optional
inputs:
  region: {type: string}
  size: {type: integer, default: 3}
phases:
  - id: a
    agent: echo
    with:
      text: {region: "{{ inputs.region }}", size: "{{ inputs.size }}"}
outputs:
  got: "{{ phases.a.output }}"
"""


def test_an_optional_input_without_default_is_null_in_the_cli_and_the_api(tmp_path):
    wf = write(tmp_path, OPTIONAL)
    result = orch("run", str(wf))
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output[result.output.index("{") :])
    api = orchestrator.run_sync(
        orchestrator.compile_plan(orchestrator.load_workflow(str(wf)))
    ).outputs
    assert cli == api == {"got": {"region": None, "size": 3}}


def test_a_null_for_an_optional_input_counts_as_not_given(tmp_path):
    wf = write(tmp_path, OPTIONAL)
    plan = orchestrator.compile_plan(orchestrator.load_workflow(str(wf)))
    got = orchestrator.run_sync(plan, inputs={"region": None, "size": None}).outputs
    assert got == {"got": {"region": None, "size": 3}}
    (tmp_path / "in.json").write_text('{"region": null}', encoding="utf-8")
    result = orch("run", str(wf), "--inputs-file", "in.json")
    assert result.exit_code == 0, result.output


def test_a_required_input_given_as_null_is_still_missing(tmp_path):
    wf = write(tmp_path, OPTIONAL.replace("{type: string}", "{type: string, required: true}"))
    (tmp_path / "in.json").write_text('{"region": null}', encoding="utf-8")
    result = orch("run", str(wf), "--inputs-file", "in.json")
    assert result.exit_code == 2
    assert "missing required input 'region'" in result.output
