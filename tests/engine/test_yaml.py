"""End to end from YAML files: load_workflow -> compile_plan -> execute, and sub-runs."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from orchestrator.agents import Agent, AgentResult
from orchestrator.engine import execute
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow

from .conftest import Recorder


class SubRunAgent(Agent):
    """Runs the workflow file ``path`` through ctx.run_workflow and returns its outputs."""

    name = "subrun"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx):
        return AgentResult(output=await ctx.run_workflow(input["path"], input.get("inputs", {})))


def _run(path, registry, **kw):
    rec = Recorder()
    plan = compile_plan(load_workflow(path, registry=registry))
    return asyncio.run(execute(plan, registry=registry, sinks=[rec], **kw)), rec


def test_a_yaml_workflow_runs_with_typed_inputs_retries_and_outputs(tmp_path, registry):
    path = tmp_path / "wf.yaml"
    path.write_text(
        """
name: e2e
inputs:
  regions: {type: array, default: [eu, us]}
mode: sequential
phases:
  - id: flaky
    agent: fail
    with: {times: 1, output: ready}
    retries: {attempts: 2, backoff: fixed, delay: 1ms}
  - id: each
    agent: echo
    foreach: "{{ inputs.regions }}"
    with: {text: "{{ previous.output }}-{{ item }}-{{ index }}"}
outputs:
  joined: "{{ phases.each.output | join(',') }}"
"""
    )
    result, rec = _run(path, registry)
    assert result.status == "completed", result.error
    assert result.outputs == {"joined": "ready-eu-0,ready-us-1"}
    assert len(rec.of("phase_retry", "flaky")) == 1
    assert rec.events[0].data["path"] == str(path)


def test_a_sub_run_returns_the_outputs_of_another_workflow_file(tmp_path, registry):
    registry.register(SubRunAgent)
    (tmp_path / "child.yaml").write_text(
        """
name: child
inputs:
  who: {type: string, required: true}
phases:
  - id: greet
    agent: echo
    with: {text: "hello {{ inputs.who }}"}
outputs:
  greeting: "{{ phases.greet.output }}"
"""
    )
    (tmp_path / "parent.yaml").write_text(
        """
name: parent
phases:
  - id: call
    agent: subrun
    with: {path: child.yaml, inputs: {who: world}}
"""
    )
    result, _ = _run(tmp_path / "parent.yaml", registry)
    assert result.phases["call"].output == {"greeting": "hello world"}


def test_a_sub_run_that_recurses_is_stopped_by_the_depth_limit(tmp_path, registry):
    registry.register(SubRunAgent)
    (tmp_path / "loop.yaml").write_text(
        """
name: loop
phases:
  - id: again
    agent: subrun
    with: {path: loop.yaml}
"""
    )
    result, _ = _run(tmp_path / "loop.yaml", registry)
    assert result.status == "failed"
    assert "nests deeper than 8 runs" in result.phases["again"].error


def test_orch_run_names_a_timed_out_phase_once(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    path = tmp_path / "wf.yaml"
    path.write_text(
        """
name: slow
phases:
  - id: slow
    agent: sleep
    with: {seconds: 30}
    timeout: 50ms
"""
    )
    result = CliRunner().invoke(app, ["run", str(path), "--state-dir", str(tmp_path / "st")])
    assert result.exit_code == 1
    assert "phase slow failed: timed out after 50ms" in result.output
    assert "error: phase 'slow' failed: timed out after 50ms" in result.output
    assert "phase 'slow' timed out" not in result.output
