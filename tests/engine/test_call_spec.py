"""The CallSpec an executor receives names each value by its field (``make_spec`` builds it
by position, for speed: a field added or moved in CallSpec must not swap two strings)."""

from __future__ import annotations

import os
from typing import Any

from orchestrator.engine import RunOptions, run_sync
from orchestrator.engine.executor import CallChannel, CallSpec
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow


class Recording:
    """The local executor's call, keeping each CallSpec."""

    def __init__(self) -> None:
        self.specs: list[CallSpec] = []

    async def call(self, spec: CallSpec, channel: CallChannel) -> Any:
        self.specs.append(spec)
        return await channel.agent.run(spec.input, spec.context(channel))


def test_each_field_of_the_call_spec_holds_its_own_value(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: w\nagents:\n  writer: {type: echo, with: {text: base}}\n"
        "phases:\n  - id: first\n    agent: writer\n    with: {text: hello}\n"
        "    resources: {gpu: 1}\n",
        encoding="utf-8",
    )
    executor = Recording()
    result = run_sync(compile_plan(load_workflow(path)), options=RunOptions(executor=executor))
    assert result.status == "completed", result.error
    (spec,) = executor.specs
    assert spec.run_id == result.run_id
    assert spec.phase_id == "first"
    assert spec.attempt == 1
    assert spec.agent_name == "writer"
    assert spec.agent_type == "echo"
    assert spec.input == {"text": "hello"}
    assert spec.idempotency_key == f"{result.run_id}/first/1"
    assert spec.time_left is None
    assert os.path.samefile(spec.workdir, tmp_path)
    assert spec.item is None
    assert spec.turn == 1
    assert spec.resources == {"gpu": 1}
    assert spec.depth == 0
    assert spec.traceparent is None
